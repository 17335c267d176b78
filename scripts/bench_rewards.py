"""MATH scoring throughput: real MATH solutions graded against their own answers by the built-in MATH reward, with
1 vs N worker children side by side (reward.workers). Each setting scores the same completions, after a warm-up
batch that starts the children and imports math-verify in them.

    .venv/bin/python scripts/bench_rewards.py [--data ../shared/data/math/test.jsonl] [--count 200]
                                              # writes benchmarks/rewards.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "math" / "test.jsonl"),
                        help="MATH rows with `solution` and `answer` (the full test split by default)")
    parser.add_argument("--count", type=int, default=200, help="completions per timed batch")
    parser.add_argument("--workers", default="1,2,4", help="reward.workers settings to compare")
    parser.add_argument("--repeats", type=int, default=3, help="timed batches per setting (the median is reported)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "rewards.json"))
    args = parser.parse_args()

    from envs.sample import Sample
    from rewards.scoring import RewardScorer

    rows = [json.loads(line) for line in open(args.data)][: args.count]
    samples = [Sample(f"math-{i}", row["problem"], row["answer"]) for i, row in enumerate(rows)]
    completions = [row["solution"] for row in rows]
    results = {}
    for workers in (int(w) for w in args.workers.split(",")):
        scorer = RewardScorer.from_name("math", workers=workers)
        scorer.score(completions[: 2 * workers], samples[: 2 * workers])  # children started, math-verify imported
        times, scores = [], None
        for _ in range(args.repeats):
            start = time.perf_counter()
            scored = scorer.score(completions, samples)
            times.append(time.perf_counter() - start)
            scores = scored.rewards
        scorer.close()
        median = statistics.median(times)
        results[str(workers)] = {"seconds_median": median, "seconds_all": times,
                                 "completions_per_s": len(completions) / median, "scored_1": sum(scores)}
        print(f"workers={workers}: {len(completions) / median:.1f} completions/s ({median:.2f} s per batch of "
              f"{len(completions)}); {sum(scores):.0f} scored 1", flush=True)
    first = results[args.workers.split(",")[0]]["completions_per_s"]
    report = {"command": "python scripts/bench_rewards.py " + " ".join(sys.argv[1:]),
              "what": "the built-in MATH reward on real MATH test solutions against their own answers",
              "completions": len(completions), "cores": len(os.sched_getaffinity(0)), "machine": platform.machine(),
              "python": platform.python_version(), "results": results,
              "speedup_over_first": {w: r["completions_per_s"] / first for w, r in results.items()}}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
