"""MATH grader: the model's final answer is symbolically equivalent to the reference (math-verify).

math-verify's own timeout uses SIGALRM, which raises outside a main thread (inside Ray actors and thread pools
it would fail on every answer). Here its timeout is off, and the comparison runs in a worker child process
that is killed when it overruns: a pathological answer scores 0 after at most `MATH_TIMEOUT_S`, from any thread.

Around math-verify, and only where it goes wrong:
- it reads a bounded window of the completion (`answer_window`): some of its extraction patterns are quadratic
  or cubic in the text, so a long degenerate completion would otherwise take seconds;
- digit groups written with LaTeX spacing (`1\\,000`, `10{,}000`, `5,\\!525`) are joined first: it reads
  `1\\,000` as the product 1*000;
- its unit stripping cuts `\\frac{1}{\\mathrm{e}}` down to `\\frac{1}{` (a `\\text{...}` inside braces is taken for
  a trailing unit), and two cut-off strings then compare equal; it also takes variables for units (`a + b + c`
  reads `a +`): a reference whose reading no longer balances its braces, or does not parse, is read without unit
  stripping, and so is the completion then (and wherever its own reading is cut through a brace);
- floats are compared to 6 significant digits, not 6 decimals (its default makes .0000672 equal .0000673);
- two exact numbers must be exactly equal (`_distinct_exact_numbers`), where a percent may be read either way;
- a reference it cannot parse is reported once per reference (logging), not left to score 0 in silence.
"""
from __future__ import annotations

import logging
import math
import re
import threading
from functools import lru_cache

from envs.sample import Sample
from envs.workers import WorkerDied, WorkerPool, WorkerTimeout

log = logging.getLogger(__name__)

MATH_TIMEOUT_S = 5.0
# The window of the completion handed to math-verify: from a little before the last \boxed (earlier boxes there make
# a listed, hedged answer a set) to well after it; without a box, the tail. Its worst case (repeated `\(\boxed{`) is
# cubic in the window, so the part that may hold several boxes is kept short.
BEFORE_BOX_CHARS = 300
AFTER_BOX_CHARS = 2000
TAIL_CHARS = 3000

# A thousands separator written with LaTeX spacing, or a Unicode space, between digit groups.
_DIGIT_GROUP_SEPARATOR = re.compile(r"(?<=\d)(?:\\[,;: ]|\{,\}|,\\!|[\u00a0\u2009\u202f])(?=\d{3}(?!\d))")

# As many children as threads grade at once (RewardScorer runs reward.workers of them): a MATH batch is graded
# that many comparisons side by side, each under its own time limit.
_pool = WorkerPool(size=1 << 16)
_reported_lock = threading.Lock()
_reported_references: set[str] = set()


# An answer stated in words, for completions without a box: the window follows the last one, wherever it is.
_ANSWER_STATEMENT = re.compile(r"(?:final answer|the answer|answer)\s*(?:is\b|:)", re.IGNORECASE)
# A statement that asks or reconsiders states nothing: "Wait, so the answer is 6?", "Hmm, maybe the answer is 5."
_RECONSIDERS = re.compile(r"\b(?:wait|hmm|hold on|maybe|perhaps|suppose)\b[^.!?\n]*$", re.IGNORECASE)
MAX_STATEMENTS = 1_000  # the last this many are looked at (a 1 MB run of "The answer is" has 75,000)
_SENTENCE_END = re.compile(r"[.!?\n]|\$\s*[.!?]")
_LOOK = 200


def _asks(completion: str, statement: re.Match) -> bool:
    """The statement's sentence is a question, or reconsiders (bounded looks around the cue)."""
    if _RECONSIDERS.search(completion, max(0, statement.start() - _LOOK // 4), statement.start()):
        return True
    end = _SENTENCE_END.search(completion, statement.end(), statement.end() + _LOOK)
    return end is not None and end.group().endswith("?")


def _statement_window(completion: str, statement: re.Match) -> str:
    """From the statement to the end of its paragraph: the blank line after the answer, not one right after the cue
    ("The final answer is:\n\n$42$")."""
    after = completion[statement.end():statement.end() + AFTER_BOX_CHARS]
    content = statement.end() + len(after) - len(after.lstrip(" \t\r\n:*"))
    end = completion.find("\n\n", content, statement.end() + AFTER_BOX_CHARS)
    return completion[statement.start(): end if end >= 0 else statement.end() + AFTER_BOX_CHARS]


def answer_window(completion: str) -> str:
    """The part of the completion that states its final answer, at most ~3,000 characters (linear to find): around
    the last box; else from the last answer statement ("The final answer is ...") to the end of its paragraph,
    however much text follows it, unless a later statement asks or reconsiders ("Wait, so the answer is 6?"): then,
    as without a statement, the tail. Statements that ask or reconsider are never the window."""
    box = max(completion.rfind("\\boxed"), completion.rfind("\\fbox"))
    if box >= 0:
        return completion[max(0, box - BEFORE_BOX_CHARS): box + AFTER_BOX_CHARS]
    if len(completion) <= TAIL_CHARS:
        return completion
    chosen, reconsidered = None, False
    for statement in list(_ANSWER_STATEMENT.finditer(completion))[-MAX_STATEMENTS:]:
        if _asks(completion, statement):
            reconsidered = chosen is not None
        else:
            chosen, reconsidered = statement, False
    if chosen is not None and not reconsidered:
        return _statement_window(completion, chosen)
    tail = completion[-TAIL_CHARS:]
    # Start on a line boundary where one is near, so a cut does not pair the wrong `$` signs.
    newline = tail.find("\n", 0, TAIL_CHARS // 2)
    return tail[newline + 1:] if newline >= 0 else tail


def join_digit_groups(text: str) -> str:
    """`1\\,000` -> `1000`, `90{,}900` -> `90900`, `5,\\!525` -> `5525`, `1 000` -> `1000` (math-verify reads
    `1\\,000` as 1*000 and `1 000` as 1*0)."""
    return _SPACE_GROUPED.sub(lambda m: m.group().replace(" ", ""), _DIGIT_GROUP_SEPARATOR.sub("", text))


# A plain space between digit groups: `1 000 000` (a first group of 1-3 digits, then groups of exactly 3).
_SPACE_GROUPED = re.compile(r"(?<![\d.])\d{1,3}(?: \d{3})+(?![\d.])")
# Euler's e written upright (`\mathrm{e}`, `\text{e}`): math-verify reads it as a symbol named e, not E.
_UPRIGHT_E = re.compile(r"\\(?:mathrm|text|operatorname|rm)\s*\{\s*e\s*\}")
# `1.5e3` as a number (math-verify reads e as Euler's e): written as `1.5 \times 10^{3}`. Exponents past 300 are
# left alone (a 1e999999 would be a million-digit integer to compare).
_E_NOTATION = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)[eE]([+-]?\d{1,3})(?![\w.])")


def normalize_answer_text(text: str) -> str:
    """What math-verify misreads, rewritten before it reads: digit groups, an upright e, e-notation."""
    text = _UPRIGHT_E.sub(" e", text)
    text = _E_NOTATION.sub(lambda m: f"{m.group(1)} \\times 10^{{{m.group(2)}}}", text)
    return join_digit_groups(text)


def _configs(with_expressions: bool, units: bool) -> list:
    from dataclasses import replace

    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    latex = LatexExtractionConfig()
    if not units:
        latex = LatexExtractionConfig(normalization_config=replace(latex.normalization_config, units=False))
    return [latex, ExprExtractionConfig()] if with_expressions else [latex]


def _cut_short(parsed: list) -> bool:
    return any(isinstance(item, str) and item.count("{") != item.count("}") for item in parsed)


def _parse(text: str, with_expressions: bool, units: bool) -> list:
    from math_verify import parse

    return parse(normalize_answer_text(text), extraction_config=_configs(with_expressions, units),
                 parsing_timeout=None)


def _is_expression(item) -> bool:
    import sympy

    return isinstance(item, (sympy.Basic, sympy.MatrixBase))


def _parse_gold(reference: str, units: bool) -> list:
    gold = _parse(f"$\\boxed{{{reference}}}$", with_expressions=False, units=units)
    if not gold:  # a plain-text reference such as "12" or "(1, 2)"
        gold = _parse(reference, with_expressions=True, units=units)
    return gold


# A single letter standing alone (not a LaTeX command, not inside \\text{}): a variable. Units in MATH references are
# written in \\text{}/\\mbox{} or as words.
_TEXT_MARKUP = re.compile(r"\\(?:text|mbox|mathrm|textbf|operatorname)\s*\{[^{}]*\}|\\[A-Za-z]+")
_BARE_VARIABLE = re.compile(r"(?<![A-Za-z])[A-Za-z](?![A-Za-z])")


@lru_cache(maxsize=4096)
def _parse_reference(reference: str) -> tuple[tuple, bool]:
    """The reference as math-verify reads it, and whether with its unit stripping. Without, where stripping cut
    through a brace (`\\frac{1}{\\mathrm{e}}` -> `\\frac{1}{`) or took a variable for a unit (`a + b + c` -> `a +`)
    and left nothing that parses."""
    if _BARE_VARIABLE.search(_TEXT_MARKUP.sub(" ", reference)):  # `4t`: t is a variable the reference multiplies,
        return tuple(_parse_gold(reference, units=False)), False  # not a unit (tonnes) to strip
    gold = _parse_gold(reference, units=True)
    if _cut_short(gold) or not any(_is_expression(item) for item in gold):
        again = _parse_gold(reference, units=False)
        if _cut_short(gold) or any(_is_expression(item) for item in again):
            return tuple(again), False
    return tuple(gold), True


def grade(reference: str, completion: str) -> tuple[bool, str | None]:
    """Runs in the worker child: (the completion's final answer equals the reference, a note when the reference
    itself does not parse)."""
    from math_verify import verify

    # It warns that its timeout is off: that is deliberate, the worker owns the timeout.
    logging.getLogger("math_verify").setLevel(logging.ERROR)

    gold, units = _parse_reference(reference)
    gold = list(gold)
    note = None
    if not gold:
        note = "math-verify finds no answer in it: every completion scores 0"
    elif not any(_is_expression(item) for item in gold):
        note = f"math-verify cannot parse it (reads {gold[0]!r}): only an answer written the same way scores 1"
    # The completion is read the way the reference was; never left cut through a brace.
    window = answer_window(completion)
    predicted = _parse(window, with_expressions=True, units=units)
    if units and _cut_short(predicted):
        predicted = _parse(window, with_expressions=True, units=False)
    if not (gold and predicted):
        return False, note
    rounding = _float_rounding(gold[0], predicted[0])
    if not verify(gold, predicted, float_rounding=rounding, timeout_seconds=None):
        return _same_percent(reference, window, units, rounding), note
    if _SCIENTIFIC.search(reference) and not _within_precision(reference, gold[0], predicted[0]):
        return False, note
    return not _distinct_exact_numbers(gold[0], predicted[0]), note


_PERCENT = re.compile(r"\\?%")
_SCIENTIFIC = re.compile(r"\\times\s*10\s*\^|\d[eE][+-]?\d")
_MANTISSA = re.compile(r"(\d+)(?:\.(\d+))?\s*(?:\\times|[eE])")


def _same_percent(reference: str, window: str, units: bool, rounding: int) -> bool:
    """`37.5\\%` and 37.5 are one answer, as math-verify already holds `40\\%` and 40: when exactly one side writes a
    percent sign, compare again without it."""
    from math_verify import verify

    if bool(_PERCENT.search(reference)) == bool(_PERCENT.search(window)):
        return False
    gold = _parse_gold(_PERCENT.sub("", reference), units)
    predicted = _parse(_PERCENT.sub("", window), with_expressions=True, units=units)
    return bool(gold and predicted) and verify(gold, predicted, float_rounding=rounding, timeout_seconds=None) \
        and not _distinct_exact_numbers(gold[0], predicted[0])


def _within_precision(reference: str, gold, predicted) -> bool:
    """A reference in scientific notation is as precise as its mantissa: `3.1 \\times 10^{-20}` means within half a
    unit of its last digit (0.05e-20), so 3.3e-20 differs and 3.10e-20 does not. math-verify's absolute rounding
    makes every tiny number equal."""
    mantissa = _MANTISSA.search(reference)
    try:
        a, b = float(gold), float(predicted)
    except (TypeError, ValueError):
        return True  # not two numbers: math-verify's comparison stands
    if mantissa is None or a == 0:
        return True
    written = float(mantissa.group(1) + "." + (mantissa.group(2) or "0"))
    if written == 0:
        return True
    unit = 10.0 ** -len(mantissa.group(2) or "")  # of the mantissa's last digit
    return abs(a - b) <= 0.5 * unit / written * abs(a) * (1 + 1e-9)


def answers_equivalent(reference: str, completion: str) -> bool:
    """Runs in the worker child. True when the completion's final answer equals the reference."""
    return grade(reference, completion)[0]


SIGNIFICANT_DIGITS = 6
_MAX_DECIMALS = 60


def _float_rounding(*expressions) -> int:
    """Decimals for math-verify's float comparison: 6 significant digits of the smallest number compared, never
    fewer decimals than its default 6 (which alone makes 0.0000672 equal 0.0000673)."""
    import sympy

    decimals = SIGNIFICANT_DIGITS
    for expression in expressions:
        if not _is_expression(expression):
            continue
        try:
            atoms = expression.atoms(sympy.Number)
        except Exception:
            continue
        for atom in atoms:
            if not atom.is_finite or atom.is_zero:
                continue
            try:
                magnitude = abs(float(atom))
                exponent = math.floor(math.log10(magnitude)) if magnitude else -_MAX_DECIMALS
            except (TypeError, ValueError, OverflowError):
                continue
            decimals = max(decimals, SIGNIFICANT_DIGITS - 1 - exponent)
    return min(decimals, _MAX_DECIMALS)


def _distinct_exact_numbers(gold, predicted) -> bool:
    """math-verify compares exact expressions numerically with chop=True, so distinct tiny numbers such as
    1/2004! and 1/2006! compare equal. Two exact (float-free, symbol-free) numbers must be equal exactly.

    A percent has two readings, N/100 and N (math-verify holds `10\\%` equal to 10, and MATH writes
    `$\\boxed{20}$ percent` for 20): the numbers are distinct only when no reading of one equals a reading of
    the other."""
    import sympy
    from math_verify.grader import get_pct_val

    exact = [isinstance(x, sympy.Expr) and not x.free_symbols and not x.atoms(sympy.Float) for x in (gold, predicted)]
    if not all(exact):
        return False
    readings = [{x.doit(), get_pct_val(x, x).doit()} for x in (gold, predicted)]
    if not all(value.is_Rational for values in readings for value in values):
        return False
    return not readings[0] & readings[1]


def _report_reference(sample: Sample, note: str) -> None:
    with _reported_lock:
        if sample.answer in _reported_references:
            return
        _reported_references.add(sample.answer)
    log.warning("MATH reference %r (sample %s): %s", sample.answer, sample.id, note)


def math_reward(completion: str, sample: Sample, timeout: float = MATH_TIMEOUT_S) -> float:
    try:
        equal, note = _pool.call("rewards.math:grade", (sample.answer, completion), timeout)
    except (WorkerTimeout, WorkerDied):
        # A comparison that does not finish (or whose child was killed, say for memory) is not a proof of
        # equality: 0, by the grader's own rule. The pool replaces the child.
        return 0.0
    if note:
        _report_reference(sample, note)
    return float(equal)
