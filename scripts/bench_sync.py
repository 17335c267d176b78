"""Weight sync to 2 local RolloutWorker actors on SmolLM2-135M: rank-1 LoRA adapter vs FullFT state dict.

Timed from the learner's export to both workers serving the new version (load_update returned on each), through
the Ray object store (one put, two reads). Then the post-sync probe (worker log-probs = learner log-probs) is
timed and checked. Medians over --repeats syncs, each of a new version.

    .venv/bin/python scripts/bench_sync.py          # writes benchmarks/sync.json
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


def measure(ray, workers, learner, probe, repeats: int) -> dict:
    import torch

    from rl_lora.sync import check_probe, probe_logprobs

    sync_s, probe_s, gaps = [], [], []
    for _ in range(repeats):
        with torch.no_grad():  # a new version: move every trainable weight a little, as a step would
            for parameter in learner.params:
                parameter.add_(torch.randn_like(parameter) * 1e-3)
        learner.version += 1
        start = time.perf_counter()
        update = learner.export_update()
        reference = ray.put(update)
        versions = ray.get([w.load_update.remote(reference) for w in workers])
        sync_s.append(time.perf_counter() - start)
        assert versions == [learner.version] * len(workers)
        start = time.perf_counter()
        served = ray.get([w.probe.remote(probe) for w in workers])
        expected = probe_logprobs(learner.model, probe)
        probe_s.append(time.perf_counter() - start)
        gaps += [check_probe(expected, logprobs, f"worker {i}", v) for i, (v, logprobs) in enumerate(served)]
    return {"update_bytes": update.num_bytes, "sync_ms_median": 1000 * statistics.median(sync_s),
            "sync_ms_all": [1000 * s for s in sync_s], "probe_ms_median": 1000 * statistics.median(probe_s),
            "probe_max_gap": max(gaps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "sync.json"))
    args = parser.parse_args()
    import ray

    from rl_lora.config import AlgoConfig, LoraConfig, ModelConfig, RewardConfig
    from rl_lora.learner import Learner
    from rl_lora.models import load_causal_lm, load_tokenizer
    from rl_lora.sync import Probe
    from rl_lora.workers import RolloutWorker

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    tokenizer = load_tokenizer("smollm2-135m")
    probe = Probe.for_tokenizer(tokenizer)
    results = {}
    for mode in ("lora", "full"):
        actor = ray.remote(num_cpus=0.5)(RolloutWorker)
        workers = [actor.remote(ModelConfig(), RewardConfig(), "gsm8k", "arithmetic") for _ in range(2)]
        ray.get([w.version.remote() for w in workers])
        learner = Learner(load_causal_lm("smollm2-135m"), LoraConfig(mode=mode, rank=1), AlgoConfig(), lr=1e-4)
        results[mode] = measure(ray, workers, learner, probe, args.repeats)
        print(f"{mode}: {results[mode]['update_bytes'] / 1e6:.3f} MB, sync {results[mode]['sync_ms_median']:.1f} ms "
              f"(median of {args.repeats}), probe {results[mode]['probe_ms_median']:.1f} ms, "
              f"max gap {results[mode]['probe_max_gap']:.1e}")
        for worker in workers:
            ray.kill(worker)
        del learner
    ray.shutdown()
    report = {"command": "python scripts/bench_sync.py", "workers": 2, "transport": "Ray object store, one node",
              "model": "SmolLM2-135M-Instruct fp32", "lora_r1": results["lora"], "full": results["full"],
              "full_over_lora_sync_time": results["full"]["sync_ms_median"] / results["lora"]["sync_ms_median"],
              "target": "LoRA r=1 sync to 2 workers <= 50 ms median"}
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"FullFT / LoRA sync time: {report['full_over_lora_sync_time']:.0f}x -> {args.out}")


if __name__ == "__main__":
    main()
