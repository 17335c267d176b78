"""The GPU check: what rl-lora does on one CUDA GPU, as JSON. Needs only torch, transformers and peft (a bare CUDA
box); the vLLM and Ray parts run when those are installed and are skipped with a line when not.

Models are built from a config alone, with random weights (no download): SmolLM2-135M's shapes and Llama-3.2-1B's.
Random weights rarely sample EOS, so every completion runs to its length limit: throughput at a known length.

Reported per shape:
- the hf sampler's tokens/s at the default batch (8 prompts x 8 completions) with 24- and 512-token completions,
  and transformers `model.generate`'s on the same model, prompts and batch at the same forced length (its ratio);
- the learner, rank-1 LoRA vs FullFT, bf16 weights, AlgoConfig()'s defaults (micro-batches, compilation): step
  time (median of 3 after a warm-up, which compiles), peak CUDA memory (torch.cuda.max_memory_allocated while that
  learner alone is on the GPU), MFU against the device's bf16 dense peak (PEAK_BF16_DENSE_TFLOPS) and the LoRA /
  FullFT step-time ratio, on batches of the sampler's completions;
- with vLLM: its tokens/s serving a rank-1 adapter (LoRA slot) on the same prompts, the ratio to hf (target >= 3x),
  and the backend suite (tests/test_backends.py) run on this machine;
- with Ray: a 3-step run with a learner and a rollout worker sharing the GPU (ray.placement=colocated, 0.5 each).
Then a 5-step `rl-lora train` of a saved random-weight SmolLM2-135M-shape folder with model.device=auto: seconds per
step and the share of a step spent outside generate + learn (from the run's metrics.jsonl). `targets` lists issue
27's targets with what was measured and whether it passes (null on a CPU and with --smoke).

The JSON is written after every part, so a run stopped by a time limit keeps what it measured; --budget-s (default
420 s on a GPU) skips the parts that would start after it, each named under `skipped`. Order: the first shape, the
5-step run, then the other shapes; shapes and lengths in the order given (--shapes llama-3.2-1b,smollm2-135m
--lengths 512,24 measures 1B at 512 tokens first).

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
# bf16 dense tensor-core peak (no sparsity), TFLOP/s, by a substring of torch.cuda.get_device_name; first match wins.
# NVIDIA's datasheets: H100 SXM and H200 (SXM) 989, H100 PCIe 756, A100 312, L40S 362. NVL parts run at other
# clocks and are left out: an unknown device has no peak and no MFU.
PEAK_BF16_DENSE_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0}
PROMPTS = [f"Question {i}: what is {i * 7} + {i * 3}? Think step by step, then give the answer." for i in range(8)]
GROUP = 8  # completions per prompt: the default run's 8 x 8


STARTED = time.perf_counter()


def say(line: str) -> None:
    print(f"[{time.perf_counter() - STARTED:6.1f} s] {line}", flush=True)


def bf16_peak(device_name: str) -> dict:
    """The device's bf16 dense peak from PEAK_BF16_DENSE_TFLOPS, or nulls when it is not in the table."""
    key = None if "NVL" in device_name else next((k for k in PEAK_BF16_DENSE_TFLOPS if k in device_name), None)
    return {"device": device_name, "table_key": key, "bf16_dense_tflops": PEAK_BF16_DENSE_TFLOPS.get(key)}


class Budget:
    """Parts start while the budget lasts; one that would start after it is skipped and named in the report."""

    def __init__(self, seconds: float | None, skipped: list):
        self.seconds, self.skipped = seconds, skipped

    def left(self) -> float:
        return float("inf") if self.seconds is None else self.seconds - (time.perf_counter() - STARTED)

    def allows(self, part: str) -> bool:
        if self.left() > 0:
            return True
        self.skipped.append(part)
        say(f"{part}: skipped (--budget-s {self.seconds:.0f} spent)")
        return False


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


def build_model(shape: str, tokenizer, device: str, dtype, **overrides):
    """A random-weight Llama of `shape` (SHAPES), with `overrides` of its config (e.g. narrower layers)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**{**SHAPES[shape], **overrides}, vocab_size=len(tokenizer),
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
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
    """The hf sampler (or a vLLM engine) on the default batch. The warm-up is the same call: a decode path that
    captures or compiles per batch shape and length is timed as a run's later steps see it."""
    from rl_lora.types import SamplingParams

    device = getattr(backend, "device_name", "cpu")
    backend.generate(PROMPTS, GROUP, SamplingParams(0.7, tokens, seed=seed + 1))  # warm-up
    synchronize(device)
    start = time.perf_counter()
    groups = backend.generate(PROMPTS, GROUP, SamplingParams(0.7, tokens, seed=seed))
    synchronize(device)
    seconds = time.perf_counter() - start
    sampled = sum(len(c.token_ids) for g in groups for c in g)
    return {"completion_tokens": tokens, "completions": len(PROMPTS) * GROUP, "tokens_sampled": sampled,
            "seconds": seconds, "tokens_per_s": sampled / seconds}, groups


def generate_rate(model, tokenizer, tokens: int, eos_ids: list[int], pad_id: int, device: str) -> dict:
    """transformers `model.generate` on the hf sampler's batch: the same prompts, left-padded the same way, 8
    completions each (num_return_sequences), sampling at temperature 0.7 with no top-k/top-p, held to exactly
    `tokens` new tokens (min_new_tokens = max_new_tokens). A warm-up call first, on the same batch, up to 32 tokens
    (generate's dynamic cache captures nothing per length). Its time is the call alone (the hf sampler's also
    tokenizes the prompts and decodes the completions to text: a few ms)."""
    import torch

    from rl_lora.tokens import left_pad, tokenize_prompts

    ids, mask = left_pad([tuple(row) for row in tokenize_prompts(tokenizer, PROMPTS)], pad_id)
    ids, mask = ids.to(device), mask.to(device)
    options = dict(do_sample=True, temperature=0.7, top_k=0, top_p=1.0, num_return_sequences=GROUP,
                   eos_token_id=eos_ids, pad_token_id=pad_id)
    warm_up = min(tokens, 32)
    model.eval()
    with torch.no_grad():
        torch.manual_seed(1)
        model.generate(input_ids=ids, attention_mask=mask, min_new_tokens=warm_up, max_new_tokens=warm_up, **options)
        synchronize(device)
        torch.manual_seed(0)
        start = time.perf_counter()
        out = model.generate(input_ids=ids, attention_mask=mask, min_new_tokens=tokens, max_new_tokens=tokens,
                             **options)
        synchronize(device)
        seconds = time.perf_counter() - start
    generated = out.shape[0] * (out.shape[1] - ids.shape[1])
    return {"completion_tokens": tokens, "completions": out.shape[0], "tokens_generated": generated,
            "seconds": seconds, "tokens_per_s": generated / seconds}


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
    algo = AlgoConfig()
    learner = LocalLearner(model_factory(), lora, algo, lr=1e-4 if mode == "lora" else 1e-5, temperature=0.7)
    times = []
    for _ in range(steps + 1):
        synchronize(device)
        start = time.perf_counter()
        metrics = learner.step(batch)
        synchronize(device)
        times.append(time.perf_counter() - start)
    # What the learner reads: each prompt once per group, then every completion (real tokens, padding left out).
    prompt_tokens, completion_tokens = int(batch.prompt_mask.sum()), int(batch.completion_mask.sum())
    result = {"mode": mode, "trainable_params": learner.trainable_parameters,
              "step_s_median": statistics.median(times[1:]), "step_s_all": times,
              "peak_mb": peak_mb(device, before), "completion_tokens": max(len(c.token_ids) for g in groups for c in g),
              "completions": sum(len(g) for g in groups),
              "tokens": {"prompt_once_per_group": prompt_tokens, "completion": completion_tokens,
                         "total": prompt_tokens + completion_tokens},
              "algo": {key: getattr(algo, key) for key in ("micro_batch_size", "micro_batch_tokens",
                                                           "learner_memory_mb", "compile") if hasattr(algo, key)},
              "passes": getattr(metrics, "micro_batches", None)}  # forward/backward passes in the last step
    del learner
    reset_peak(device)
    return result


MFU_DEFINITION = ("FullFT 6 N tokens, LoRA 4 N tokens FLOPs per step / median step time / peak; N: the model's "
                  "parameters (tied embeddings once); tokens: the step's real tokens, each prompt once per group plus "
                  "every completion token (padding left out)")


def add_mfu(result: dict, parameters: int, peak_tflops: float | None) -> None:
    """FullFT: 6 N FLOPs per token (forward 2 N, backward 4 N: activation and weight gradients); LoRA: 4 N (no
    weight gradients for the frozen base; the rank-1 adapter's FLOPs are left out). The usual approximation: it
    leaves out attention's score FLOPs and counts the output head for prompt tokens, which the learner skips."""
    flops = (6 if result["mode"] == "full" else 4) * parameters * result["tokens"]["total"]
    result["flops_per_step"] = flops
    result["tflops_per_s"] = flops / result["step_s_median"] / 1e12
    result["mfu"] = result["tflops_per_s"] / peak_tflops if peak_tflops else None


def check_shape(shape: str, tokenizer, device: str, lengths: tuple[int, ...], steps: int, vllm: bool,
                report: dict, budget: Budget, save) -> None:
    """Fills report["shapes"][shape] part by part, saving after each."""
    import torch

    from rl_lora.sampling.hf import HFBackend

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    if not budget.allows(f"{shape}: everything"):
        return
    say(f"[{shape}] building a random-weight model ({dtype}) on {device}")
    sampler_model = build_model(shape, tokenizer, device, dtype)
    params = sum(p.numel() for p in sampler_model.parameters())
    entry: dict = {"parameters": params, "dtype": str(dtype).removeprefix("torch."), "hf_sampler": [],
                   "transformers_generate": [], "learner": [], "lora_over_full": []}
    report["shapes"][shape] = entry
    backend = HFBackend(sampler_model, tokenizer, batch_size=len(PROMPTS) * GROUP)
    backend.device_name = device
    entry["hf_decode"] = getattr(backend, "decode", None)  # the hf sampler's decode path, where it has a choice
    samples = {}
    for tokens in lengths:
        if not budget.allows(f"{shape}: samplers, {tokens}-token completions"):
            continue
        rate, samples[tokens] = sample_rate(backend, tokens)
        entry["hf_sampler"].append(rate)
        say(f"[{shape}] hf sampler, {tokens}-token completions: {rate['tokens_per_s']:,.0f} tokens/s")
        generate = generate_rate(sampler_model, tokenizer, tokens, backend.eos_ids, backend.pad_id, device)
        generate["hf_over_generate"] = rate["tokens_per_s"] / generate["tokens_per_s"]
        entry["transformers_generate"].append(generate)
        say(f"[{shape}] transformers generate, {tokens}-token completions: {generate['tokens_per_s']:,.0f} tokens/s "
            f"(hf sampler {generate['hf_over_generate']:.2f}x; target >= 3x)")
        save()
    del backend, sampler_model
    reset_peak(device)
    peak = report["peak"]["bf16_dense_tflops"]
    for tokens in samples:
        results = {}
        for mode in ("lora", "full"):
            if not budget.allows(f"{shape}: learner {mode}, {tokens}-token completions"):
                continue
            result = learner_step(lambda: build_model(shape, tokenizer, device, dtype), mode, samples[tokens],
                                  tokenizer.pad_token_id, device, steps)
            add_mfu(result, params, peak)
            entry["learner"].append(result)
            results[mode] = result
            memory = f", peak {result['peak_mb']:,.0f} MB" if result["peak_mb"] is not None else ""
            mfu = f", MFU {result['mfu']:.1%}" if result["mfu"] is not None else ""
            say(f"[{shape}] learner {mode}, {tokens}-token completions: {result['step_s_median']:.3f} s/step"
                f"{memory}{mfu}")
            save()
        if len(results) == 2:
            ratio = results["lora"]["step_s_median"] / results["full"]["step_s_median"]
            entry["lora_over_full"].append({"completion_tokens": tokens, "step_time_ratio": ratio})
            say(f"[{shape}] LoRA / FullFT step time, {tokens}-token completions: {ratio:.2f}")
            save()
    if vllm and budget.allows(f"{shape}: vLLM"):
        measured = tuple(rate["completion_tokens"] for rate in entry["hf_sampler"])
        entry["vllm"] = check_vllm(shape, tokenizer, device, measured, entry["hf_sampler"])
        save()


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


def auto_device_known() -> bool:
    """Whether this rl-lora takes model.device=auto (its default, or a documented choice)."""
    import dataclasses

    from rl_lora.config import ModelConfig

    field = next(f for f in dataclasses.fields(ModelConfig) if f.name == "device")
    return field.default == "auto" or "auto" in (field.metadata.get("choices") or ())


def run_train(shape: str, tokenizer, device: str, steps: int, scratch: Path, timeout: float) -> dict:
    """`rl-lora train` for `steps` steps on a saved random-weight `shape` folder, every setting at its default but
    the device (auto), the length of the run and a small evaluation. From metrics.jsonl: seconds per step
    (time_step: sampling, scoring, learning and the sync; the evaluations are outside it) and the share of the step
    outside generate + learn."""
    import torch

    from rl_lora.run.folder import RunFolder

    folder, runs = scratch / f"{shape}-model", scratch / "runs"
    build_model(shape, tokenizer, "cpu", torch.float32).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    device_setting = "auto" if auto_device_known() else device
    args = [sys.executable, "-m", "rl_lora.cli", "train", "--set", f"model.name={folder}",
            "--set", f"model.device={device_setting}", "--set", f"train.steps={steps}", "--set", "train.eval_every=0",
            "--set", "train.eval_size=8", "--set", "eval.max_new_tokens=8", "--set", f"train.runs_dir={runs}",
            "--set", "train.name=gpu-check"]
    say(f"[train] rl-lora train, {steps} steps of a random-weight {shape} folder, model.device={device_setting}")
    start = time.perf_counter()
    try:
        out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        exit_code, stdout, stderr = out.returncode, out.stdout, out.stderr
    except subprocess.TimeoutExpired as expired:
        exit_code, stdout, stderr = None, expired.stdout or "", f"timed out after {timeout:.0f} s"
        stdout = stdout.decode(errors="replace") if isinstance(stdout, bytes) else stdout
    run = RunFolder(runs / "gpu-check")
    records = run.metric_records() if run.path.is_dir() else []
    result = {"shape": shape, "model.device": device_setting, "exit_code": exit_code,
              "seconds": time.perf_counter() - start, "stdout_head": stdout.strip().splitlines()[:3],
              "steps": len(records),
              "error": stderr.strip().splitlines()[-1] if exit_code != 0 and stderr.strip() else None}
    if run.config_path.is_file():
        from rl_lora.config import to_dict

        result["config_model"] = to_dict(run.read_config())["model"]  # as given (auto stays auto)
    if records:
        per_step = [{"step": r["step"], "time_step": r["time_step"], "time_generate": r["time_generate"],
                     "time_learn": r["time_learn"], "time_sync": r["time_sync"], "time_score": r["time_score"],
                     "outside_generate_learn_s": r["time_step"] - r["time_generate"] - r["time_learn"]}
                    for r in records]
        for row in per_step:
            row["outside_share"] = row["outside_generate_learn_s"] / row["time_step"]
        result["per_step"] = per_step
        for key in ("time_step", "time_generate", "time_learn", "outside_generate_learn_s", "outside_share"):
            result[f"{key}_median"] = statistics.median(row[key] for row in per_step)
        result["s_per_step"] = result["time_step_median"]
        say(f"[train] {len(records)} steps, {result['s_per_step']:.2f} s/step (median), "
            f"{result['outside_share_median']:.0%} outside generate + learn; exit {exit_code} in "
            f"{result['seconds']:.0f} s")
    else:
        say(f"[train] no steps recorded: exit {exit_code}: {result['error']}")
    return result


def targets(report: dict) -> list[dict]:
    """Issue 27's targets: each with what was measured (null where that part did not run) and pass/fail (null on a
    CPU and with --smoke, where nothing is a GPU result)."""
    judged = not report["smoke"] and report["device"] != "cpu"
    shapes = report["shapes"]
    rows = []

    def target(name: str, where: str, measured, passes) -> None:
        rows.append({"target": name, "where": where, "measured": measured,
                     "pass": passes(measured) if judged and measured is not None else None})

    def learner(shape: str, tokens: int, mode: str, key: str):
        return next((r[key] for r in shapes.get(shape, {}).get("learner", [])
                     if r["completion_tokens"] == tokens and r["mode"] == mode), None)

    def ratio(shape: str, tokens: int):
        return next((r["step_time_ratio"] for r in shapes.get(shape, {}).get("lora_over_full", [])
                     if r["completion_tokens"] == tokens), None)

    target("LoRA / FullFT step time <= 0.7", "llama-3.2-1b, 512 tokens", ratio("llama-3.2-1b", 512),
           lambda v: v <= 0.7)
    for shape, entry in shapes.items():
        for row in entry.get("lora_over_full", []):
            target("LoRA / FullFT step time <= 1.0", f"{shape}, {row['completion_tokens']} tokens",
                   row["step_time_ratio"], lambda v: v <= 1.0)
    target("FullFT MFU >= 40 %", "llama-3.2-1b, 512 tokens", learner("llama-3.2-1b", 512, "full", "mfu"),
           lambda v: v >= 0.4)
    target("LoRA MFU >= 30 %", "llama-3.2-1b, 512 tokens", learner("llama-3.2-1b", 512, "lora", "mfu"),
           lambda v: v >= 0.3)
    target("LoRA learner step <= 0.15 s", "smollm2-135m, 24 tokens",
           learner("smollm2-135m", 24, "lora", "step_s_median"), lambda v: v <= 0.15)
    for shape, entry in shapes.items():
        for row in entry.get("transformers_generate", []):
            target("hf sampler >= 3x transformers generate (tokens/s)", f"{shape}, {row['completion_tokens']} tokens",
                   row["hf_over_generate"], lambda v: v >= 3.0)
    hf_1b = next((r["tokens_per_s"] for r in shapes.get("llama-3.2-1b", {}).get("hf_sampler", [])
                  if r["completion_tokens"] == 512), None)
    target("hf sampler >= 10,000 tokens/s", "llama-3.2-1b, 512 tokens", hf_1b, lambda v: v >= 10_000)
    train = report.get("train_run") or {}
    target("5-step rl-lora train <= 1.0 s/step (median time_step)",
           f"{train.get('shape', 'smollm2-135m')}, model.device={train.get('model.device', 'auto')}",
           train.get("s_per_step") if train.get("exit_code") == 0 else None, lambda v: v <= 1.0)
    return rows


def installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu with --smoke")
    parser.add_argument("--shapes", default="smollm2-135m,llama-3.2-1b",
                        help=f"comma-separated, of: {', '.join(s for s in SHAPES if s != 'smoke')}")
    parser.add_argument("--lengths", default="24,512", help="completion lengths to sample and learn from")
    parser.add_argument("--steps", type=int, default=3, help="timed learner steps per mode (after one warm-up)")
    parser.add_argument("--train-steps", type=int, default=5, help="steps of the rl-lora train run (0: no run)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="parts that would start after this many seconds are skipped (default: 420 on a GPU, "
                             "none with --smoke)")
    parser.add_argument("--tokenizer", help="a tokenizer folder (default: SmolLM2's if installed, else the vendored "
                                            "260K model's)")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes and lengths: the code path, not a result")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "gpu" / "gpu_check.json"))
    return parser.parse_args()


def main() -> int:
    args = parse_args()

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
    budget_s = args.budget_s if args.budget_s is not None else (None if args.smoke else 420.0)
    scratch = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    tokenizer, tokenizer_name = tokenizer_for(args.tokenizer or (str(FIXTURE_MODEL) if args.smoke else None), scratch)
    import peft
    import transformers

    has_vllm, has_ray = installed("vllm"), installed("ray")
    for name, present in (("vLLM", has_vllm), ("Ray", has_ray)):
        if not present:
            say(f"{name} is not installed: its part is skipped")
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    report = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix().split(str(ROOT) + "/")[-1], *sys.argv[1:]]),
        "smoke": args.smoke,
        "device": device_name,
        "peak": bf16_peak(device_name),
        "mfu_definition": MFU_DEFINITION,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "versions": {"torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
                     "peft": peft.__version__},
        "tokenizer": tokenizer_name, "vocab_size": len(tokenizer),
        "batch": {"prompts": len(PROMPTS), "completions_per_prompt": GROUP},
        "budget_s": budget_s, "skipped": [],
        "shapes": {},
    }
    budget = Budget(budget_s, report["skipped"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        report["targets"] = targets(report)
        report["seconds"] = time.perf_counter() - STARTED
        partial = out.with_name(out.name + ".partial")
        partial.write_text(json.dumps(report, indent=1) + "\n")
        partial.replace(out)  # a run stopped mid-write leaves the last whole report

    save()
    train_shape = "smoke" if args.smoke else "smollm2-135m"
    for index, shape in enumerate(shapes):
        check_shape(shape, tokenizer, args.device, lengths, steps, has_vllm, report, budget, save)
        if index == 0 and args.train_steps and budget.allows("rl-lora train run"):
            report["train_run"] = run_train(train_shape, tokenizer, args.device, args.train_steps, scratch,
                                            timeout=min(budget.left(), 600))
            save()
    if has_vllm and not args.smoke and budget.allows("backend suite"):
        report["backend_suite"] = run_backend_suite()
        save()
    if has_ray and not args.smoke and budget.allows("Ray colocated run"):
        with tempfile.TemporaryDirectory() as runs:
            report["ray_colocated"] = run_ray_colocated(args.device, runs)
        save()
    if args.smoke:
        say("--smoke: the backend suite and the Ray run are left out (CI runs them in the test suite)")
    save()
    say_targets(report["targets"])
    say(f"wrote {out} ({report['seconds']:.0f} s)")
    return 0


def say_targets(rows: list[dict]) -> None:
    judged = [t for t in rows if t["pass"] is not None]
    say(f"targets: {sum(t['pass'] for t in judged)} of {len(judged)} judged pass"
        + ("" if judged else " (none judged: not a GPU result)"))
    for t in judged:
        say(f"  {'pass' if t['pass'] else 'FAIL'}  {t['target']} ({t['where']}): {t['measured']:.3g}")


if __name__ == "__main__":
    sys.exit(main())
