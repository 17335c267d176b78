"""GSM8K grader: find the final number however the model states it, compare it exactly with the reference.

The answer is read from the strongest answer cue present (`####`, `\\boxed{}`, `The answer is`, `**Answer:**`, `A:`),
as the result that cue states: the right-hand side of its last `=`, else its last number ("The answer is 12 + 30 =
42 cookies" is 42). Without a cue, the completion's last number. A number is read whole: signs (also the Unicode
minus), `$`, thousands separators (`1,234`, `2 500` with a plain, thin or no-break space, `1\\,000`, `1{,}000`),
decimals, fractions (`9/5`, `\\frac{3}{14}`) and scientific notation (`1.5e3`, `1.5 \\times 10^{3}`); it is compared
exactly. An answer that lists several numbers (`\\boxed{3, 5}`, "3 or 5") is a hedge, not an answer: it scores 0.

Every pattern here is linear in the completion (no nested or overlapping repetition that can backtrack): a 1 MB
degenerate completion is graded in milliseconds.
"""
from __future__ import annotations

import re
from fractions import Fraction

from envs.sample import Sample

_MINUS = "-\u2212"  # ASCII hyphen-minus and the Unicode minus sign
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
    rf"\\[dt]?frac\s*\{{\s*(?P<numerator>{_SIMPLE})\s*\}}\s*\{{\s*(?P<denominator>{_SIMPLE})\s*\}}"
    rf"|(?P<mantissa>{_UNSIGNED})"
    r"(?:/(?P<over>\d+(?:\.\d+)?)"
    rf"|[eE](?P<exponent>[+{_MINUS}]?\d+)"
    rf"|\s*(?:\\times|\\cdot|×|·)\s*10\s*\^\s*(?:\{{\s*(?P<power>[+{_MINUS}]?\d+)\s*\}}|(?P<bare_power>[+{_MINUS}]?\d+))"
    r")?)"
)
# The lookahead names every character a number can start with: the search then skips other text ~8x faster.
_NUMBER_RE = re.compile(rf"(?=[{_MINUS}\\$.\d]){_NUMBER}")
_SEPARATORS_RE = re.compile(rf"{_GROUP_SEPARATOR}|\s|\$|\\")
# Between two numbers, only a list separator: the answer names several candidates.
_HEDGE_RE = re.compile(r"(?:\s*(?:,|;|\bor\b|\band\b|\\text\{\s*(?:or|and)\s*\}|\\q?quad|\\?\$))+\s*", re.IGNORECASE)
_SENTENCE_END_RE = re.compile(r"[.!?](?=\s|$)")
_PARENTHESES_RE = re.compile(r"\([^()\n]*\)")
_MAX_DIGITS = 1000  # longer numbers are read as "a number", equal to no reference (int() refuses > 4,300 digits)


class _Unreadable:
    """A number too long or too large to evaluate: it is the answer, and it equals nothing."""


UNREADABLE = _Unreadable()

# Where a final answer is announced, strongest cue first; the last match of the first cue present wins.
# `\boxed{...}` is found by brace matching (`_boxed_contents`), not by a pattern.
_HASHES = re.compile(r"####\s*([^\n]*)")
_ANSWER_IS = re.compile(r"(?:final answer|the answer)[ \t]*(?:is\b|:|=)\s*(?:\*\*)?[ \t]*([^\n]*)", re.IGNORECASE)
_BOLD_ANSWER = re.compile(r"\*\*answer:?\*\*:?\s*([^\n]*)", re.IGNORECASE)
# Line-anchored, with horizontal space only before the colon: a `\s*` there scanned every run of newlines once
# per newline (quadratic: 64k newlines took 35 s).
_A_COLON = re.compile(r"^[ \t]*(?:A|Answer)[ \t]*:\s*([^\n]*)", re.IGNORECASE | re.MULTILINE)
_BOX_TOKEN = re.compile(r"\\boxed\s*\{|\\fbox\s*\{|[{}]")


def _boxed_contents(completion: str) -> list[str]:
    """The contents of the complete `\\boxed{...}` that no other complete box holds (a box inside a box is part of
    its content), in order, by one pass of brace matching. They do not overlap: together they are at most the text,
    so reading them all is linear too."""
    if "\\boxed" not in completion and "\\fbox" not in completion:
        return []
    stack: list[tuple[int, int] | None] = []  # per open brace: (box start, content start), or None for a plain brace
    closed: list[tuple[int, int, int]] = []  # (box start, content start, content end), in order of their end
    for token in _BOX_TOKEN.finditer(completion):
        text = token.group()
        if text == "}":
            if stack:
                box = stack.pop()
                if box is not None:
                    closed.append((*box, token.start()))
        else:
            stack.append(None if text == "{" else (token.start(), token.end()))
    outermost, frontier = [], len(completion) + 1
    for box_start, start, end in reversed(closed):  # by end, last first: a box is either inside the one before or
        if end < frontier:                           # wholly before it
            outermost.append(completion[start:end])
            frontier = box_start
    return outermost[::-1]


def _spans(completion: str) -> list[tuple[list[str], bool]]:
    """Per cue, strongest first: its spans, and whether a span is a sentence (a box's content is not: `\boxed{1.5}`
    holds no full stop)."""
    return [
        (_HASHES.findall(completion), True),
        (_boxed_contents(completion), False),
        (_ANSWER_IS.findall(completion), True),
        (_BOLD_ANSWER.findall(completion), True),
        (_A_COLON.findall(completion), True),
    ]


def _digits(text: str) -> str:
    return _SEPARATORS_RE.sub("", text).replace("\u2212", "-")


def _fraction(text: str) -> Fraction | _Unreadable:
    digits = _digits(text)
    if len(digits) > _MAX_DIGITS:
        return UNREADABLE
    return Fraction(digits)


def _value(match: re.Match) -> Fraction | _Unreadable:
    if match.group("numerator") is not None:
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
    match = _NUMBER_RE.fullmatch(text.strip())
    if match is None:
        return None
    value = _value(match)
    return None if value is UNREADABLE else value


def _stated_result(span: str, cut_sentence: bool) -> Fraction | _Unreadable | None:
    """The number an answer span states: after its last `=`, its last number; None when it has none; UNREADABLE
    when it lists several (a hedge)."""
    if cut_sentence:
        end = _SENTENCE_END_RE.search(span)
        if end:
            span = span[:end.start()]
    span = span.rpartition("=")[2]
    numbers = list(_NUMBER_RE.finditer(span))
    if not numbers:
        return None
    for previous, following in zip(numbers, numbers[1:]):
        if _HEDGE_RE.fullmatch(span, previous.end(), following.start()):
            return UNREADABLE
    # An aside in parentheses ("42 (6 boxes of 7)") is not the result, unless the result is only there.
    outside = list(_NUMBER_RE.finditer(_PARENTHESES_RE.sub(" ", span)))
    return _value((outside or numbers)[-1])


def _final_value(completion: str) -> Fraction | _Unreadable | None:
    for spans, sentence in _spans(completion):
        for span in reversed(spans):
            value = _stated_result(span, cut_sentence=sentence)
            if value is not None:
                return value
    last = None
    for last in _NUMBER_RE.finditer(completion):
        pass
    return _value(last) if last else None


def extract_final_number(completion: str) -> Fraction | None:
    """The number the completion gives as its answer: the result after an answer cue if there is one, else its last
    number. None when there is none, or when the answer is a hedge or cannot be evaluated."""
    value = _final_value(completion)
    return None if value is UNREADABLE else value


def has_answer_cue(completion: str) -> bool:
    """True when the completion announces its answer (`####`, `\\boxed{}`, `The answer is`, `A:` ...)."""
    return any(spans for spans, _ in _spans(completion))


def gsm8k_reward(completion: str, sample: Sample) -> float:
    predicted = extract_final_number(completion)
    reference = parse_number(sample.answer)
    return float(predicted is not None and reference is not None and predicted == reference)
