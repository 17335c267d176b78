"""Weight sync to 2 local RolloutWorker actors on SmolLM2-135M, through the run's own path: the Learner actor
takes a real step, exports the update into the Ray object store, and WorkerPool.sync has both workers load it
and then probe it (worker log-probs of a fixed sequence = the learner's, <= 1e-3). Rank-1 LoRA vs FullFT, or (with
--tiny) rank-1 LoRA vs a tiny adapter of 13 numbers, which travels as its rank-2 LoRA.

"sync" is timed from the export call to both workers serving the new version (load_update returned on each);
the probe is timed after it. Medians over --repeats versions, each a real optimizer step.

    .venv/bin/python scripts/bench_sync.py          # writes benchmarks/sync.json
    .venv/bin/python scripts/bench_sync.py --tiny   # writes benchmarks/sync_tiny.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


ARMS = {"lora": ["lora.mode=lora", "lora.rank=1"], "full": ["lora.mode=full"],
        "tiny13": ["lora.mode=lora", "lora.adapter=tiny", "lora.tiny_params=13"]}


def measure(mode: str, repeats: int) -> dict:
    import ray

    from rl_lora.cluster import placement
    from rl_lora.config import load_config
    from rl_lora.models import load_tokenizer
    from rl_lora.step.advantages import build_rollouts
    from rl_lora.tasks import load_task
    from rl_lora.types import Probe, SamplingParams, collate

    config = load_config(None, [*ARMS[mode], "algo.lr=1e-5", "rollout.num_workers=2", "ray.worker_cpus=0.5",
                                "ray.learner_cpus=1"])
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
        sync_s, probe_s, gaps, export_s = [], [], [], []
        for _ in range(repeats):
            learner.step(batch)
            started = time.perf_counter()
            ray.wait([learner.export_update()])  # the export alone (a tiny adapter computes its B here)
            export_s.append(time.perf_counter() - started)
            result = pool.sync(learner)
            sync_s.append(result.seconds)
            probe_s.append(result.probe_seconds)
            gaps.append(result.probe_gap)
        update_bytes = ray.get(learner.export_update()).num_bytes
    finally:
        parts.shutdown()
    return {"update_bytes": update_bytes, "trainable_parameters": learner.trainable_parameters,
            "export_ms_median": 1000 * statistics.median(export_s), "sync_ms_median": 1000 * statistics.median(sync_s),
            "sync_ms_all": [round(1000 * s, 2) for s in sync_s], "probe_ms_median": 1000 * statistics.median(probe_s),
            "probe_max_gap": max(gaps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--tiny", action="store_true", help="rank-1 LoRA beside tiny:13 (-> sync_tiny.json)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    modes = ("lora", "tiny13") if args.tiny else ("lora", "full")
    args.out = args.out or str(ROOT / "benchmarks" / ("sync_tiny.json" if args.tiny else "sync.json"))
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    results = {}
    for mode in modes:
        results[mode] = measure(mode, args.repeats)
        print(f"{mode}: {results[mode]['update_bytes'] / 1e6:.3f} MB, sync {results[mode]['sync_ms_median']:.1f} ms "
              f"(median of {args.repeats}), probe {results[mode]['probe_ms_median']:.1f} ms, "
              f"max gap {results[mode]['probe_max_gap']:.1e}")
    ray.shutdown()
    if args.tiny:
        tiny, lora = results["tiny13"], results["lora"]
        report = {"command": "python scripts/bench_sync.py --tiny", "workers": 2, "model": "SmolLM2-135M-Instruct fp32",
                  "lora_r1": lora, "tiny13": tiny,
                  "tiny_trained_bytes": 4 * tiny["trainable_parameters"],
                  "tiny_over_lora_sync_time": tiny["sync_ms_median"] / lora["sync_ms_median"],
                  "note": "a tiny adapter syncs its rank-r LoRA (B = U_r S_r R(v), A = V_r^T): every sampler serves it "
                          "unchanged; sending only v would need the frozen bases on every worker"}
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        print(f"tiny / LoRA sync time: {report['tiny_over_lora_sync_time']:.2f}x -> {args.out}")
        return
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
