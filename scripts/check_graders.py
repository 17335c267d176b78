"""Check the built-in graders on real data and on degenerate input; print one JSON object.

    .venv/bin/python scripts/check_graders.py > /tmp/graders.json
    .venv/bin/python scripts/check_graders.py --only timing --cap 30

(a) gsm8k_labels   gsm8k_reward against the 5,276 labelled model solutions in <data>/gsm8k/example_model_solutions.jsonl
                   (upstream `is_correct`; the reference is what follows the last `A:` of `ground_truth`), as in
                   tests/test_gsm8k_grader.py::test_agrees_with_upstream_labels.
(b) math_own       every MATH test problem's own `solution` graded by math_reward against its own `answer`
                   (<data>/math/test.jsonl, 5,000 rows; --math-file train.jsonl for the other split): how many
                   score 1, the ones that do not, and what the grader reported (references it cannot parse).
(c) degenerate_1mb the seconds each built-in reward (gsm8k, math, format) takes on 1 MB degenerate completions. Each
                   measurement runs in its own process, cut off after --cap seconds (reported as {"cut_off": cap}),
                   so a quadratic grader cannot stall the check; math is timed after a warm-up call (its worker).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DATA = Path(os.environ.get("RL_LORA_DATA", ROOT.parent / "shared" / "data"))
MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")
MB = 1 << 20


def _repeat(unit: str) -> str:
    return (unit * (MB // len(unit) + 1))[:MB]


# name -> 1 MB completion (built in the child from this expression, so the parent never pickles it)
DEGENERATE = {
    "newlines": r"_repeat('\n')",
    "spaces": r"_repeat(' ')",
    "A_colon": r"_repeat('A:')",
    "A_colon_newline": r"_repeat('A:\n')",
    "newline_then_A": r"_repeat('\n') [:-3] + 'A:x'",
    "digits": r"_repeat('7')",
    "digits_commas": r"_repeat('1,')",
    "digit_space": r"_repeat('1 ')",
    "boxed_open": r"_repeat('\\boxed{')",
    "boxed_nested": r"_repeat('\\boxed{')[: MB - MB // 8] + _repeat('}')[: MB // 8]",
    "answer_is": r"_repeat('The answer is ')",
    "equals": r"_repeat('1 = ')",
    "hashes": r"_repeat('#### ')",
    "frac": r"_repeat('\\frac{1}{')",
    "dollars": r"_repeat('$')",
    "braces": r"'\\boxed' + _repeat('{')",
    "display_brackets": r"_repeat('\\[')",
    "paren_boxed": r"_repeat('\\(\\boxed{')",
    "paren_boxed_closed": r"_repeat('\\(\\boxed{1}\\) ')",
    "box_then_parens": r"'\\boxed{1}' + _repeat('\\(')",
    "frac_spaces": r"'\\frac{' + _repeat(' ')",
    "digit_groups": r"'1' + _repeat(' 000')",
}
REWARDS = {
    "gsm8k": "rewards.gsm8k:gsm8k_reward",
    "math": "rewards.math:math_reward",
    "format": "rewards.format:format_reward",
}


def gsm8k_labels(data: Path) -> dict:
    from envs.sample import Sample
    from rewards.gsm8k import gsm8k_reward

    rows = [json.loads(line) for line in open(data / "gsm8k" / "example_model_solutions.jsonl")]
    total, disagreements = 0, []
    start = time.perf_counter()
    for index, row in enumerate(rows):
        reference = row["ground_truth"].rsplit("A:", 1)[1].strip().replace(",", "")
        sample = Sample(f"gsm8k-test-{index}", row["question"], reference)
        for model in MODELS:
            total += 1
            graded = gsm8k_reward(row[model]["solution"], sample) == 1.0
            if graded != row[model]["is_correct"]:
                disagreements.append({"index": index, "model": model, "label": row[model]["is_correct"],
                                      "reference": reference, "tail": row[model]["solution"][-160:]})
    return {"total": total, "agree": total - len(disagreements),
            "agreement": round((total - len(disagreements)) / total, 6),
            "seconds": round(time.perf_counter() - start, 2), "disagreements": disagreements[:50]}


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _grade_math_chunk(rows: list[tuple[int, str, str]]) -> tuple[list[tuple[int, float, float]], list[str]]:
    from envs.sample import Sample
    from rewards.math import math_reward

    collect = _Collect()  # what the grader reports (a reference it cannot parse), kept for the JSON
    logging.getLogger("rewards").addHandler(collect)
    out = []
    for index, answer, solution in rows:
        start = time.perf_counter()
        score = math_reward(solution, Sample(f"math-{index}", "", answer))
        out.append((index, score, time.perf_counter() - start))
    return out, collect.messages


def math_own(data: Path, jobs: int, limit: int | None, name: str) -> dict:
    rows = [json.loads(line) for line in open(data / "math" / name)][:limit]
    work = [(i, r["answer"], r["solution"]) for i, r in enumerate(rows)]
    chunks = [work[j::jobs] for j in range(jobs)]
    start = time.perf_counter()
    with ProcessPoolExecutor(jobs) as pool:
        graded = list(pool.map(_grade_math_chunk, chunks))
    results = sorted(item for chunk, _ in graded for item in chunk)
    reported = sorted(message for _, messages in graded for message in messages)
    failures = [{"index": i, "unique_id": rows[i].get("unique_id"), "answer": rows[i]["answer"],
                 "solution_tail": rows[i]["solution"][-200:], "seconds": round(s, 2)}
                for i, score, s in results if score != 1.0]
    return {"file": name, "total": len(rows), "score_1": sum(score == 1.0 for _, score, _ in results),
            "seconds": round(time.perf_counter() - start, 1),
            "slowest_s": round(max(s for _, _, s in results), 2), "failures": failures,
            "reported": reported}


_TIMER = r"""
import sys, time
sys.path.insert(0, {root!r})
from envs.sample import Sample
MB = {mb}
def _repeat(unit):
    return (unit * (MB // len(unit) + 1))[:MB]
module, _, name = {spec!r}.partition(":")
reward = getattr(__import__(module, fromlist=[name]), name)
sample = Sample("degenerate", "q", "42")
reward("The answer is 42", sample)  # warm-up: imports, the math worker
completion = {expr}
start = time.perf_counter()
value = reward(completion, sample)
print(repr((time.perf_counter() - start, float(value))))
"""


def _time_one(spec: str, expr: str, cap: float) -> dict:
    code = _TIMER.format(root=str(ROOT), mb=MB, spec=spec, expr=expr)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        # the cap bounds the timed call; the child's own start-up (imports, warm-up) gets a fixed allowance
        out, err = process.communicate(timeout=cap + 60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return {"cut_off": cap}
    if process.returncode != 0:
        return {"error": err.strip().splitlines()[-1] if err.strip() else f"exit {process.returncode}"}
    seconds, value = eval(out.strip().splitlines()[-1])  # noqa: S307 (our own child's repr of two floats)
    if seconds > cap:
        return {"cut_off": cap}
    return {"seconds": round(seconds, 3), "reward": value}


def degenerate_timing(cap: float) -> dict:
    return {name: {case: _time_one(spec, expr, cap) for case, expr in DEGENERATE.items()}
            for name, spec in REWARDS.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--only", choices=("gsm8k", "math", "timing"), action="append")
    parser.add_argument("--jobs", type=int, default=max(1, os.cpu_count() or 1))
    parser.add_argument("--limit", type=int, default=None, help="first N MATH rows only")
    parser.add_argument("--math-file", default="test.jsonl", help="the MATH split under <data>/math (default test)")
    parser.add_argument("--cap", type=float, default=20.0, help="seconds before a 1 MB timing is cut off")
    args = parser.parse_args()
    parts = set(args.only or ("gsm8k", "math", "timing"))
    report: dict = {}
    if "gsm8k" in parts:
        report["gsm8k_labels"] = gsm8k_labels(args.data)
    if "math" in parts:
        report["math_own"] = math_own(args.data, args.jobs, args.limit, args.math_file)
    if "timing" in parts:
        report["degenerate_1mb"] = degenerate_timing(args.cap)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
