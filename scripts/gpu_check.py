"""The GPU check: what rl-lora does on one CUDA GPU, as JSON. Needs only torch, transformers and peft (a bare CUDA
box); the vLLM and Ray parts run when those are installed and are skipped with a line when not.

Models are built from a config alone, with random weights (no download): SmolLM2-135M's shapes and Llama-3.2-1B's.
Random weights rarely sample EOS, so every completion runs to its length limit: throughput at a known length.

Reported per shape:
- the hf sampler's tokens/s at the default batch (8 prompts x 8 completions) with 24- and 512-token completions;
- the learner, rank-1 LoRA vs FullFT, bf16 weights: step time (median of 3 after a warm-up) and peak CUDA memory
  (torch.cuda.max_memory_allocated while that learner alone is on the GPU), on batches of the sampler's completions;
- with vLLM: its tokens/s serving a rank-1 adapter (LoRA slot) on the same prompts, the ratio to hf (target >= 3x),
  and the backend suite (tests/test_backends.py) run on this machine;
- with Ray: a 3-step run with a learner and a rollout worker sharing the GPU (ray.placement=colocated, 0.5 each).

    python scripts/gpu_check.py                          # one CUDA GPU; writes benchmarks/gpu/gpu_check.json
    python scripts/gpu_check.py --shapes smollm2-135m    # the small shape only
    python scripts/gpu_check.py --device cpu --smoke     # the code path on a CPU, tiny shapes (CI): no GPU result
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FIXTURES = ROOT / "tests" / "fixtures" / "models"
FIXTURE_MODEL = FIXTURES / "stories260K" / "hf"  # a real 260K Llama with its own 512-token vocabulary
SMOLLM2_TOKENIZER = FIXTURES / "smollm2-tokenizer"  # SmolLM2's tokenizer, vendored (tests/fixtures/README.md)

# The vocabulary is the tokenizer's (vLLM cannot detokenize ids past it): SmolLM2's 49,152 by default, so
# llama-3.2-1b has Llama-3.2-1B's body with a 49,152-row embedding (~1.0B parameters instead of 1.24B).
SHAPES = {
    # HuggingFaceTB/SmolLM2-135M-Instruct's config.json
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                         rope_theta=100000.0, tie_word_embeddings=True, rms_norm_eps=1e-5),
    # meta-llama/Llama-3.2-1B's config.json (rope scaling left out: it changes no shapes)
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                         rope_theta=500000.0, tie_word_embeddings=True, rms_norm_eps=1e-5),
    # --smoke: the code path in seconds (head_dim 32, as vLLM's CPU attention needs)
    "smoke": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                  tie_word_embeddings=False),
}
PROMPTS = [f"Question {i}: what is {i * 7} + {i * 3}? Think step by step, then give the answer." for i in range(8)]
GROUP = 8  # completions per prompt: the default run's 8 x 8


def say(line: str) -> None:
    print(line, flush=True)


def tokenizer_for(path: str | None, unpack_to: Path):
    """`path`, or SmolLM2's tokenizer (vendored gzipped; unpacked into `unpack_to`)."""
    import gzip
    import shutil

    from transformers import AutoTokenizer

    from rl_lora.models import for_generation, load_tokenizer

    if path:
        return load_tokenizer(path), path
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(SMOLLM2_TOKENIZER / name, unpack_to / name)
    (unpack_to / "tokenizer.json").write_bytes(gzip.decompress((SMOLLM2_TOKENIZER / "tokenizer.json.gz").read_bytes()))
    return for_generation(AutoTokenizer.from_pretrained(unpack_to)), str(SMOLLM2_TOKENIZER.relative_to(ROOT))


def build_model(shape: str, tokenizer, device: str, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**SHAPES[shape], vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    return model


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> int:
    import torch

    if not device.startswith("cuda"):
        return 0
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def peak_mb(device: str, before: int) -> float | None:
    import torch

    return (torch.cuda.max_memory_allocated() - before) / 2**20 if device.startswith("cuda") else None


def sample_rate(backend, tokens: int, seed: int = 0) -> tuple[dict, list]:
    from rl_lora.types import SamplingParams

    backend.generate(PROMPTS[:2], 2, SamplingParams(0.7, 4, seed=seed))  # warm-up: kernels, allocator
    synchronize(getattr(backend, "device_name", "cpu"))
    start = time.perf_counter()
    groups = backend.generate(PROMPTS, GROUP, SamplingParams(0.7, tokens, seed=seed))
    synchronize(getattr(backend, "device_name", "cpu"))
    seconds = time.perf_counter() - start
    sampled = sum(len(c.token_ids) for g in groups for c in g)
    return {"completion_tokens": tokens, "completions": len(PROMPTS) * GROUP, "tokens_sampled": sampled,
            "seconds": seconds, "tokens_per_s": sampled / seconds}, groups


def learner_step(model_factory, mode: str, groups, pad_id: int, device: str, steps: int) -> dict:
    from rl_lora.config import AlgoConfig, LoraConfig, TrainMode
    from rl_lora.policy.learner import LocalLearner
    from rl_lora.step.advantages import build_rollouts
    from rl_lora.types import collate

    rewards = [float(i % 2) for i in range(sum(len(g) for g in groups))]  # half right: every group has signal
    batch = collate(build_rollouts([str(i) for i in range(len(groups))], groups, rewards, "group_mean", False),
                    pad_id)
    before = reset_peak(device)
    lora = LoraConfig(mode=TrainMode(mode), rank=1)
    learner = LocalLearner(model_factory(), lora, AlgoConfig(), lr=1e-4 if mode == "lora" else 1e-5,
                           temperature=0.7)
    times = []
    for _ in range(steps + 1):
        synchronize(device)
        start = time.perf_counter()
        learner.step(batch)
        synchronize(device)
        times.append(time.perf_counter() - start)
    result = {"mode": mode, "trainable_params": learner.trainable_parameters,
              "step_s_median": statistics.median(times[1:]), "step_s_all": times,
              "peak_mb": peak_mb(device, before), "completion_tokens": max(len(c.token_ids) for g in groups for c in g),
              "completions": sum(len(g) for g in groups)}
    del learner
    reset_peak(device)
    return result


def check_shape(shape: str, tokenizer, device: str, lengths: tuple[int, ...], steps: int, vllm: bool) -> dict:
    import torch

    from rl_lora.sampling.hf import HFBackend

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    say(f"[{shape}] building a random-weight model ({dtype}) on {device}")
    sampler_model = build_model(shape, tokenizer, device, dtype)
    params = sum(p.numel() for p in sampler_model.parameters())
    report: dict = {"parameters": params, "dtype": str(dtype).removeprefix("torch."), "hf_sampler": [], "learner": []}
    backend = HFBackend(sampler_model, tokenizer, batch_size=len(PROMPTS) * GROUP)
    backend.device_name = device
    samples = {}
    for tokens in lengths:
        rate, samples[tokens] = sample_rate(backend, tokens)
        report["hf_sampler"].append(rate)
        say(f"[{shape}] hf sampler, {tokens}-token completions: {rate['tokens_per_s']:,.0f} tokens/s")
    del backend, sampler_model
    reset_peak(device)
    for tokens in lengths:
        for mode in ("lora", "full"):
            result = learner_step(lambda: build_model(shape, tokenizer, device, dtype), mode, samples[tokens],
                                  tokenizer.pad_token_id, device, steps)
            report["learner"].append(result)
            memory = f", peak {result['peak_mb']:,.0f} MB" if result["peak_mb"] is not None else ""
            say(f"[{shape}] learner {mode}, {tokens}-token completions: {result['step_s_median']:.2f} s/step{memory}")
    if vllm:
        report["vllm"] = check_vllm(shape, tokenizer, device, lengths, report["hf_sampler"])
    return report


def check_vllm(shape: str, tokenizer, device: str, lengths: tuple[int, ...], hf_rates: list[dict]) -> dict:
    """vLLM serving a rank-1 adapter (B perturbed: a real adapter, not B = 0) from a LoRA slot."""
    import torch

    from rl_lora.config import AlgoConfig, LoraConfig
    from rl_lora.policy.learner import LocalLearner
    from rl_lora.sampling.vllm import VLLMBackend

    dtype = "bfloat16" if device.startswith("cuda") else "float32"
    with tempfile.TemporaryDirectory() as folder:
        model = build_model(shape, tokenizer, "cpu", getattr(torch, dtype))
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        learner = LocalLearner(model, LoraConfig(rank=1), AlgoConfig(), lr=1e-4)
        with torch.no_grad():
            for parameter in learner.params:
                parameter.add_(torch.randn_like(parameter) * 0.01)
        learner.version += 1
        engine = VLLMBackend(folder, tokenizer, dtype=dtype, device=device, serve="lora",
                             max_model_len=max(lengths) + 128, gpu_memory_utilization=0.5 if device != "cpu" else None)
        engine.device_name = device
        engine.load_update(learner.export_update())
        rates = []
        for tokens, hf in zip(lengths, hf_rates):
            rate, _ = sample_rate(engine, tokens)
            rate["ratio_to_hf"] = rate["tokens_per_s"] / hf["tokens_per_s"]
            rates.append(rate)
            say(f"[{shape}] vLLM rank-1 adapter, {tokens}-token completions: {rate['tokens_per_s']:,.0f} tokens/s "
                f"({rate['ratio_to_hf']:.1f}x hf; target >= 3x)")
        del engine
    return {"serve": "lora", "rank": 1, "rates": rates}


def run_backend_suite() -> dict:
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_backends.py"],
                         cwd=ROOT, capture_output=True, text=True)
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-500:]
    say(f"backend suite: {summary}")
    return {"exit_code": out.returncode, "summary": summary}


def run_ray_colocated(device: str, runs_dir: str) -> dict:
    """A learner and a rollout worker on one GPU (0.5 each), 3 steps of the vendored real 260K model."""
    args = [sys.executable, "-m", "rl_lora.cli", "train", "--set", f"model.name={FIXTURE_MODEL}",
            "--set", f"model.device={device}", "--set", "rollout.num_workers=1", "--set", "ray.placement=colocated",
            "--set", "ray.worker_cpus=1", "--set", "ray.learner_cpus=1", "--set", "train.steps=3",
            "--set", "train.eval_size=8", "--set", "eval.max_new_tokens=8", "--set", f"train.runs_dir={runs_dir}",
            "--set", "train.name=ray-colocated"]
    if device.startswith("cuda"):
        args += ["--set", "ray.worker_gpus=0.5", "--set", "ray.learner_gpus=0.5"]
    start = time.perf_counter()
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    result = {"exit_code": out.returncode, "seconds": time.perf_counter() - start,
              "step_lines": [line for line in out.stdout.splitlines() if line.startswith("step ")],
              "error": out.stderr.strip().splitlines()[-1] if out.returncode and out.stderr.strip() else None}
    say(f"Ray colocated run: exit {out.returncode} in {result['seconds']:.0f} s")
    return result


def installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu with --smoke")
    parser.add_argument("--shapes", default="smollm2-135m,llama-3.2-1b",
                        help=f"comma-separated, of: {', '.join(s for s in SHAPES if s != 'smoke')}")
    parser.add_argument("--lengths", default="24,512", help="completion lengths to sample and learn from")
    parser.add_argument("--steps", type=int, default=3, help="timed learner steps per mode (after one warm-up)")
    parser.add_argument("--tokenizer", help="a tokenizer folder (default: SmolLM2's if installed, else the vendored "
                                            "260K model's)")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes and lengths: the code path, not a result")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "gpu" / "gpu_check.json"))
    args = parser.parse_args()

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"--device {args.device}: torch {torch.__version__} sees no CUDA GPU on this machine (run it on one; "
              "--device cpu --smoke checks the code path)", file=sys.stderr)
        return 2
    if args.device == "cpu" and not args.smoke:
        print("--device cpu measures nothing about GPUs: add --smoke to check the code path", file=sys.stderr)
        return 2
    shapes = ["smoke"] if args.smoke else [s.strip() for s in args.shapes.split(",")]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        print(f"--shapes: unknown {', '.join(unknown)}; known: {', '.join(SHAPES)}", file=sys.stderr)
        return 2
    lengths = (8, 16) if args.smoke else tuple(int(n) for n in args.lengths.split(","))
    steps = 1 if args.smoke else args.steps
    scratch = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    tokenizer, tokenizer_name = tokenizer_for(args.tokenizer or (str(FIXTURE_MODEL) if args.smoke else None), scratch)
    import peft
    import transformers

    has_vllm, has_ray = installed("vllm"), installed("ray")
    for name, present in (("vLLM", has_vllm), ("Ray", has_ray)):
        if not present:
            say(f"{name} is not installed: its part is skipped")
    started = time.perf_counter()
    report = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix().split(str(ROOT) + "/")[-1], *sys.argv[1:]]),
        "smoke": args.smoke,
        "device": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu",
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "versions": {"torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
                     "peft": peft.__version__},
        "tokenizer": tokenizer_name, "vocab_size": len(tokenizer),
        "batch": {"prompts": len(PROMPTS), "completions_per_prompt": GROUP},
        "shapes": {},
    }
    for shape in shapes:
        report["shapes"][shape] = check_shape(shape, tokenizer, args.device, lengths, steps, has_vllm)
    if has_vllm and not args.smoke:
        report["backend_suite"] = run_backend_suite()
    if has_ray and not args.smoke:
        with tempfile.TemporaryDirectory() as runs:
            report["ray_colocated"] = run_ray_colocated(args.device, runs)
    if args.smoke:
        say("--smoke: the backend suite and the Ray run are left out (CI runs them in the test suite)")
    report["seconds"] = time.perf_counter() - started
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    say(f"wrote {out} ({report['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
