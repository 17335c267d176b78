"""Numbers as people and models write them, read exactly (a Fraction): signs (also the Unicode minus), `$`,
thousands separators (`1,234`, `2 500` with a plain, thin or no-break space, `1\\,000`, `1{,}000`), decimals,
fractions (`9/5`, `\\frac{3}{14}`), mixed numbers (`2 1/2`), scientific notation (`1.5e3`, `1.5 \\times 10^{3}`).
Full-width digits and signs are read after NFKC normalisation (`normalize`), by the caller.

Every pattern is linear in the text (no nested or overlapping repetition that can backtrack).
"""
from __future__ import annotations

import re
import unicodedata
from fractions import Fraction

_MINUS = "-\u2212"  # ASCII hyphen-minus and the Unicode minus sign
MINUS = _MINUS
_GROUP_SEPARATOR = r"(?:,|[ \u00a0\u2009\u202f]|\\[,;: ]|\{,\}|,\\!)"
_UNSIGNED = (
    rf"(?:\d{{1,3}}(?:{_GROUP_SEPARATOR}\d{{3}})+(?!\d)(?:\.\d+)?"  # 1,234.5  2 500  1\,000
    r"|\d+(?:\.\d+)?"
    r"|\.\d+)"
)
_SIMPLE = rf"(?:[{_MINUS}]\s*)?{_UNSIGNED}"  # whitespace only after a sign: two adjacent \s* would backtrack
_NUMBER = (
    # a sign that is not a binary minus (not after a digit, letter or closing bracket), then an optional currency
    rf"(?P<sign>(?<![\w)\]}}])[{_MINUS}])?(?:\\?\$\s?)?"
    r"(?:"
    # a mixed number, 2 1/2 (whole part, a space, a plain fraction)
    r"(?P<whole>\d+)[ \t]+(?:and[ \t]+)?(?P<mixed_numerator>\d+)/(?P<mixed_denominator>\d+)(?![\d/])"
    r"|"
    rf"\\[dt]?frac\s*\{{\s*(?P<numerator>{_SIMPLE})\s*\}}\s*\{{\s*(?P<denominator>{_SIMPLE})\s*\}}"
    rf"|(?P<mantissa>{_UNSIGNED})"
    r"(?:/(?P<over>\d+(?:\.\d+)?)"
    rf"|[eE](?P<exponent>[+{_MINUS}]?\d+)"
    rf"|\s*(?:\\times|\\cdot|×|·)\s*10\s*\^\s*(?:\{{\s*(?P<power>[+{_MINUS}]?\d+)\s*\}}|(?P<bare_power>[+{_MINUS}]?\d+))"
    r")?)"
)
# The lookahead names every character a number can start with: the search then skips other text ~8x faster.
NUMBER_RE = re.compile(rf"(?=[{_MINUS}\\$.\d]){_NUMBER}")
_SEPARATORS_RE = re.compile(rf"{_GROUP_SEPARATOR}|\s|\$|\\")
# Between two numbers, only a list separator: the answer names several candidates.
_HEDGE_RE = re.compile(r"(?:\s*(?:,|;|\bor\b|\band\b|\\text\{\s*(?:or|and)\s*\}|\\q?quad|\\?\$))+\s*", re.IGNORECASE)
_SENTENCE_END_RE = re.compile(r"[.!?](?=\s|$)")
_PARENTHESES_RE = re.compile(r"\([^()\n]*\)")
_MAX_DIGITS = 1000  # longer numbers are read as "a number", equal to no reference (int() refuses > 4,300 digits)


class _Unreadable:
    """A number too long or too large to evaluate: it is the answer, and it equals nothing."""


UNREADABLE = _Unreadable()

def _digits(text: str) -> str:
    return _SEPARATORS_RE.sub("", text).replace("\u2212", "-")


def _fraction(text: str) -> Fraction | _Unreadable:
    digits = _digits(text)
    if len(digits) > _MAX_DIGITS:
        return UNREADABLE
    return Fraction(digits)


def value(match: re.Match) -> Fraction | _Unreadable:
    """The exact value of a NUMBER_RE match."""
    if match.group("whole") is not None:
        denominator = int(match.group("mixed_denominator"))
        if denominator == 0 or len(match.group(0)) > _MAX_DIGITS:
            return UNREADABLE
        value = int(match.group("whole")) + Fraction(int(match.group("mixed_numerator")), denominator)
    elif match.group("numerator") is not None:
        numerator, denominator = _fraction(match.group("numerator")), _fraction(match.group("denominator"))
        if UNREADABLE in (numerator, denominator) or denominator == 0:
            return UNREADABLE
        value = numerator / denominator
    else:
        value = _fraction(match.group("mantissa"))
        if value is UNREADABLE:
            return value
        over = match.group("over")
        exponent = match.group("exponent") or match.group("power") or match.group("bare_power")
        if over is not None:
            denominator = _fraction(over)
            if denominator is UNREADABLE or denominator == 0:
                return UNREADABLE
            value = value / denominator
        elif exponent is not None:
            power = int(exponent.replace("\u2212", "-"))
            if abs(power) > _MAX_DIGITS:
                return UNREADABLE
            value = value * Fraction(10) ** power
    return -value if match.group("sign") else value


def parse_number(text: str) -> Fraction | None:
    """A reference such as `18`, `-3`, `1,234` or `2.5` (the whole text is one number), or None."""
    match = NUMBER_RE.fullmatch(normalize(text).strip())
    if match is None:
        return None
    read = value(match)
    return None if read is UNREADABLE else read




# Before NFKC, which would make `km²` read `km2` and `3½` read `31⁄2`: a superscript is an exponent (`^2`), a vulgar
# fraction is a fraction, and after a digit the fraction part of a mixed number (`3½` -> `3 1/2`).
_SUPERSCRIPTS = re.compile("[\u00b2\u00b3\u00b9\u2070\u2074-\u2079]+")
# Each vulgar fraction as " n/d": after a digit the fraction part of a mixed number, alone a fraction (one C pass).
_VULGAR_FRACTIONS = str.maketrans({chr(c): " " + unicodedata.normalize("NFKC", chr(c)).replace("\u2044", "/")
                                   for c in [*range(0xBC, 0xBF), *range(0x2150, 0x215F)]})


def normalize(text: str) -> str:
    """Full-width and other compatibility forms as their plain characters (`－７` -> `-7`), by NFKC; superscripts
    as exponents (`m²` -> `m^2`) and vulgar fractions as fractions (`3½` -> `3 1/2`, `¾` -> `3/4`) first. Only where
    it changes something: NFKC also rewrites some LaTeX-irrelevant symbols, never digits' values."""
    if text.isascii():
        return text
    text = _SUPERSCRIPTS.sub(lambda m: "^" + unicodedata.normalize("NFKC", m.group()), text)
    text = text.translate(_VULGAR_FRACTIONS)
    return unicodedata.normalize("NFKC", text).replace("\u2044", "/")


# -- number words ----------------------------------------------------------------------------------------------------
_WORD_VALUES = {word: n for n, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_WORD_VALUES.update({word: 10 * n for n, word in enumerate("twenty thirty forty fifty sixty seventy eighty ninety"
                                                               .split(), start=2)})
_WORD_SCALES = {"hundred": 100, "dozen": 12, "thousand": 10 ** 3, "million": 10 ** 6, "billion": 10 ** 9}
_WORD = "(?:" + "|".join(sorted([*_WORD_VALUES, *_WORD_SCALES], key=len, reverse=True)) + ")"
# One word after another, joined by spaces, hyphens or "and" ("two hundred and forty-five", "a dozen"): each
# repetition consumes a whole word, so a run of words is read in one linear pass.
WORD_NUMBER_RE = re.compile(rf"\b(?:an?[ \t]+(?=(?:hundred|thousand|million|dozen)\b))?{_WORD}"
                            rf"(?:(?:[ \t]+and[ \t]+|[ \t-]+){_WORD}\b)*\b", re.IGNORECASE)


def word_number_value(text: str) -> Fraction | None:
    """The value of a run of number words ("twenty-five", "a dozen", "three hundred and twelve"), or None when the
    words are not one number ("five six" lists two)."""
    total, current, last_kind = 0, 0, None
    for word in re.split(r"[\s-]+", text.lower()):
        if word in ("and", ""):
            continue
        if word in ("a", "an"):
            current, last_kind = 1, "a"
            continue
        if word in _WORD_VALUES:
            n = _WORD_VALUES[word]
            kind = "tens" if n >= 20 else "unit"
            if last_kind == "unit" or (last_kind == "tens" and kind == "tens") or last_kind == "a":
                return None
            current, last_kind = current + n, kind
        else:
            scale = _WORD_SCALES[word]
            if scale < 1000:
                current, last_kind = (current or 1) * scale, "scale"
            else:
                total, current, last_kind = total + (current or 1) * scale, 0, "scale"
    return Fraction(total + current)
