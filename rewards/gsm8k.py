"""GSM8K grader: find the final number however the model states it, compare it exactly with the reference."""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from envs.sample import Sample

_NUMBER = r"-?\$?\s?\d[\d,]*(?:\.\d+)?|-?\$?\s?\.\d+"
_NUMBER_RE = re.compile(_NUMBER)
# Where a final answer is announced, strongest cue first; the last match of the first cue present wins.
_ANSWER_CUES = [
    re.compile(r"####\s*([^\n]*)"),
    re.compile(r"\\boxed\{([^{}]*)\}"),
    re.compile(r"(?:final answer|the answer)\s*(?:is\b|:|=)\s*(?:\*\*)?\s*([^\n]*)", re.IGNORECASE),
    re.compile(r"\*\*answer:?\*\*:?\s*([^\n]*)", re.IGNORECASE),
    re.compile(r"(?:^|\n)\s*(?:A|Answer)\s*:\s*([^\n]*)", re.IGNORECASE),
]


def parse_number(text: str) -> Decimal | None:
    cleaned = text.replace("$", "").replace(",", "").replace(" ", "")
    try:
        return Decimal(cleaned)
    except InvalidOperation:
        return None


def extract_final_number(completion: str) -> Decimal | None:
    """The number the completion gives as its answer: after an answer cue if there is one, else its last number."""
    for cue in _ANSWER_CUES:
        spans = cue.findall(completion)
        for span in reversed(spans):
            number = _NUMBER_RE.search(span)
            if number:
                return parse_number(number.group())
    numbers = _NUMBER_RE.findall(completion)
    return parse_number(numbers[-1]) if numbers else None


def has_answer_cue(completion: str) -> bool:
    """True when the completion announces its answer (`####`, `\\boxed{}`, `The answer is`, `A:` ...)."""
    return any(cue.search(completion) for cue in _ANSWER_CUES)


def gsm8k_reward(completion: str, sample: Sample) -> float:
    predicted = extract_final_number(completion)
    reference = parse_number(sample.answer)
    return float(predicted is not None and reference is not None and predicted == reference)
