"""ATen ops dispatched by one default learner step and by the hf sampler per token: a CPU proxy for GPU kernel
launches (on a GPU, each dispatched op is about one launch; at the default batch a launch-bound step's time is its
op count times the launch cost, so this number falls when launches do).

The model is SmolLM2-135M's shape with random weights (scripts/gpu_check.py's build_model, SmolLM2's vendored
tokenizer; fp32, as model.dtype's default on a CPU); the batch is the default run's: 8 arithmetic prompts (rendered
as `rl-lora train` renders them) x 8 completions x 24 tokens, sampled by the hf sampler (random weights rarely sample
EOS, so every completion has 24 tokens). Each learner (rank-1 LoRA, FullFT) takes one uncounted warm-up step, then
one counted step, under AlgoConfig() and under explicit micro-batch settings (8 completions per pass, and all 64 in
one pass), so a change of the default shows beside both.

Counted with a TorchDispatchMode: every op that reaches the dispatcher below autograd, so composite ops count as
the ops they decompose into, and the backward pass's ops count too. The optimizer counts as the learner builds it:
torch's default AdamW on CPU tensors runs a per-tensor loop (foreach is a CUDA default), ~12 ops and one .item() per
parameter tensor (420 for the rank-1 LoRA), where a fused AdamW dispatches a few ops in all. `host_syncs` counts
.item()/.tolist() reads (aten._local_scalar_dense): on a GPU each one that reads a CUDA tensor waits for the queue.

    python scripts/count_ops.py                 # writes benchmarks/count_ops.json
    python scripts/count_ops.py --out /tmp/x.json --modes lora
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_check  # noqa: E402  (build_model, tokenizer_for: the same random-weight shapes as the GPU check)

PROMPTS, GROUP, TOKENS = 8, 8, 24  # the default run: rollout.prompts_per_step, group_size, max_new_tokens
TOP = 15
NARROW = ("hidden_size", "intermediate_size")  # --narrow divides these by 8 (SmolLM2: head_dim 64 -> 8)


class OpCounter(TorchDispatchMode):
    """Counts every ATen op dispatched while active (by overload packet: aten.mm, aten.add, ...)."""

    def __init__(self):
        super().__init__()
        self.counts: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def counted(fn) -> tuple[collections.Counter, float, object]:
    """fn()'s ops, its seconds and what it returned."""
    start = time.perf_counter()
    with OpCounter() as counter:
        value = fn()
    return counter.counts, time.perf_counter() - start, value


def summary(counts: collections.Counter) -> dict:
    return {"total": sum(counts.values()),
            "host_syncs": counts.get("aten._local_scalar_dense", 0),
            "top": dict(counts.most_common(TOP))}


def arithmetic_prompts(tokenizer) -> list[str]:
    from envs.render import PromptRenderer
    from rl_lora.config import TaskConfig
    from rl_lora.tasks import load_task

    task, renderer = load_task(TaskConfig()), PromptRenderer(tokenizer, TaskConfig().render)
    return [renderer(sample) for sample in task.train[:PROMPTS]]


def algo_variants() -> dict:
    """AlgoConfig() as it is today, and explicit micro-batch settings (tolerant to fields changing: a variant whose
    fields are not there is left out with a note)."""
    from rl_lora.config import AlgoConfig

    default = AlgoConfig()
    variants = {"default": default}
    fields = {f.name for f in dataclasses.fields(AlgoConfig)}
    for name, rows in (("micro_batch_size=8", 8), ("micro_batch_size=64", PROMPTS * GROUP)):
        changes = {"micro_batch_size": rows}
        if "micro_batch_tokens" in fields:
            changes["micro_batch_tokens"] = None  # by rows, not by tokens
        if set(changes) <= fields:
            variants[name] = dataclasses.replace(default, **changes)
    # The default's cut under a GPU's budget (an H200 has ~110 GB free: 80 % of it is more than this): one pass.
    if "learner_memory_mb" in fields:
        variants["learner_memory_mb=60000"] = dataclasses.replace(default, learner_memory_mb=60000.0)
    return variants


def micro_batch_fields(algo) -> dict:
    return {key: getattr(algo, key) for key in ("micro_batch_size", "micro_batch_tokens") if hasattr(algo, key)}


def sampler_counts(backend, prompts: list[str]) -> tuple[dict, list]:
    """The same call a default step makes (64 completions in one batch), counted per sampled token."""
    from rl_lora.types import SamplingParams

    backend.generate(prompts[:2], 2, SamplingParams(0.7, 4, seed=0))  # warm-up
    groups = []
    counts, seconds, _ = counted(lambda: groups.extend(backend.generate(prompts, GROUP,
                                                                        SamplingParams(0.7, TOKENS, seed=0))))
    sampled = sum(len(c.token_ids) for g in groups for c in g)
    sampler = {"completions": PROMPTS * GROUP, "completion_tokens": TOKENS, "tokens_sampled": sampled,
               "decode": getattr(backend, "decode", None), "seconds": seconds, **summary(counts),
               "ops_per_token": sum(counts.values()) / sampled,
               "ops_per_decode_step": sum(counts.values()) / TOKENS}
    print(f"hf sampler, {PROMPTS * GROUP} x {TOKENS} tokens: {sampler['total']:,} ops, "
          f"{sampler['ops_per_token']:.1f} per token ({sampler['ops_per_decode_step']:,.0f} per decode step), "
          f"{seconds:.1f} s", flush=True)
    return sampler, groups


def learner_counts(model_factory, mode: str, algo, batch) -> dict:
    from rl_lora.config import LoraConfig, TrainMode
    from rl_lora.policy.learner import LocalLearner

    learner = LocalLearner(model_factory(), LoraConfig(mode=TrainMode(mode), rank=1), algo,
                           lr=1e-4 if mode == "lora" else 1e-5, temperature=0.7)
    start = time.perf_counter()
    # Warm-up, uncounted: lazy initialisation (AdamW's state) is not part of a step. Micro-batches sized by memory
    # are sized from what earlier passes measured: the same batch, as in a run. Fixed ones need one group only.
    sized_by_memory = all(getattr(algo, key, 0) is None for key in ("micro_batch_size", "micro_batch_tokens"))
    learner.step(batch if sized_by_memory else batch.select(0, GROUP))
    warm_up_s = time.perf_counter() - start
    counts, seconds, metrics = counted(lambda: learner.step(batch))
    return {"mode": mode, **micro_batch_fields(algo), "passes": getattr(metrics, "micro_batches", None),
            "warm_up_s": warm_up_s, "counted_step_s": seconds, **summary(counts)}


def git_state() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    # Uncommitted changes to the package when the count starts: the numbers are those of HEAD plus these.
    return {"commit": git("rev-parse", "HEAD"), "uncommitted_in_rl_lora": git("status", "--porcelain", "--",
                                                                               "rl_lora").splitlines()}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="lora,full", help="learners to count: lora, full or both")
    parser.add_argument("--variants", default="default,learner_memory_mb=60000,micro_batch_size=8,micro_batch_size=64",
                        help="AlgoConfig variants to count (comma-separated)")
    parser.add_argument("--shape", default="smollm2-135m", choices=[s for s in gpu_check.SHAPES])
    parser.add_argument("--narrow", action="store_true",
                        help=f"the shape's layers, heads and vocabulary at 1/8 its width ({NARROW}): the same op "
                             "counts in a fraction of the time, while micro-batches are a fixed number of rows "
                             "(sized by memory, they would differ)")
    parser.add_argument("--tokenizer", help="a tokenizer folder (default: SmolLM2's, vendored); a small vocabulary "
                                            "changes the counts (the head's chunks) but makes a quick check")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "count_ops.json"))
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from rl_lora.sampling.hf import HFBackend
    from rl_lora.step.advantages import build_rollouts
    from rl_lora.types import collate

    started, git = time.perf_counter(), git_state()  # the code counted: as it is when the count starts
    scratch = Path(tempfile.mkdtemp(prefix="count-ops-"))
    tokenizer, tokenizer_name = gpu_check.tokenizer_for(args.tokenizer, scratch)
    prompts = arithmetic_prompts(tokenizer)

    widths = {key: gpu_check.SHAPES[args.shape][key] // 8 for key in NARROW} if args.narrow else {}

    def model_factory():
        return gpu_check.build_model(args.shape, tokenizer, "cpu", torch.float32, **widths)

    backend = HFBackend(model_factory(), tokenizer, batch_size=PROMPTS * GROUP)
    sampler, groups = sampler_counts(backend, prompts)
    parameters = sum(p.numel() for p in backend.model.parameters())
    del backend

    rewards = [float(i % 2) for i in range(PROMPTS * GROUP)]  # half right: every group has signal
    batch = collate(build_rollouts([str(i) for i in range(PROMPTS)], groups, rewards, "group_mean", False),
                    tokenizer.pad_token_id)
    variants = algo_variants()
    learner = []
    for name in [v.strip() for v in args.variants.split(",")]:
        if name not in variants:
            print(f"variant {name}: not expressible with this AlgoConfig, left out", flush=True)
            continue
        for mode in [m.strip() for m in args.modes.split(",")]:
            same = next((r for r in learner if r["mode"] == mode and variants[r["variant"]] == variants[name]), None)
            if same:  # the same AlgoConfig as a variant already counted (today: the default is 8 rows a pass)
                learner.append({**same, "variant": name, "same_as": same["variant"]})
                print(f"learner {mode:4} {name:20} = {same['variant']}", flush=True)
                continue
            result = {"variant": name, **learner_counts(model_factory, mode, variants[name], batch)}
            learner.append(result)
            print(f"learner {mode:4} {name:20} {result['total']:>9,} ops ({result['host_syncs']} host syncs, "
                  f"{result['passes']} passes), counted step {result['counted_step_s']:.1f} s", flush=True)

    report = {
        "command": "python " + " ".join(["scripts/count_ops.py", *sys.argv[1:]]),
        "what": "ATen ops dispatched (TorchDispatchMode, below autograd: backward included) in one learner step "
                "after one uncounted warm-up step, and in one hf sampler call; CPU, fp32",
        "git": git,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {torch.get_num_threads()} threads",
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__,
                     "peft": __import__("peft").__version__},
        "model": {"shape": args.shape, "widths": widths or "the shape's own", "dtype": "float32",
                  "weights": "random (gpu_check.build_model)", "parameters": parameters},
        "tokenizer": tokenizer_name,
        "batch": {"prompts": PROMPTS, "completions_per_prompt": GROUP, "completion_tokens": TOKENS,
                  "prompt_tokens": [int(n) for n in batch.prompt_mask.sum(1).tolist()],
                  "task": "arithmetic (TaskConfig() defaults), rendered with the chat template"},
        "algo_default": micro_batch_fields(variants["default"]),
        "sampler": sampler,
        "learner": learner,
        "seconds": time.perf_counter() - started,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print_table(learner, sampler)
    print(f"wrote {out} ({report['seconds']:.0f} s)")
    return 0


def print_table(learner: list[dict], sampler: dict) -> None:
    print(f"\n{'learner':8} {'variant':20} {'ops':>9} {'syncs':>6} {'passes':>6}")
    for r in learner:
        print(f"{r['mode']:8} {r['variant']:20} {r['total']:>9,} {r['host_syncs']:>6} {str(r.get('passes')):>6}")
    print(f"{'sampler':8} {'per token':20} {sampler['ops_per_token']:>9,.1f}")


if __name__ == "__main__":
    sys.exit(main())
