"""The learner over N ranks (ray.num_learners) against one: per-rank peak memory and step time, SmolLM2-135M,
the default step's batch (8 prompts x 8 completions x 24 tokens), FullFT (FSDP2: weights, gradients and AdamW state
sharded) and rank-1 LoRA (DDP: each rank holds the base). Each rank is its own process (gloo on loopback), measured
with the learner-memory machinery (rl_lora.compare.learner_memory.measure), one torch thread each.

    .venv/bin/python scripts/bench_learner_group.py       # writes benchmarks/learner_group.json
"""
from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rank_main(mode: str, rank: int, world: int, port: int, steps: int, mmap_threshold: int | None,
              overrides: list[str]) -> dict:
    import torch

    from rl_lora.policy import data_parallel

    if mmap_threshold is not None:
        data_parallel.SHARDED_CPU_MMAP_THRESHOLD = mmap_threshold

    from rl_lora.compare.learner_memory import measure
    from rl_lora.config import load_config

    torch.set_num_threads(1)

    def join(learner) -> None:
        from rl_lora.policy.data_parallel import join_group

        join_group("127.0.0.1", port, rank, world, torch.device("cpu"))
        learner.join_data_parallel(rank, world)

    config = load_config(None, [f"lora.mode={mode}", "lora.rank=1", *overrides])
    return {**measure(config, steps, join if world > 1 else None), "rank": rank, "world": world}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(mode: str, world: int, steps: int, mmap_threshold: int | None, overrides: list[str]) -> list[dict]:
    port = free_port()
    children = [subprocess.Popen([sys.executable, __file__, "--rank", str(rank), "--world", str(world), "--port",
                                  str(port), "--mode", mode, "--steps", str(steps)]
                                 + (["--mmap-threshold", str(mmap_threshold)] if mmap_threshold is not None else [])
                                 + [arg for o in overrides for arg in ("--set", o)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(world)]
    results = []
    for child in children:
        out, err = child.communicate()
        if child.returncode:
            sys.exit(f"rank failed:\n{err[-3000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    for r in results:
        print(f"{mode} N={world} rank {r['rank']}: {r['step_s_median']:.2f} s/step, learner {r['learner_peak_mb']:.0f} "
              f"MB (weights, gradients, optimizer state {r['state_mb']:.0f} MB), peak RSS {r['peak_rss_mb']:.0f} MB",
              flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--modes", default="full,lora", help="comma-separated: full, lora")
    parser.add_argument("--mmap-threshold", type=int, help="glibc's mmap threshold for the sharded ranks, in "
                        "bytes (0: glibc's own, rising); default: rl_lora.policy.data_parallel's")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every rank, e.g. algo.gradient_checkpointing=true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "learner_group.json"))
    for flag in ("--rank", "--world", "--port"):
        parser.add_argument(flag, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank is not None:
        print(json.dumps(rank_main(args.mode, args.rank, args.world, args.port, args.steps, args.mmap_threshold,
                                   args.set)))
        return
    report = {"command": "python scripts/bench_learner_group.py " + " ".join(sys.argv[1:]), "modes": {}}
    for mode in args.modes.split(","):
        one, two = (run(mode, world, args.steps, args.mmap_threshold, args.set) for world in (1, 2))
        report["modes"][mode] = {
            "one_learner": one[0], "two_learners": two,
            "per_rank_learner_memory_ratio_2_over_1":
                max(r["learner_peak_mb"] for r in two) / one[0]["learner_peak_mb"],
            "per_rank_state_ratio_2_over_1": max(r["state_mb"] for r in two) / one[0]["state_mb"],
            "step_time_ratio_2_over_1": max(r["step_s_median"] for r in two) / one[0]["step_s_median"]}
        print(f"{mode}: per-rank learner memory, 2 learners / 1: "
              f"{report['modes'][mode]['per_rank_learner_memory_ratio_2_over_1']:.2f}", flush=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
