"""In-process sampling on SmolLM2-135M when the sampler shares the learner's model (rollout.num_workers=0, the
default): one RL step's rollouts (8 prompts x 8 completions, up to 24 tokens, the default run's shape) with a
tiny:13 adapter whose B is a `parametrize`d function of its 13 numbers, recomputed on every weight access unless
`sample` runs under `parametrize.cached()` (it does: rl_lora/sampling/hf.py). Both ways side by side, alternating,
and rank-1 LoRA beside them as the reference; medians over --repeats.

    .venv/bin/python scripts/bench_tiny_sampling.py    # writes benchmarks/tiny_sampling.json
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "tiny_sampling.json")
    args = parser.parse_args()
    import torch

    from envs.render import PromptRenderer
    from rl_lora.config import load_config
    from rl_lora.models import load_causal_lm, load_tokenizer
    from rl_lora.policy.learner import LocalLearner
    from rl_lora.sampling import hf
    from rl_lora.sampling.hf import HFBackend
    from rl_lora.tasks import load_task
    from rl_lora.types import SamplingParams

    base = load_config(None, [])
    tokenizer = load_tokenizer(base.model.name)
    task = load_task(base.task)
    render = PromptRenderer(tokenizer)
    prompts = [render(sample) for sample in task.train[:base.rollout.prompts_per_step]]
    sampling = SamplingParams(base.rollout.temperature, base.rollout.max_new_tokens, seed=0)
    cached = hf.sample
    uncached = torch.no_grad()(hf.sample.__wrapped__.__wrapped__)  # the same loop without parametrize.cached()

    def backend(arm: list[str]) -> HFBackend:
        config = load_config(None, arm)
        learner = LocalLearner(load_causal_lm(config.model.name), config.lora, config.algo, lr=1e-2)
        with torch.no_grad():  # a trained adapter, not B = 0: every module's B is really computed from v
            for parameter in learner.model.parameters():
                if parameter.requires_grad:
                    parameter.normal_(0, 1e-3)
        return HFBackend(learner.model, tokenizer, shares_learner_model=True)

    def timed(sampler: HFBackend) -> float:
        started = time.perf_counter()
        sampler.generate(prompts, base.rollout.group_size, sampling)
        return time.perf_counter() - started

    tiny, lora = backend(["lora.adapter=tiny", "lora.tiny_params=13"]), backend(["lora.rank=1"])
    times: dict[str, list[float]] = {"tiny13_cached": [], "tiny13_per_token": [], "lora_r1": []}
    timed(tiny)  # warm-up
    for _ in range(args.repeats):
        times["tiny13_cached"].append(timed(tiny))
        hf.sample = uncached
        try:
            times["tiny13_per_token"].append(timed(tiny))
        finally:
            hf.sample = cached
        times["lora_r1"].append(timed(lora))
        print({k: round(v[-1], 2) for k, v in times.items()}, flush=True)
    medians = {k: statistics.median(v) for k, v in times.items()}
    result = {"command": "python scripts/bench_tiny_sampling.py", "model": base.model.name,
              "rollouts": f"{len(prompts)} prompts x {base.rollout.group_size}, up to {sampling.max_new_tokens} tokens",
              "threads": torch.get_num_threads(), "seconds": times, "median_s": medians,
              "per_token_over_cached": medians["tiny13_per_token"] / medians["tiny13_cached"],
              "tiny13_cached_over_lora_r1": medians["tiny13_cached"] / medians["lora_r1"]}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
