"""Learner step on SmolLM2-135M: rank-1 LoRA vs FullFT on the same batch — time and peak memory.

Each mode runs in its own process so its peak RSS is its own. The batch has the default run's shape: 8 prompts
(the arithmetic task through the chat template) x 8 completions x 24 tokens (`--set rollout.max_new_tokens=512`
for long completions). With `--checkpointing` every measurement is taken twice, without and with
algo.gradient_checkpointing, side by side in one run.

    .venv/bin/python scripts/bench_learner.py                    # writes benchmarks/learner.json
    .venv/bin/python scripts/bench_learner.py --checkpointing --out benchmarks/learner_checkpointing.json
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


def measure(mode: str, rank: int, steps: int, overrides: list[str]) -> dict:
    from rl_lora.compare.learner_memory import measure as measure_learner
    from rl_lora.config import load_config

    config = load_config(None, [f"lora.mode={mode}", f"lora.rank={max(rank, 1)}", *overrides])
    return {**measure_learner(config, steps), "overrides": overrides}


def arm(mode: str, rank: int, steps: int, overrides: list[str]) -> dict:
    sets = [item for o in overrides for item in ("--set", o)]
    out = subprocess.run([sys.executable, __file__, "--worker", mode, str(rank), "--steps", str(steps), *sets],
                         capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    print(f"{mode} {' '.join(overrides)}: {result['step_s_median']:.2f} s/step, peak RSS {result['peak_rss_mb']:.0f} "
          f"MB, learner {result['learner_peak_mb']:.0f} MB (load {result['load_peak_mb']:.0f} MB, steps "
          f"{result['step_peak_mb']:.0f} MB)", flush=True)
    return result


def ratios(lora: dict, full: dict) -> dict:
    return {"time_ratio_lora_over_full": lora["step_s_median"] / full["step_s_median"],
            "peak_rss_ratio_lora_over_full": lora["peak_rss_mb"] / full["peak_rss_mb"],
            # The learner's memory: peak RSS less the process before the model loaded (interpreter, torch, imports).
            "learner_memory_ratio_lora_over_full": lora["learner_peak_mb"] / full["learner_peak_mb"],
            # The same from after the model loaded: training's memory without the load's transient.
            "step_memory_ratio_lora_over_full": lora["step_peak_mb"] / full["step_peak_mb"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per mode (after one warm-up step)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "learner.json"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every arm, e.g. algo.micro_batch_size=8")
    parser.add_argument("--checkpointing", action="store_true",
                        help="measure each arm without and with algo.gradient_checkpointing")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "RANK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker[0], int(args.worker[1]), args.steps, args.overrides)))
        return
    variants = {"": []}
    if args.checkpointing:
        variants["checkpointing"] = ["algo.gradient_checkpointing=true"]
    report = {"command": "python scripts/bench_learner.py " + " ".join(sys.argv[1:]), "variants": {}}
    for name, extra in variants.items():
        lora = arm("lora", 1, args.steps, args.overrides + extra)
        full = arm("full", 0, args.steps, args.overrides + extra)
        report["variants"][name or "plain"] = {"lora_r1": lora, "full": full, **ratios(lora, full)}
    report["machine"] = f"{platform.machine()}, {platform.processor() or 'cpu'}, torch threads " \
                        f"{report['variants']['plain']['lora_r1']['torch_threads']}"
    if args.checkpointing:
        plain, checkpointed = report["variants"]["plain"], report["variants"]["checkpointing"]
        report["checkpointing_cost"] = {
            mode: {"step_time_ratio": checkpointed[mode]["step_s_median"] / plain[mode]["step_s_median"],
                   "learner_memory_ratio": checkpointed[mode]["learner_peak_mb"] / plain[mode]["learner_peak_mb"],
                   "step_memory_ratio": checkpointed[mode]["step_peak_mb"] / plain[mode]["step_peak_mb"]}
            for mode in ("lora_r1", "full")}
    Path(args.out).write_text(json.dumps(report, indent=1))
    for name, variant in report["variants"].items():
        print(f"{name}: time ratio {variant['time_ratio_lora_over_full']:.2f}, learner memory ratio "
              f"{variant['learner_memory_ratio_lora_over_full']:.2f}, from after the load "
              f"{variant['step_memory_ratio_lora_over_full']:.2f} (whole-process RSS ratio "
              f"{variant['peak_rss_ratio_lora_over_full']:.2f})")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
