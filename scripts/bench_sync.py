"""Weight sync to 2 local RolloutWorker actors on SmolLM2-135M, through the run's own path: the Learner actor
takes a real step, exports the update into the Ray object store, and WorkerPool.sync has both workers load it
and then probe it (worker log-probs of a fixed sequence = the learner's, <= 1e-3). Rank-1 LoRA vs FullFT.

"sync" is timed from the export call to both workers serving the new version (load_update returned on each);
the probe is timed after it. Medians over --repeats versions, each a real optimizer step.

    .venv/bin/python scripts/bench_sync.py          # writes benchmarks/sync.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(mode: str, repeats: int) -> dict:
    import ray

    from rl_lora.cluster import placement
    from rl_lora.config import load_config
    from rl_lora.models import load_tokenizer
    from rl_lora.step.advantages import build_rollouts
    from rl_lora.tasks import load_task
    from rl_lora.types import Probe, SamplingParams, collate

    config = load_config(None, [f"lora.mode={mode}", "lora.rank=1", "algo.lr=1e-5", "rollout.num_workers=2",
                                "ray.worker_cpus=0.5", "ray.learner_cpus=1"])
    task = load_task(config.task)
    tokenizer = load_tokenizer(config.model.name)
    parts = placement.start(config, Probe.for_tokenizer(tokenizer), task.reward, f"bench-sync-{mode}")
    try:
        from envs.render import PromptRenderer

        sample = task.train[0]
        pool, learner = parts.pool, parts.learner
        sampled = pool.collect(pool.submit([PromptRenderer(tokenizer)(sample)], [sample], 2,
                                           SamplingParams(0.7, 16, seed=0)))
        # Rewards 1 and 0: a non-zero advantage, so every step really moves the weights.
        batch = collate(build_rollouts([sample.id], sampled.groups, [1.0, 0.0], "group_mean", False), pool.pad_id)
        sync_s, probe_s, gaps = [], [], []
        for _ in range(repeats):
            learner.step(batch)
            result = pool.sync(learner)
            sync_s.append(result.seconds)
            probe_s.append(result.probe_seconds)
            gaps.append(result.probe_gap)
        update_bytes = ray.get(learner.export_update()).num_bytes
    finally:
        parts.shutdown()
    return {"update_bytes": update_bytes, "sync_ms_median": 1000 * statistics.median(sync_s),
            "sync_ms_all": [round(1000 * s, 2) for s in sync_s], "probe_ms_median": 1000 * statistics.median(probe_s),
            "probe_max_gap": max(gaps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "sync.json"))
    args = parser.parse_args()
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    results = {}
    for mode in ("lora", "full"):
        results[mode] = measure(mode, args.repeats)
        print(f"{mode}: {results[mode]['update_bytes'] / 1e6:.3f} MB, sync {results[mode]['sync_ms_median']:.1f} ms "
              f"(median of {args.repeats}), probe {results[mode]['probe_ms_median']:.1f} ms, "
              f"max gap {results[mode]['probe_max_gap']:.1e}")
    ray.shutdown()
    report = {"command": "python scripts/bench_sync.py", "workers": 2,
              "transport": "learner actor -> Ray object store (one put, packed into one buffer) -> 2 workers on one "
                           "node, copied into the live weights",
              "model": "SmolLM2-135M-Instruct fp32", "lora_r1": results["lora"], "full": results["full"],
              "full_over_lora_sync_time": results["full"]["sync_ms_median"] / results["lora"]["sync_ms_median"],
              "target": "LoRA r=1 sync to 2 workers <= 50 ms median",
              "target_met": results["lora"]["sync_ms_median"] <= 50}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"FullFT / LoRA sync time: {report['full_over_lora_sync_time']:.0f}x -> {args.out}")


if __name__ == "__main__":
    main()
