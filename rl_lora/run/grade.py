"""`rl-lora grade`: score completions with a reward, and say what the grader read and why.

    rl-lora grade --reward gsm8k --answer 42 "The answer is 42 pens, one for each of the 6 tables."
    rl-lora grade --reward gsm8k --file completions.jsonl --explain     # columns: completion, answer (question)

The score comes from the reward as a run computes it (a user reward in its worker child, under reward.timeout_s).
For the GSM8K grader (`gsm8k`, the arithmetic task's too) it also prints the cue, the statement, what was read and
the rule that decided; `--explain` adds every candidate it considered and the asides it set apart. For `math`, what
math-verify read of the answer.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from envs.dataset import PROMPT_KEYS
from envs.dataset import _prompt as prompt_as_run_reads_it
from envs.errors import TaskError
from envs.loading import read_jsonl, where
from envs.sample import Sample
from rl_lora.config import RewardConfig
from rl_lora.errors import UserError

GSM8K_GRADERS = ("gsm8k", "rewards.gsm8k:gsm8k_reward")
MATH_GRADERS = ("math", "rewards.math:math_reward")


@dataclass(frozen=True)
class Case:
    completion: str
    answer: str
    question: str | tuple = ""  # the prompt: a string, or chat messages as a run reads them
    place: str = ""  # "line 6" of a --file; "" for one completion on the command line


def _column_type(value) -> str:
    return "null" if value is None else {"list": "a list", "dict": "an object", "bool": "a boolean", "int": "a number",
                                         "float": "a number"}.get(type(value).__name__, type(value).__name__)


def cases_from_file(path: Path) -> list[Case]:
    """`completion` and `answer` columns, and the prompt as a run reads it (the first of `prompt`, `question`,
    `problem`: a string or chat messages), one JSON object per line."""
    if not path.is_file():
        raise UserError(f"--file {path}: no such file")
    if path.suffix not in (".jsonl", ".json", ".ndjson"):
        raise UserError(f"--file {path}: expected a .jsonl file (one JSON object per line: completion, answer)")
    rows = read_jsonl(path)  # bounded lines; a binary file or bad JSON is one line naming the line
    if not rows:
        raise UserError(f"--file {path}: no rows")
    cases = []
    for index, row in enumerate(rows):
        place = where(rows, index)
        missing = [column for column in ("completion", "answer") if row.get(column) is None]
        if missing:
            raise UserError(f"--file {path}, {place}: no {' or '.join(repr(m) for m in missing)} column "
                            f"(has: {', '.join(row) or 'nothing'}); each line needs completion and answer")
        if not isinstance(row["completion"], str):
            raise UserError(f"--file {path}, {place}: column 'completion' is {_column_type(row['completion'])}, "
                            "not text")
        if not isinstance(row["answer"], (str, int, float)) or isinstance(row["answer"], bool):
            raise UserError(f"--file {path}, {place}: column 'answer' is {_column_type(row['answer'])}, not text "
                            "or a number")
        key = next((k for k in PROMPT_KEYS if row.get(k) is not None), None)
        try:
            prompt = "" if key is None else prompt_as_run_reads_it(row[key], f"--file {path}", place)
        except TaskError as error:
            raise UserError(str(error)) from None
        cases.append(Case(row["completion"], str(row["answer"]), prompt, place))
    return cases


def explain_lines(reward: str, case: Case, explain: bool) -> list[str]:
    """What the grader read, for the built-in graders (others: nothing beyond the score)."""
    if reward in GSM8K_GRADERS:
        from rewards.gsm8k import explain as gsm8k_explain
        from rewards.gsm8k import question_text

        lines = gsm8k_explain(case.completion, question_text(case.question)).splitlines()
        keep = ("cue:", "statement:", "read:", "rule:") if not explain else None
        return [line for line in lines if keep is None or line.startswith(keep)]
    if reward in MATH_GRADERS and explain:
        from rewards.math import answer_window, join_digit_groups

        return [f"math-verify reads the answer from: {join_digit_groups(answer_window(case.completion))[-300:]!r}"]
    return []


def unreadable_references(reward: str, cases: list[Case]) -> list[str]:
    """One line per reference the GSM8K grader cannot read as a number (every completion graded against it scores
    0), once each, not per completion."""
    if reward not in GSM8K_GRADERS:
        return []
    from rewards.numbers import parse_number

    lines = []
    for reference in dict.fromkeys(case.answer for case in cases):
        if parse_number(reference) is None:
            lines.append(f"reference {reference!r} is not a number: every completion scores 0")
    return lines


def grade_main(reward: str | None, answer: str | None, completion: str | None, file: str | None,
               question: str | None, explain: bool, timeout_s: float) -> int:
    reward = reward or "gsm8k"
    if file and (completion or answer):
        raise UserError("give either --file, or --answer and one completion, not both")
    if file:
        cases = cases_from_file(Path(file))
    elif completion is None or answer is None:
        raise UserError('give --answer REFERENCE and a completion (rl-lora grade --answer 42 "The answer is 42."), '
                        "or --file completions.jsonl")
    else:
        cases = [Case(completion, answer, question or "")]
    from rl_lora.tasks import reward_scorer

    scorer = reward_scorer(RewardConfig(name=reward, timeout_s=timeout_s, on_error="skip"), "grade", "gsm8k")
    try:
        samples = [Sample(f"grade-{i}", case.question, case.answer) for i, case in enumerate(cases)]
        for line in unreadable_references(reward, cases):
            print(line)
        scored = scorer.score([case.completion for case in cases], samples)
    finally:
        scorer.close()
    failures = {f.sample_id: f.reason for f in scored.failures}
    total = 0.0
    for index, (case, score) in enumerate(zip(cases, scored.rewards)):
        head = f"{case.place}: " if case.place else ""
        failed = failures.get(f"grade-{index}")
        shown = "failed: " + failed if failed else f"{score:g}"
        print(f"{head}score {shown} ({reward}, reference {case.answer!r})")
        for line in explain_lines(reward, case, explain):
            print(("  " if case.place else "") + line)
        total += score or 0.0
    if len(cases) > 1:
        print(f"{len(cases)} completions: mean score {total / len(cases):.4f}, {len(failures)} failed")
    return 0
