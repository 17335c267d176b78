"""The default run, measured: wall time, peak RSS, base vs final greedy accuracy, per-step time split.

    .venv/bin/python scripts/bench_default_run.py                          # rank-1 LoRA (the default)
    .venv/bin/python scripts/bench_default_run.py --label full --set lora.mode=full

Runs `rl-lora train` in a child process (its peak RSS is the child's), then re-scores the base model and the
final weights with a 24-token limit too, so format gains (learning to answer briefly) and arithmetic gains
(answering right) can be told apart. Writes benchmarks/default_run_<label>.json.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "rl_lora.cli"]


def run(argv: list[str], cwd: Path) -> str:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{result.stderr[-2000:]}")
    return result.stdout


def eval_summary(cwd: Path, weights: list[str], max_new_tokens: int, limit: int) -> dict:
    out = run(CLI + ["eval", "--limit", str(limit), "--set", f"eval.max_new_tokens={max_new_tokens}",
                     "--out", str(cwd / "eval.jsonl"), *weights], cwd)
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", default="lora_r1")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-default-"))
    sets = [item for o in args.overrides for item in ("--set", o)]
    started = time.perf_counter()
    stdout = run(CLI + ["train", *sets, "--set", "train.name=bench"], work)
    wall = time.perf_counter() - started
    peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    run_dir = work / "runs" / "bench"
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    config = (run_dir / "config.yaml").read_text()
    step = max(int(p.name.split("_")[1]) for p in (run_dir / "checkpoints").glob("step_*"))
    final_weights = run_dir / "checkpoints" / f"step_{step}"
    weights = ["--adapter", str(final_weights / "adapter")] if (final_weights / "adapter").is_dir() else \
        ["--model", str(final_weights / "model")]
    eval_size = 100
    short = {"base": eval_summary(work, [], 24, eval_size), "final": eval_summary(work, weights, 24, eval_size)}

    def median(key):
        return statistics.median(m[key] for m in metrics)

    report = {
        "command": "python scripts/bench_default_run.py " + " ".join(f"--set {o}" for o in args.overrides),
        "label": args.label,
        "wall_s_total": wall,
        "peak_rss_mb": peak_rss_mb,
        "steps": len(metrics),
        "accuracy_256_tokens": {"base": summary["base_accuracy"], "final": summary["final_accuracy"],
                                "gain_points": 100 * (summary["final_accuracy"] - summary["base_accuracy"])},
        "accuracy_24_tokens": {k: v["accuracy"] for k, v in short.items()},
        "truncated_at_24_tokens": {k: v["truncated_fraction"] for k, v in short.items()},
        "test_accuracy_curve": [(0, summary["base_accuracy"])] + [(m["step"], m["test_accuracy"]) for m in metrics
                                                                   if m["test_accuracy"] is not None],
        "reward_curve": [m["reward_mean"] for m in metrics],
        "completion_tokens_mean_curve": [m["completion_tokens_mean"] for m in metrics],
        "learner_passes_curve": [m.get("learner_passes") for m in metrics],  # absent before issue 39
        "median_s": {k: median(f"time_{k}") for k in ("generate", "score", "learn", "sync", "step")},
        # Time in a step that is neither generation nor the learner's forward/backward/optimizer step.
        "overhead_fraction_median": statistics.median(
            (m["time_step"] - m["time_generate"] - m["time_learn"]) / m["time_step"] for m in metrics),
        "config_yaml": config,
        "train_stdout": stdout,
    }
    out = ROOT / "benchmarks" / f"default_run_{args.label}.json"
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("wall_s_total", "peak_rss_mb", "accuracy_256_tokens",
                                             "accuracy_24_tokens", "median_s", "overhead_fraction_median")}, indent=1))
    print(f"-> {out} (run folder kept at {run_dir})")


if __name__ == "__main__":
    main()
