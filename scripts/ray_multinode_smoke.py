"""Multi-node placement, simulated honestly on one machine: a real 2-node Ray cluster (a head raylet and a second
raylet, each with its own resources, on loopback; `ray.cluster_utils.Cluster`, what Ray's own tests use), then
`rl-lora train` joins it through RAY_ADDRESS exactly as under `ray job submit`, with ray.placement=separate.

What it shows: the placement group spreads the learner and the workers over both nodes, the update crosses
between raylets through the object store, the probe passes on every worker, checkpoints land on the driver's
side. What it cannot show here: network bandwidth between machines, GPUs, NCCL.

    .venv/bin/python scripts/ray_multinode_smoke.py [--model PATH] [--steps 3]   # writes benchmarks/multinode.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "models" / "stories260K" / "hf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(TINY), help="model for the run (default: the 260K Llama)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "multinode.json"))
    args = parser.parse_args()
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    try:
        work = Path(tempfile.mkdtemp(prefix="multinode-"))
        argv = [sys.executable, "-m", "rl_lora.cli", "train", "--set", f"model.name={args.model}",
                "--reward", "tests.reward_fixtures:mentions_the", "--set", "algo.lr=0.005", "--set", "lora.rank=2",
                "--set", f"train.steps={args.steps}", "--set", "train.eval_size=8", "--set", "eval.max_new_tokens=8",
                "--set", "rollout.num_workers=2", "--set", "ray.placement=separate", "--set", "ray.learner_cpus=1",
                "--set", "ray.worker_cpus=1", "--set", f"train.runs_dir={work}", "--set", "train.name=multinode"]
        started = time.perf_counter()
        result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True,
                                env={**os.environ, "RAY_ADDRESS": cluster.address})
        wall = time.perf_counter() - started
        if result.returncode != 0:
            sys.exit(f"the run failed:\n{result.stderr[-3000:]}")
        placed = next(line for line in result.stdout.splitlines() if line.startswith("placed on"))
        steps = [json.loads(line) for line in (work / "multinode" / "metrics.jsonl").read_text().splitlines()]
        report = {
            "command": "python scripts/ray_multinode_smoke.py",
            "cluster": "2 raylets on one machine (head: 1 CPU, second node: 2 CPUs), ray.cluster_utils.Cluster",
            "placement": placed, "nodes_used": int(placed.split()[2]), "steps": len(steps),
            "sampler_versions": [m["sampler_version"] for m in steps],
            "probe_gaps": [m["probe_gap"] for m in steps], "sync_ms": [1000 * m["time_sync"] for m in steps],
            "rewards": [m["reward_mean"] for m in steps], "wall_s": wall,
        }
        assert report["nodes_used"] == 2, placed
        assert all(g is not None and g <= 1e-3 for g in report["probe_gaps"]), report["probe_gaps"]
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        print(json.dumps(report, indent=1))
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
