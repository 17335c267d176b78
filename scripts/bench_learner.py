"""Learner step on SmolLM2-135M: rank-1 LoRA vs FullFT on the same batch — time and peak memory.

Each mode runs in its own process so its peak RSS is its own. The batch has the default run's shape: 8 prompts
(the arithmetic task through the chat template) x 8 completions x 24 tokens.

    .venv/bin/python scripts/bench_learner.py            # writes benchmarks/learner.json
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(mode: str, rank: int, steps: int, micro_batch_size: int) -> dict:
    from rl_lora.compare.learner_memory import measure as measure_learner
    from rl_lora.config import AlgoConfig, LoraConfig, RunConfig

    return measure_learner(RunConfig(lora=LoraConfig(mode=mode, rank=rank),
                                     algo=AlgoConfig(micro_batch_size=micro_batch_size)), steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per mode (after one warm-up step)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "learner.json"))
    parser.add_argument("--micro-batch-size", type=int, default=8, help="algo.micro_batch_size")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "RANK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker[0], int(args.worker[1]), args.steps, args.micro_batch_size)))
        return
    results = {}
    for mode, rank in (("lora", 1), ("full", 0)):
        out = subprocess.run([sys.executable, __file__, "--worker", mode, str(rank), "--steps", str(args.steps),
                              "--micro-batch-size", str(args.micro_batch_size)],
                             capture_output=True, text=True, check=True).stdout
        results[mode] = json.loads(out.strip().splitlines()[-1])
        print(f"{mode}: {results[mode]['step_s_median']:.2f} s/step, peak RSS {results[mode]['peak_rss_mb']:.0f} MB, "
              f"learner {results[mode]['learner_peak_mb']:.0f} MB")
    lora, full = results["lora"], results["full"]
    report = {
        "command": "python scripts/bench_learner.py",
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, torch threads {lora['torch_threads']}",
        "lora_r1": lora, "full": full,
        "time_ratio_lora_over_full": lora["step_s_median"] / full["step_s_median"],
        "peak_rss_ratio_lora_over_full": lora["peak_rss_mb"] / full["peak_rss_mb"],
        # The learner's memory: peak RSS less the process before the model loaded (interpreter, torch, imports).
        "learner_memory_ratio_lora_over_full": lora["learner_peak_mb"] / full["learner_peak_mb"],
        "targets": {"time_ratio": "<= 0.70", "peak_memory_ratio": "<= 0.45"},
    }
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"time ratio {report['time_ratio_lora_over_full']:.2f}, learner memory ratio "
          f"{report['learner_memory_ratio_lora_over_full']:.2f} (whole-process RSS ratio "
          f"{report['peak_rss_ratio_lora_over_full']:.2f}) -> {args.out}")


if __name__ == "__main__":
    main()
