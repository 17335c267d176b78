"""GSM8K grader: find the statement of the final answer however the model makes it, read the answer it states,
compare it exactly with the reference.

The statement is the one the strongest answer cue present opens (`####`, `\\boxed{}`, a heading or bold label
naming the answer, `**Answer: 30**`, `### Final Answer` with its value on the same or the next line, then "the
answer is" / "final answer", then `A:`); of several, the last, except that a line that only checks an answer
("Verifying the answer: 20 / 4 = 5"), a remark ("Note: the answer is based on 12") and a question ("Wait, is the
answer 6?") state none. A sentence cue's statement ends with its sentence. The statement is then read by the
principles of rewards.answer_sentence; a hedge abstains (scores 0). Without a cue, the completion's last number.
Numbers are read whole and exactly (rewards.numbers). The question is used only to refuse an unevaluated copy of its
own arithmetic and to read "$4 million" as 4 when it counts in millions.

`explain` says what was read and which rule decided (`rl-lora grade --explain`). Every step is linear in the
completion: a 1 MB degenerate completion is graded in well under 0.5 s.
"""
from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from fractions import Fraction

from envs.sample import Sample
from rewards.answer_sentence import Reading, read_statement
from rewards.numbers import NUMBER_RE, UNREADABLE, WORD_NUMBER_RE, _Unreadable, normalize, parse_number, value
from rewards.protocol import Graded

log = logging.getLogger(__name__)

__all__ = ["explain", "extract_final_number", "gsm8k_grade", "gsm8k_reward", "has_answer_cue", "parse_number", "read_answer"]

# A sentence ends at `.`, `!` or `?` before a space and what can open a sentence, or the end: "In the four days. the
# number of messages is 2000" goes on after a lowercase word.
_SENTENCE_END_RE = re.compile(r"[.!?](?=\s*$|\s+[^a-z\s])")
# Where a final answer is announced, strongest cue first. `\boxed{...}` is found by brace matching.
_HASHES = re.compile(r"####\s*([^\n]*)")
_ANSWER_IS = re.compile(r"(?:final answer|the answer)[ \t]*(?:is\b|:|=)\s*(?:\*\*)?[ \t]*([^\n]*)", re.IGNORECASE)
# A heading or bold label that names the answer: `**Answer:** 30`, `**Answer: 30**`, `### Final Answer` with its
# value on the same line or the next. Line-anchored, horizontal space only: linear on runs of newlines.
_LABEL = re.compile(r"(?:^[ \t]*(?:#{1,6}[ \t]*(?:\*\*|__)?[ \t]*(?:final[ \t]+)?answer\b|(?:final[ \t]+)?answer[ \t]*:)"
                    r"|(?:\*\*|__)[ \t]*(?:final[ \t]+)?answer\b)"
                    r"[ \t]*:?[ \t]*(?:\*\*|__)?[ \t]*:?[ \t]*([^\n]*)", re.IGNORECASE | re.MULTILINE)
_ANSWER_WORD = re.compile("answer", re.IGNORECASE)
_NEXT_LINE = re.compile(r"\n[ \t]*(?:\n[ \t]*)?([^\n]*)")
# Line-anchored, with horizontal space only before the colon: a `\s*` there scanned every run of newlines once
# per newline (quadratic: 64k newlines took 35 s).
_A_COLON = re.compile(r"^[ \t]*(?:A|Answer)[ \t]*:\s*([^\n]*)", re.IGNORECASE | re.MULTILINE)
_BOX_TOKEN = re.compile(r"\\boxed\s*\{|\\fbox\s*\{|\{+|\}+")
# Words that make a line a check of an answer rather than its statement ("Verifying the answer: ...").
_CHECK_WORDS = re.compile(r"\b(?:verif\w*|check\w*|confirm\w*|double[- ]check\w*|test\w*|plug\w*|substitut\w*)\b",
                          re.IGNORECASE)
_CHECK_WINDOW = 80
# A remark after the answer never re-opens it: a line that opens with a remark word ("Note: the answer is based on
# 12 per box"), or a cue followed by what is said about the answer rather than the answer ("the answer is based on",
# "the answer is correct").
_REMARK_WORDS = re.compile(r"^\W*(?:note|notes|remark|p\.?s|in summary|to summarize|summary|explanation|hint|"
                           r"however|also|alternatively)\b", re.IGNORECASE)
_ABOUT_THE_ANSWER = re.compile(r"[ \t]*(?:based|because|correct|incorrect|wrong|right|not|probably|likely|reasonable|"
                               r"consistent|plausible|indeed|confirmed|verified|derived|obtained|calculated|"
                               r"whether)\b", re.IGNORECASE)
_DIGIT = re.compile(r"\d")
# A statement is a sentence or a box: its answer phrase comes first (rewards.answer_sentence), so past this many
# characters there is nothing left to read; the cut keeps a 1 MB run-on statement linear and fast.
MAX_STATEMENT_CHARS = 2_000
# The last this many cues of a kind are read: the answer is the last statement, and a completion that names its
# answer more often than this is degenerate (a 1 MB run of `### Final Answer` lines has 60,000).
MAX_CUES = 1_000
_QUESTION_CHARS = 20_000  # the question's quantities are read from its first characters (a prompt is short)


# A full stop after these ends no sentence: "sq. ft.", "10:00 p.m.", "Mr. Hugo", "approx. 5".
_ABBREVIATIONS = frozenset("sq ft mr mrs ms dr st vs etc oz lb lbs no approx hr hrs min mins sec secs yd yds mi gal "
                           "pt qt tbsp tsp cm mm km kg mg ml jr sr inc co est fig p.m a.m e.g i.e p a e i".split())
_WORD_BEFORE = re.compile(r"([A-Za-z]+(?:\.[A-Za-z])*)$")


def first_sentence(text: str) -> tuple[str, bool]:
    """`text` up to the end of its first sentence: a `.`, `!` or `?` before a space or the end, except after an
    abbreviation (bounded: statements are cut to MAX_STATEMENT_CHARS first); and whether it is a question."""
    for end in _SENTENCE_END_RE.finditer(text):
        word = _WORD_BEFORE.search(text, max(0, end.start() - 12), end.start())
        if end.group() == "." and word and word.group(1).lower() in _ABBREVIATIONS:
            continue
        return text[:end.start()], end.group() == "?"
    return text, False


def _boxed_contents(completion: str) -> list[str]:
    """The contents of the complete `\\boxed{...}` that no other complete box holds (a box inside a box is part of
    its content), in order, by one pass of brace matching. They do not overlap: together they are at most the text,
    so reading them all is linear too."""
    if "\\boxed" not in completion and "\\fbox" not in completion:
        return []
    # Per open brace, outermost first: a box's (box start, content start), or a count of plain braces in a row (a
    # run of `{` or `}` is one step, so 1 MB of braces is not read brace by brace).
    stack: list[tuple[int, int] | int] = []
    closed: list[tuple[int, int, int]] = []  # (box start, content start, content end), in order of their end
    for token in _BOX_TOKEN.finditer(completion):
        text = token.group()
        if text[0] == "{":
            if stack and isinstance(stack[-1], int):
                stack[-1] += len(text)
            else:
                stack.append(len(text))
        elif text[0] == "}":
            position, remaining = token.start(), len(text)
            while remaining and stack:
                top = stack[-1]
                if isinstance(top, int):
                    taken = min(top, remaining)
                    position, remaining = position + taken, remaining - taken
                    if taken == top:
                        stack.pop()
                    else:
                        stack[-1] = top - taken
                else:
                    stack.pop()
                    closed.append((*top, position))
                    position, remaining = position + 1, remaining - 1
        else:
            stack.append((token.start(), token.end()))
    outermost, frontier = [], len(completion) + 1
    for box_start, start, end in reversed(closed):  # by end, last first: a box is either inside the one before or
        if end < frontier:                           # wholly before it
            outermost.append(completion[start:end])
            frontier = box_start
    return outermost[::-1]


def _statements(pattern: re.Pattern, completion: str, next_line: bool = False) -> list[str]:
    """The spans a cue opens, to the end of its line, leaving out lines that only check an answer and remarks about
    it. A cue inside another cue's span ("Is the answer 6? No: the answer is 8.") opens a span of its own (looked
    for in the first MAX_STATEMENT_CHARS only: linear). `next_line`: a label with nothing after it (`### Final
    Answer`) opens the next non-empty line."""
    found: list[str] = []
    if _ANSWER_WORD.search(completion) is None:  # every such cue names the answer; a literal scan is fast
        return found
    for match in list(pattern.finditer(completion))[-MAX_CUES:]:
        cues = [(match.start(), match.start(1))]
        head = completion[match.start(1):min(match.end(1), match.start(1) + MAX_STATEMENT_CHARS)]  # its line
        cues += [(match.start(1) + inner.start(), match.start(1) + inner.start(1)) for inner in pattern.finditer(head)]
        line_end = match.end(1)
        for cue_start, start in cues:
            # The words just before the cue, on its line (a bounded look: a 1 MB line of cues stays linear).
            line_start = max(completion.rfind("\n", max(0, cue_start - _CHECK_WINDOW), cue_start) + 1,
                             cue_start - _CHECK_WINDOW)
            if _CHECK_WORDS.search(completion, line_start, cue_start) or \
                    _REMARK_WORDS.match(completion, line_start, cue_start + 1) or \
                    _ABOUT_THE_ANSWER.match(completion, start):
                continue
            statement = completion[start:line_end]
            if next_line and not _has_number(statement.strip(" \t*_#:")):
                following = _NEXT_LINE.match(completion, line_end)
                if following is None:
                    continue
                statement = following.group(1)
            found.append(statement)
    return found


def _has_number(text: str) -> bool:
    """A digit or a number word among the first MAX_STATEMENT_CHARS characters (cheap: skips empty statements)."""
    return _DIGIT.search(text, 0, MAX_STATEMENT_CHARS) is not None or \
        WORD_NUMBER_RE.search(text, 0, MAX_STATEMENT_CHARS) is not None


def _cues(completion: str) -> list[tuple[str, list[str], bool]]:
    """Per cue, strongest first: its name, its statements, and whether a statement is a sentence (a box's content
    is not: `\\boxed{1.5}` holds no full stop)."""
    return [
        ("####", _HASHES.findall(completion), True),
        ("\\boxed{}", _boxed_contents(completion), False),
        ("Answer: label", _statements(_LABEL, completion, next_line=True), True),
        ("the answer is", _statements(_ANSWER_IS, completion), True),
        ("A:", _A_COLON.findall(completion), True),
    ]


@dataclass(frozen=True)
class AnswerReading:
    """How a completion was read: the cue and statement (None: no cue, the last number), and the statement's
    reading (value, text, rule, candidates)."""
    cue: str | None
    statement: str
    reading: Reading
    question: str = ""

    @property
    def value(self) -> Fraction | None:
        value = self.reading.value
        return None if value is UNREADABLE else value

    @property
    def answer(self) -> str | None:
        """The answer as it is compared: its value, and where the question counts in the scale word the answer
        uses ("$4 million" when the question says million), that scale: such an answer also matches 4, so it must
        not be counted as the same answer as a plain 4000000."""
        if self.value is None:
            return None
        scale = self.reading.scale
        if scale is not None and self.reading.plain is not None and scale in self.question[:_QUESTION_CHARS].lower():
            return f"{_number_text(self.reading.plain)} {scale}"
        return _number_text(self.value)

    def matches(self, reference: Fraction | None) -> bool:
        """The answer equals the reference: as read; or as the statement restates it as a percent ("0.6 or 60%": the
        same quantity) when the question counts in percent; or, for "$4 million", in the scale's own unit (4) when
        the question counts in it (says "million"): a policy must not collect reward by appending a restatement or
        a scale word."""
        if reference is None or self.value is None:
            return False
        scale = self.reading.scale
        question = self.question[:_QUESTION_CHARS].lower()
        return self.value == reference or \
            (self.reading.restated == reference and ("%" in question or "percent" in question)) or \
            (self.reading.plain == reference and scale is not None and scale in question)


@lru_cache(maxsize=4096)
def question_numbers(question: str) -> frozenset[Fraction]:
    """The quantities a question states (its first _QUESTION_CHARS characters)."""
    found = set()
    for match in NUMBER_RE.finditer(normalize(question[:_QUESTION_CHARS])):
        read = value(match)
        if read is not UNREADABLE:
            found.add(read)
    return frozenset(found)


def read_answer(completion: str, question: str = "") -> AnswerReading:
    """The answer the completion gives, and how it was found (see the module's docstring)."""
    given = question_numbers(question) if question else frozenset()
    for cue, statements, sentence in _cues(completion):
        for statement in reversed(statements):
            if not _has_number(statement):
                continue  # no number to read (cheap: a 1 MB run of empty `A:` lines has 350,000 of them)
            statement = statement[:MAX_STATEMENT_CHARS]
            if sentence:
                statement, asks = first_sentence(statement)
                if asks:
                    continue  # "Wait, is the answer 6?": a question asks, it states nothing
            reading = read_statement(statement, given)
            if reading.value is not None:
                return AnswerReading(cue, statement, reading, question)
    last = _last_number(normalize(completion))
    if last is None:
        return AnswerReading(None, "", Reading(None, "", "no answer cue and no number"))
    return AnswerReading(None, "", Reading(value(last), last.group(), "no answer cue: the completion's last number"))


_TAIL = 4_096
_MARGIN = 64  # a number that starts this close to the tail's cut may have begun before it


def _last_number(text: str) -> re.Match | None:
    """The text's last number: found near its last digit when a number starts well after the window's cut (a 1 MB
    run of numbers is not read number by number, and 1 MB of `$` with no digit is not read at all), else by reading
    the whole text."""
    last_digit = max(text.rfind(digit) for digit in "0123456789")
    if last_digit < 0 and text.isascii():
        return None  # a number has a digit
    if last_digit >= 0:
        window = max(0, last_digit - _TAIL)
        last = None
        for last in NUMBER_RE.finditer(text, window):
            pass
        if last is not None and (window == 0 or last.start() >= window + _MARGIN):
            return last
        if window == 0:
            return last
    last = None
    for last in NUMBER_RE.finditer(text):
        pass
    return last


def extract_final_number(completion: str, question: str = "") -> Fraction | None:
    """The number the completion gives as its answer. None when there is none, or when the answer is a hedge or
    cannot be evaluated."""
    return read_answer(completion, question).value


def has_answer_cue(completion: str) -> bool:
    """True when the completion announces its answer (`####`, `\\boxed{}`, `The answer is`, `A:` ...)."""
    return any(statements for _, statements, _ in _cues(completion))


def question_text(prompt) -> str:
    """The question a prompt asks: the prompt itself, or its user messages' text (chat messages)."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user")


_reported_lock = threading.Lock()
_reported_references: set[str] = set()


def _report_reference(sample: Sample) -> None:
    """A reference that is not a number is named once per process, not once per completion."""
    with _reported_lock:
        if sample.answer in _reported_references or len(_reported_references) > 10_000:
            return
        _reported_references.add(sample.answer)
    log.warning("GSM8K reference %r (sample %s) is not a number: every completion scores 0", sample.answer, sample.id)


def gsm8k_grade(completion: str, sample: Sample) -> Graded:
    """gsm8k_reward's score and the answer it read (what majority voting counts)."""
    read = read_answer(completion, question_text(sample.prompt))
    reference = parse_number(sample.answer)
    if reference is None:
        _report_reference(sample)
    return Graded(float(read.matches(reference)), read.answer)


def gsm8k_reward(completion: str, sample: Sample) -> float:
    return gsm8k_grade(completion, sample).score


def explain(completion: str, question: str = "", reference: str | None = None) -> str:
    """What the grader read and why, as lines of text: the cue, the statement, the rule, every candidate."""
    read = read_answer(completion, question)
    reading = read.reading
    shown = "a hedge or unreadable: equal to nothing" if reading.value is UNREADABLE else \
        ("nothing" if reading.value is None else _number_text(reading.value))
    lines = [f"cue: {read.cue or 'none'}", f"statement: {read.statement!r}" if read.cue else "statement: -",
             f"read: {reading.text!r} = {shown}" + (f", restated as {_number_text(reading.restated)}"
                                                     if reading.restated is not None else ""),
             f"rule: {reading.rule}"]
    if reference is not None:
        expected = parse_number(reference)
        lines.append(f"reference: {reference!r}" + (" (not a number: every answer scores 0)" if expected is None
                                                      else ""))
        lines.append(f"score: {float(read.matches(expected))}")
    for aside in reading.asides:
        lines.append(f"aside set apart: {aside.strip()!r}")
    for candidate in reading.candidates:
        shown = "unreadable" if candidate.value is UNREADABLE else _number_text(candidate.value)
        lines.append(f"candidate {candidate.text!r} = {shown}: {candidate.note}")
    return "\n".join(lines)


def _number_text(number: Fraction | _Unreadable) -> str:
    if not isinstance(number, Fraction):
        return "unreadable"
    return str(number.numerator) if number.denominator == 1 else f"{number} ({float(number):g})"
