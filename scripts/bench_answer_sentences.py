"""The GSM8K grader side by side with an earlier version of it, on the same inputs, both directions.

    .venv/bin/python scripts/bench_answer_sentences.py --before 9b1c144 --out benchmarks/graders/answer_sentences.json

Inputs (from <data>/gsm8k, default ../shared/data or $RL_LORA_DATA):
(a) labelled: the 5,276 model solutions with upstream `is_correct` labels (example_model_solutions.jsonl); the truth
    is the label.
(b) sentences: answer sentences built from GSM8K's own solutions (train.jsonl): the last line of each solution
    (calculator annotations `<<...>>` removed) in the forms models use ("The answer is: <line>", "The answer is
    <line>", "Final answer: <line>"), where that line states the reference. Each gives two cases: as written (truth
    1) and with every occurrence of the reference replaced by reference + 1 (truth 0: a wrong result stated).

(c) forms: the corpus of final-answer forms (benchmarks/graders/forms.jsonl.gz, built by
    scripts/build_grader_corpus.py from GSM8K train solutions): per statement the true value (truth 1), a tempting
    value of the same solution (truth 0) and the form stating that value instead (truth 0); counted per form too.

Every case is graded with the question as context. The JSON counts, per input, where the two versions agree, which
one matches the truth when they do not, and lists every disagreement (up to --list of each kind).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DATA = Path(os.environ.get("RL_LORA_DATA", ROOT.parent / "shared" / "data"))
MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")
FORMS = ("The answer is: {line}", "The answer is {line}", "Final answer: {line}")
_CALCULATOR = re.compile(r"<<[^>]*>>")


def load_before(commit: str):
    """rewards/gsm8k.py as it was at `commit`, as a module of its own (its imports resolve in today's tree; the
    earlier versions import only envs.sample and, later, rewards.numbers / rewards.answer_sentence as of then)."""
    folder = Path(tempfile.mkdtemp(prefix="grader-before-"))
    for path in ("rewards/gsm8k.py", "rewards/numbers.py", "rewards/answer_sentence.py"):
        shown = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{path}"], capture_output=True, text=True)
        if shown.returncode == 0:
            (folder / Path(path).name.replace(".py", "_before.py")).write_text(
                shown.stdout.replace("rewards.numbers", "numbers_before")
                .replace("rewards.answer_sentence", "answer_sentence_before"))
    sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location("gsm8k_before", folder / "gsm8k_before.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gsm8k_before"] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def labelled_cases(data: Path) -> list[dict]:
    cases = []
    for index, line in enumerate(open(data / "gsm8k" / "example_model_solutions.jsonl")):
        row = json.loads(line)
        reference = row["ground_truth"].rsplit("A:", 1)[1].strip().replace(",", "")
        for model in MODELS:
            cases.append({"id": f"{index}/{model}", "question": row["question"], "reference": reference,
                          "completion": row[model]["solution"], "truth": bool(row[model]["is_correct"])})
    return cases


def sentence_cases(data: Path, limit: int) -> list[dict]:
    from rewards.numbers import parse_number

    cases = []
    for index, line in enumerate(open(data / "gsm8k" / "train.jsonl")):
        row = json.loads(line)
        work, _, reference = row["answer"].rpartition("####")
        reference = reference.strip().replace(",", "")
        lines = [_CALCULATOR.sub("", text).strip() for text in work.strip().splitlines() if text.strip()]
        if not lines or parse_number(reference) is None:
            continue
        last = lines[-1]
        # The line must state the reference as a number of its own (not inside a longer number).
        found = list(re.finditer(rf"(?<![\d.,]){re.escape(reference)}(?![\d]|[.,]\d)", last))
        if not found:
            continue
        wrong = str(int(reference) + 1) if reference.lstrip("-").isdigit() else reference + "1"
        # Every occurrence: a sentence that states the answer and then a wrong check of it still states it.
        altered = re.sub(rf"(?<![\d.,]){re.escape(reference)}(?![\d]|[.,]\d)", wrong, last)
        form = FORMS[index % len(FORMS)]
        for text, truth, kind in ((last, True, "as written"), (altered, False, "result altered")):
            cases.append({"id": f"train-{index}/{kind}", "question": row["question"], "reference": reference,
                          "completion": form.format(line=text), "truth": truth})
        if len(cases) >= 2 * limit:
            break
    return cases


def forms_cases(path: Path) -> list[dict]:
    """Per statement of the corpus: the true value (truth 1), the tempting value (0), the swapped text (0)."""
    import gzip

    cases = []
    for line in gzip.open(path, "rt", encoding="utf-8"):
        row = json.loads(line)
        name = f"{row['form']}/train-{row['train_index']}"
        for kind, text, reference, truth in (("true", row["stating"], row["true"], True),
                                             ("distractor", row["stating"], row["tempting"], False),
                                             ("swapped", row["swapped"], row["true"], False)):
            cases.append({"id": f"{name}/{kind}", "form": row["form"], "question": row["question"],
                          "reference": str(reference), "completion": text, "truth": truth})
    return cases


def later_cases(path: Path) -> list[dict]:
    """tests/fixtures/later_answer_forms.json: statements written after the principles were coded; both directions."""
    cases = []
    for index, row in enumerate(json.loads(path.read_text())["cases"]):
        for kind, reference, truth in (("stated", row["stated"], True), ("tempting", row["tempting"], False)):
            cases.append({"id": f"later-{index}/{kind}", "question": "", "reference": reference,
                          "completion": row["completion"], "truth": truth})
    return cases


def compare(cases: list[dict], before, after, listed: int) -> dict:
    from envs.sample import Sample

    counts = {"cases": len(cases), "agree_right": 0, "agree_wrong": 0, "fixed": 0, "broken": 0}
    lists: dict[str, list] = {"fixed": [], "broken": [], "agree_wrong": []}  # the cases, by kind
    per_form: dict[str, dict[str, int]] = {}
    seconds = {"before": 0.0, "after": 0.0}
    for case in cases:
        sample = Sample(case["id"], case["question"], case["reference"])
        started = time.perf_counter()
        old = before.gsm8k_reward(case["completion"], sample) == 1.0
        seconds["before"] += time.perf_counter() - started
        started = time.perf_counter()
        new = after.gsm8k_reward(case["completion"], sample) == 1.0
        seconds["after"] += time.perf_counter() - started
        if old == new:
            kind = "agree_right" if new == case["truth"] else "agree_wrong"
        else:
            kind = "fixed" if new == case["truth"] else "broken"
        counts[kind] += 1
        if "form" in case:
            tally = per_form.setdefault(case["form"], {"cases": 0, "before_right": 0, "after_right": 0, "fixed": 0,
                                                        "broken": 0, "fixed_ids": [], "broken_ids": []})
            tally["cases"] += 1
            tally["before_right"] += old == case["truth"]
            tally["after_right"] += new == case["truth"]
            tally["fixed"] += kind == "fixed"
            tally["broken"] += kind == "broken"
            if kind in ("fixed", "broken"):  # every disagreement, by id (the form's own text is the same each time)
                tally[f"{kind}_ids"].append(case["id"].split("/", 1)[1])
        if kind in lists and len(lists[kind]) < listed:
            lists[kind].append({"id": case["id"], "truth": case["truth"], "before": old, "after": new,
                                "reference": case["reference"], "tail": case["completion"][-240:],
                                "read": after.explain(case["completion"], case["question"]).splitlines()[2:4]})
    total = counts["cases"]
    return {**counts, "accuracy_before": round((counts["agree_right"] + counts["broken"]) / total, 5),
            "accuracy_after": round((counts["agree_right"] + counts["fixed"]) / total, 5),
            "seconds": {k: round(v, 2) for k, v in seconds.items()},
            **({"per_form": per_form} if per_form else {}),
            **{f"{kind}_cases": listed_cases for kind, listed_cases in lists.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="the commit whose grader is compared with today's")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--sentences", type=int, default=2000, help="GSM8K solutions turned into answer sentences")
    parser.add_argument("--list", type=int, default=200, help="disagreements listed per kind")
    parser.add_argument("--forms", type=Path, default=ROOT / "benchmarks" / "graders" / "forms.jsonl.gz",
                        help="the corpus of forms (scripts/build_grader_corpus.py)")
    parser.add_argument("--only", nargs="*", choices=("labelled", "sentences", "forms", "later"),
                        default=("labelled", "sentences", "forms", "later"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not (args.data / "gsm8k" / "train.jsonl").is_file():
        parser.error(f"no gsm8k/train.jsonl under {args.data} (set --data or $RL_LORA_DATA)")
    import rewards.gsm8k as after

    before = load_before(args.before)
    result = {"command": "python scripts/bench_answer_sentences.py " + " ".join(sys.argv[1:]),
              "before": args.before,
              "after": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                      text=True).stdout.strip() + " (+ working tree)",
              }
    loaders = {"labelled": lambda: labelled_cases(args.data),
               "sentences": lambda: sentence_cases(args.data, args.sentences),
               "forms": lambda: forms_cases(args.forms),
               "later": lambda: later_cases(ROOT / "tests" / "fixtures" / "later_answer_forms.json")}
    for name in args.only:
        result[name] = compare(loaders[name](), before, after, args.list)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    summary = {k: {m: v for m, v in result[k].items() if not isinstance(v, (list, dict)) or m == "seconds"}
               for k in args.only}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
