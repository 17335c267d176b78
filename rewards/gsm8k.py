"""GSM8K grader: find the statement of the final answer however the model makes it, read the answer it states,
compare it exactly with the reference.

The statement is the one the strongest answer cue present opens (`####`, `\\boxed{}`, `The answer is` / `final
answer`, `**Answer:**`, `A:`); of several, the last, except that a line that only checks an answer ("Verifying the
answer: 20 / 4 = 5") states none. A sentence cue's statement ends with its sentence. The statement is then read as
a small grammar (rewards.answer_sentence): asides set apart, expressions evaluated, the first value it states (or
the result its computation states), hedges (two different values as alternatives) scoring 0. Without a cue, the
completion's last number. Numbers are read whole and exactly (rewards.numbers).

`explain` says what was read and which rule decided (`rl-lora grade --explain`). Every step is linear in the
completion: a 1 MB degenerate completion is graded in milliseconds.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from fractions import Fraction

from envs.sample import Sample
from rewards.answer_sentence import Reading, read_statement
from rewards.protocol import Graded
from rewards.numbers import NUMBER_RE, UNREADABLE, _Unreadable, normalize, parse_number, value

__all__ = ["explain", "extract_final_number", "gsm8k_grade", "gsm8k_reward", "has_answer_cue", "parse_number", "read_answer"]

_SENTENCE_END_RE = re.compile(r"[.!?](?=\s|$)")
# Where a final answer is announced, strongest cue first. `\boxed{...}` is found by brace matching.
_HASHES = re.compile(r"####\s*([^\n]*)")
_ANSWER_IS = re.compile(r"(?:final answer|the answer)[ \t]*(?:is\b|:|=)\s*(?:\*\*)?[ \t]*([^\n]*)", re.IGNORECASE)
_BOLD_ANSWER = re.compile(r"\*\*answer:?\*\*:?\s*([^\n]*)", re.IGNORECASE)
# Line-anchored, with horizontal space only before the colon: a `\s*` there scanned every run of newlines once
# per newline (quadratic: 64k newlines took 35 s).
_A_COLON = re.compile(r"^[ \t]*(?:A|Answer)[ \t]*:\s*([^\n]*)", re.IGNORECASE | re.MULTILINE)
_BOX_TOKEN = re.compile(r"\\boxed\s*\{|\\fbox\s*\{|[{}]")
# Words that make a line a check of an answer rather than its statement ("Verifying the answer: ...").
_CHECK_WORDS = re.compile(r"\b(?:verif\w*|check\w*|confirm\w*|double[- ]check\w*|test\w*|plug\w*|substitut\w*)\b",
                          re.IGNORECASE)
_CHECK_WINDOW = 80
_DIGIT = re.compile(r"\d")
# A statement is a sentence or a box: its answer phrase comes first (rewards.answer_sentence), so past this many
# characters there is nothing left to read; the cut keeps a 1 MB run-on statement linear and fast.
MAX_STATEMENT_CHARS = 2_000
_QUESTION_CHARS = 20_000  # the question's quantities are read from its first characters (a prompt is short)


# A full stop after these ends no sentence: "sq. ft.", "10:00 p.m.", "Mr. Hugo", "approx. 5".
_ABBREVIATIONS = frozenset("sq ft mr mrs ms dr st vs etc oz lb lbs no approx hr hrs min mins sec secs yd yds mi gal "
                           "pt qt tbsp tsp cm mm km kg mg ml jr sr inc co est fig p.m a.m e.g i.e p a e i".split())
_WORD_BEFORE = re.compile(r"([A-Za-z]+(?:\.[A-Za-z])*)$")


def first_sentence(text: str) -> str:
    """`text` up to the end of its first sentence: a `.`, `!` or `?` before a space or the end, except after an
    abbreviation (bounded: statements are cut to MAX_STATEMENT_CHARS first)."""
    for end in _SENTENCE_END_RE.finditer(text):
        word = _WORD_BEFORE.search(text, max(0, end.start() - 12), end.start())
        if end.group() == "." and word and word.group(1).lower() in _ABBREVIATIONS:
            continue
        return text[:end.start()]
    return text


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


def _statements(pattern: re.Pattern, completion: str) -> list[str]:
    """The spans a sentence cue opens, leaving out lines that only check an answer."""
    found = []
    for match in pattern.finditer(completion):
        # The words just before the cue, on its line (a bounded look: a 1 MB line of cues stays linear).
        line_start = max(completion.rfind("\n", max(0, match.start() - _CHECK_WINDOW), match.start()) + 1,
                         match.start() - _CHECK_WINDOW)
        if _CHECK_WORDS.search(completion, line_start, match.start()):
            continue
        found.append(match.group(1))
    return found


def _cues(completion: str) -> list[tuple[str, list[str], bool]]:
    """Per cue, strongest first: its name, its statements, and whether a statement is a sentence (a box's content
    is not: `\\boxed{1.5}` holds no full stop)."""
    return [
        ("####", _HASHES.findall(completion), True),
        ("\\boxed{}", _boxed_contents(completion), False),
        ("the answer is", _statements(_ANSWER_IS, completion), True),
        ("**Answer:**", _BOLD_ANSWER.findall(completion), True),
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
        """The answer equals the reference: as read, or, for "$4 million", in the scale's own unit (4) when the
        question counts in it (says "million"): a policy must not collect reward by appending a scale word."""
        if reference is None or self.value is None:
            return False
        scale = self.reading.scale
        return self.value == reference or (self.reading.plain == reference and scale is not None
                                           and scale in self.question[:_QUESTION_CHARS].lower())


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
            if not _DIGIT.search(statement, 0, MAX_STATEMENT_CHARS):
                continue  # no number to read (cheap: a 1 MB run of empty `A:` lines has 350,000 of them)
            statement = statement[:MAX_STATEMENT_CHARS]
            if sentence:
                statement = first_sentence(statement)
            reading = read_statement(statement, given)
            if reading.value is not None:
                return AnswerReading(cue, statement, reading, question)
    last = None
    for last in NUMBER_RE.finditer(normalize(completion)):
        pass
    if last is None:
        return AnswerReading(None, "", Reading(None, "", "no answer cue and no number"))
    return AnswerReading(None, "", Reading(value(last), last.group(), "no answer cue: the completion's last number"))


def extract_final_number(completion: str, question: str = "") -> Fraction | None:
    """The number the completion gives as its answer. None when there is none, or when the answer is a hedge or
    cannot be evaluated."""
    return read_answer(completion, question).value


def has_answer_cue(completion: str) -> bool:
    """True when the completion announces its answer (`####`, `\\boxed{}`, `The answer is`, `A:` ...)."""
    return any(statements for _, statements, _ in _cues(completion))


def _question(sample: Sample) -> str:
    prompt = sample.prompt
    if isinstance(prompt, str):
        return prompt
    return "\n".join(m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user")


def gsm8k_grade(completion: str, sample: Sample) -> Graded:
    """gsm8k_reward's score and the answer it read (what majority voting counts)."""
    read = read_answer(completion, _question(sample))
    return Graded(float(read.matches(parse_number(sample.answer))), read.answer)


def gsm8k_reward(completion: str, sample: Sample) -> float:
    return gsm8k_grade(completion, sample).score


def explain(completion: str, question: str = "", reference: str | None = None) -> str:
    """What the grader read and why, as lines of text: the cue, the statement, the rule, every candidate."""
    read = read_answer(completion, question)
    reading = read.reading
    shown = "a hedge or unreadable: equal to nothing" if reading.value is UNREADABLE else \
        ("nothing" if reading.value is None else _number_text(reading.value))
    lines = [f"cue: {read.cue or 'none'}", f"statement: {read.statement!r}" if read.cue else "statement: -",
             f"read: {reading.text!r} = {shown}", f"rule: {reading.rule}"]
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
