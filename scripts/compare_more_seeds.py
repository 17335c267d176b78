"""More seeds for one arm at one LR of an existing compare folder, through compare's own run_all (same base
config, same run names, resumable), e.g. the seeds `--seeds-at-best` would have added:

    .venv/bin/python scripts/compare_more_seeds.py benchmarks/compare lora:8 3.16e-4 1 2

Then rebuild a report with `rl-lora compare --report OUT/runs/... --out ...`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rl_lora.compare.sweep import Arm, ArmRun, run_all  # noqa: E402
from rl_lora.config import load_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="a compare folder (holds compare.yaml and runs/)")
    parser.add_argument("arm", help="lora:RANK, dora:RANK, tiny:U or full")
    parser.add_argument("lr", type=float)
    parser.add_argument("seeds", type=int, nargs="+")
    args = parser.parse_args()
    base = load_config(args.out / "compare.yaml")
    for folder in run_all(base, [ArmRun(Arm.parse(args.arm), args.lr, seed) for seed in args.seeds], args.out):
        print(folder)


if __name__ == "__main__":
    main()
