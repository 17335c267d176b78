"""bf16 FullFT against fp32 FullFT on SmolLM2-135M, and what plain bf16 AdamW would have done.

1. Two real runs of the default task, FullFT at the default LR (1e-5), same seed, `train.steps` steps each:
   model.dtype=float32 and model.dtype=bfloat16 (fp32 master weights, bf16 compute and sampling). Their per-step
   loss and reward, side by side.
2. The learner alone on one real batch of the default task (sampled by the fp32 model): after each of the same
   number of steps, how many of the bf16 weights the sampler receives have moved, with fp32 masters and with plain
   bf16 AdamW (AdamW on the bf16 weights themselves, what the learner did before masters).

    .venv/bin/python scripts/bench_mixed_precision.py          # writes benchmarks/mixed_precision.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CLI = [sys.executable, "-m", "rl_lora.cli"]


def run(dtype: str, steps: int, eval_size: int, work: Path) -> dict:
    started = time.perf_counter()
    settings = ["lora.mode=full", f"model.dtype={dtype}", f"train.steps={steps}", "train.eval_every=0",
                f"train.eval_size={eval_size}", f"train.name={dtype}", f"train.runs_dir={work}"]
    subprocess.run(CLI + ["train", *[arg for s in settings for arg in ("--set", s)]], check=True,
                   capture_output=True, text=True)
    metrics = [json.loads(line) for line in (work / dtype / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((work / dtype / "summary.json").read_text())
    return {"seconds": time.perf_counter() - started, "loss": [m["loss"] for m in metrics],
            "reward": [m["reward_mean"] for m in metrics], "sampler_kl": [m["sampler_kl"] for m in metrics],
            "base_accuracy": summary["base_accuracy"], "final_accuracy": summary["final_accuracy"]}


def weights_moved(steps: int) -> dict:
    """Counts of bf16 weights changed from the start, after each step: masters vs plain bf16 AdamW."""
    import torch

    from envs.render import PromptRenderer
    from rl_lora.config import AlgoConfig, LoraConfig, RunConfig, TrainMode
    from rl_lora.models import load_causal_lm, load_tokenizer
    from rl_lora.policy.learner import LocalLearner
    from rl_lora.sampling.hf import HFBackend
    from rl_lora.step.advantages import build_rollouts
    from rl_lora.tasks import load_task
    from rl_lora.types import SamplingParams, collate

    config = RunConfig()
    tokenizer = load_tokenizer(config.model.name)
    samples = load_task(config.task).train[:config.rollout.prompts_per_step]
    renderer = PromptRenderer(tokenizer, config.task.render, config.task.system_prompt)
    sampler = HFBackend(load_causal_lm(config.model.name), tokenizer)
    groups = sampler.generate([renderer(s) for s in samples], config.rollout.group_size,
                              SamplingParams(config.rollout.temperature, config.rollout.max_new_tokens, seed=0))
    rewards = [float(i % 3 == 0) for i in range(sum(len(g) for g in groups))]  # signal in every group
    batch = collate(build_rollouts([s.id for s in samples], groups, rewards, "group_mean", False), sampler.pad_id)
    del sampler
    result = {}
    for name in ("masters", "plain_bf16_adamw"):
        learner = LocalLearner(load_causal_lm(config.model.name, "bfloat16"), LoraConfig(mode=TrainMode.FULL),
                               AlgoConfig(), lr=config.algo.full_lr)
        if name == "plain_bf16_adamw":
            learner.master = None
            learner.optimizer = torch.optim.AdamW(learner.params, lr=config.algo.full_lr, weight_decay=0.0)
        before = {k: v.clone() for k, v in learner.export_update().tensors.items()}
        total = sum(v.numel() for v in before.values())
        counts = []
        for _ in range(steps):
            learner.step(batch)
            after = learner.export_update().tensors
            counts.append(sum(int((after[k] != before[k]).sum()) for k in before))
        result[name] = {"moved_after_each_step": counts, "fraction_moved": [c / total for c in counts]}
        result["weights"] = total
        del learner
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--eval-size", type=int, default=50, help="test problems before and after each run")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "mixed_precision.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-mixed-"))
    runs = {dtype: run(dtype, args.steps, args.eval_size, work) for dtype in ("float32", "bfloat16")}
    for dtype, r in runs.items():
        print(f"{dtype}: loss {[round(x, 4) for x in r['loss']]}, reward {[round(x, 3) for x in r['reward']]}, "
              f"{r['seconds']:.0f} s", flush=True)
    fp32, bf16 = runs["float32"], runs["bfloat16"]
    moved = weights_moved(args.steps)
    report = {
        "command": "python scripts/bench_mixed_precision.py " + " ".join(sys.argv[1:]),
        "runs": runs,
        "max_abs_difference": {key: max(abs(a - b) for a, b in zip(fp32[key], bf16[key]))
                               for key in ("loss", "reward")},
        "weights_moved_bf16": moved,
    }
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("max_abs_difference",)}),
          {name: v["fraction_moved"] for name, v in moved.items() if name != "weights"}, f"-> {args.out}")


if __name__ == "__main__":
    main()
