"""rl-lora beside TRL's GRPOTrainer on the same work: RL step wall time, peak RSS, reward and accuracy curves.

    make bench-vs-trl                                   # creates .venv-trl (TRL is never an rl-lora dependency)
    .venv-trl/bin/python scripts/bench_vs_trl.py        # writes benchmarks/vs_trl.json and benchmarks/vs_trl.png

The work, on both sides: the arithmetic task (default spec, train split; rl-lora's data order, so both see the
same 8 prompts at each step), prompts rendered through rl-lora's PromptRenderer (the chat template), 8 prompts x 8
completions per optimizer step, <= 24 new tokens, temperature 0.7 (no top-k/top-p), rank-1 LoRA (alpha 32, dropout
0, all linear layers), constant LR 5e-4 with no warmup, AdamW, grad-norm clip 1.0, no KL term, fp32, CPU, seed 0,
reward = rl-lora's arithmetic grader. Each side runs in its own process, so each peak RSS is its own:

  rl-lora  the real `rl-lora train --set lora.rank=1 --set algo.lr=5e-4 --set train.steps=N` (default rollout
           settings); step time and reward from its metrics.jsonl, peak RSS from its summary.json.
  TRL      GRPOTrainer (use_vllm=False: transformers `generate` on the unmerged PEFT model), TRL's other defaults
           kept (gradient checkpointing on, loss_type dapo, group-std reward scaling); step time from a callback
           (on_step_begin -> on_step_end: generation, scoring, forward/backward, optimizer step), reward from its logs.

Accuracy before and after: the same evaluator for both, `rl-lora eval` (greedy, <= 256 tokens) on the first
--eval-limit test problems, for the base model, rl-lora's final adapter and TRL's final adapter (PEFT format).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rl_lora.memory import peak_rss_mb  # noqa: E402

CLI = [sys.executable, "-m", "rl_lora.cli"]
TARGETS = {"step_time_ratio_rl_lora_over_trl": 0.25, "peak_rss_ratio_rl_lora_over_trl": 0.35}
SEED = 0
LR = 5e-4


def run(argv: list[str], log: Path | None = None) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=env)
    if log is not None:
        log.write_text(f"$ {shlex.join(argv)}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
    if result.returncode != 0:
        sys.exit(f"{shlex.join(argv)} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


def median_after_warmup(times: list[float]) -> float | None:
    rest = times[1:] if len(times) > 1 else times
    return statistics.median(rest) if rest else None


# ---- the TRL side (runs in its own process: --worker-trl) -----------------------------------------------------

def trl_worker(args: argparse.Namespace, work: Path) -> dict:
    started = time.perf_counter()
    import importlib

    import peft
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback, set_seed
    from trl import GRPOConfig, GRPOTrainer

    from envs.render import PromptRenderer
    from envs.sample import Sample
    from rewards.registry import resolve_reward
    from rl_lora.config import RunConfig
    from rl_lora.models import load_causal_lm, load_tokenizer, resolve_model
    from rl_lora.policy.learner import peft_lora_config
    from rl_lora.step.data_order import DataOrder
    from rl_lora.tasks import load_task

    config = RunConfig()  # rl-lora's defaults: the task spec, rendering, LoRA shape
    config.lora.rank = 1
    task = load_task(config.task)
    tokenizer = load_tokenizer(args.model)
    renderer = PromptRenderer(tokenizer, config.task.render, config.task.system_prompt)
    # rl-lora's own data order: step k of both runs sees the same prompts (TRL's sampler then goes in order).
    order = DataOrder(len(task.train), SEED).take(args.prompts_per_step * args.steps)
    samples = [task.train[i] for i in order]
    dataset = Dataset.from_list([{"prompt": renderer(s), "answer": s.answer, "sample_id": s.id} for s in samples])

    module_name, _, attribute = resolve_reward(task.reward).spec.partition(":")
    grade = getattr(importlib.import_module(module_name), attribute)  # rewards.gsm8k:gsm8k_reward
    scored_batches: list[list[float]] = []

    def arithmetic_reward(prompts, completions, answer, sample_id, **kwargs) -> list[float]:
        """rl-lora's grader in TRL's reward signature (dataset columns arrive as keyword lists)."""
        rewards = [grade(c, Sample(i, p, a)) for p, c, a, i in zip(prompts, completions, answer, sample_id)]
        scored_batches.append(rewards)
        return rewards

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []
            self.rss: list[float] = []
            self._start = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self._start)
            self.rss.append(peak_rss_mb())

    completions_per_step = args.prompts_per_step * args.group_size
    if completions_per_step % args.trl_micro_batch:
        sys.exit(f"--trl-micro-batch {args.trl_micro_batch} must divide {completions_per_step} completions per step")
    lora = peft_lora_config(config.lora)  # r=1, alpha 32, dropout 0, all-linear: what rl-lora's learner builds
    peft_config = peft.LoraConfig(**lora)
    grpo_fields = dict(
        output_dir=str(work / "trl-out"),
        # One optimizer step = one generation batch = prompts x group completions: TRL counts completions, not
        # prompts, in its batch sizes; micro-batches of --trl-micro-batch completions (rl-lora's micro_batch_size
        # is 8 completions) accumulate into one step, and steps_per_generation follows gradient_accumulation_steps.
        num_generations=args.group_size,
        per_device_train_batch_size=args.trl_micro_batch,
        gradient_accumulation_steps=completions_per_step // args.trl_micro_batch,
        generation_batch_size=completions_per_step,
        max_completion_length=args.max_new_tokens,
        temperature=0.7, top_p=1.0, top_k=0,
        learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0,
        max_grad_norm=1.0, weight_decay=0.0,
        max_steps=args.steps, num_iterations=1, beta=0.0,
        use_vllm=False,
        bf16=False, fp16=False, use_cpu=True,  # fp32 on the CPU (GRPOConfig defaults to bf16=True)
        shuffle_dataset=False,  # the dataset is already in rl-lora's order
        seed=SEED, data_seed=SEED,
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
        dataloader_num_workers=0,
    )
    set_seed(SEED)
    model = load_causal_lm(args.model)
    loaded_mb = peak_rss_mb()
    timer = StepTimer()
    trainer = GRPOTrainer(model=model, reward_funcs=arithmetic_reward, args=GRPOConfig(**grpo_fields),
                          train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config,
                          callbacks=[timer])
    resolved = trainer.args
    train_started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - train_started
    adapter_dir = work / "trl-adapter"
    trainer.model.save_pretrained(str(adapter_dir))
    logs = [entry for entry in trainer.state.log_history if "reward" in entry]
    used = {k: getattr(resolved, k, "(absent)") for k in (
        "num_generations", "per_device_train_batch_size", "gradient_accumulation_steps", "generation_batch_size",
        "steps_per_generation", "max_completion_length", "temperature", "top_p", "top_k", "min_p",
        "repetition_penalty", "learning_rate", "lr_scheduler_type", "warmup_steps", "warmup_ratio", "max_grad_norm",
        "weight_decay", "optim", "adam_beta1", "adam_beta2", "adam_epsilon", "max_steps", "num_iterations", "beta",
        "epsilon", "epsilon_high", "loss_type", "scale_rewards", "importance_sampling_level",
        "mask_truncated_completions", "use_vllm", "gradient_checkpointing", "gradient_checkpointing_kwargs",
        "bf16", "fp16", "use_cpu", "shuffle_dataset", "seed", "disable_dropout", "cast_lm_head_to_fp32")}
    return {
        "step_s_all": timer.times,
        "step_s_trl_metric": [entry.get("step_time") for entry in logs],
        "reward_per_step": [entry["reward"] for entry in logs],
        "reward_per_step_from_grader": [sum(b) / len(b) for b in scored_batches],
        "completion_length_mean": [entry.get("completions/mean_length") for entry in logs],
        "peak_rss_mb": peak_rss_mb(),
        "rss_after_model_load_mb": loaded_mb,
        "rss_after_each_step_mb": timer.rss,
        "train_s": train_s,
        "wall_s": time.perf_counter() - started,
        "adapter": str(adapter_dir),
        "grpo_config_set": {k: v for k, v in grpo_fields.items() if k != "output_dir"},
        "grpo_config_resolved": json.loads(json.dumps(used, default=str)),
        "peft_config": lora,
        "torch_threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
                     "peft": peft.__version__},
        "model_path": resolve_model(args.model),
    }


# ---- the rl-lora side -------------------------------------------------------------------------------------------

def rl_lora_side(args: argparse.Namespace, work: Path) -> dict:
    sets = ["model.name=" + args.model, "lora.rank=1", f"algo.lr={LR}", f"train.steps={args.steps}",
            f"train.seed={SEED}", f"rollout.prompts_per_step={args.prompts_per_step}",
            f"rollout.group_size={args.group_size}", f"rollout.max_new_tokens={args.max_new_tokens}",
            # its own before/after evaluation on the same problems as the rl-lora eval runs below; none in between
            f"train.eval_size={args.eval_limit}", "train.eval_every=0",
            f"eval.max_new_tokens={args.eval_max_new_tokens}",
            f"train.runs_dir={work / 'runs'}", "train.name=bench"]
    argv = CLI + ["train"] + [item for s in sets for item in ("--set", s)]
    started = time.perf_counter()
    stdout = run(argv, work / "rl-lora-train.log")
    wall = time.perf_counter() - started
    run_dir = work / "runs" / "bench"
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    step = max(int(p.name.split("_")[1]) for p in (run_dir / "checkpoints").glob("step_*"))
    return {
        "command": "rl-lora " + shlex.join(argv[3:]),
        "step_s_all": [m["time_step"] for m in metrics],
        "reward_per_step": [m["reward_mean"] for m in metrics],
        "completion_length_mean": [m["completion_tokens_mean"] for m in metrics],
        "time_split_median_s": {k: statistics.median(m[f"time_{k}"] for m in metrics[1:] or metrics)
                                for k in ("generate", "score", "learn", "sync", "probe")},
        "peak_rss_mb": summary["peak_rss_mb"],
        "wall_s": wall,
        "in_run_accuracy": {"base": summary["base_accuracy"], "final": summary["final_accuracy"]},
        "adapter": str(run_dir / "checkpoints" / f"step_{step}" / "adapter"),
        "config_yaml": (run_dir / "config.yaml").read_text(),
        "train_stdout": stdout,
    }


# ---- the shared evaluator ---------------------------------------------------------------------------------------

def evaluate(args: argparse.Namespace, work: Path, label: str, adapter: str | None) -> dict:
    argv = CLI + ["eval", "--model", args.model, "--limit", str(args.eval_limit),
                  "--set", f"eval.max_new_tokens={args.eval_max_new_tokens}", "--out", str(work / f"eval-{label}.jsonl")]
    if adapter:
        argv += ["--adapter", adapter]
    out = run(argv, work / f"eval-{label}.log")
    return json.loads(out.strip().splitlines()[-1])


# ---- report -----------------------------------------------------------------------------------------------------

def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cpus": os.cpu_count(), "gpu": False}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "rl-lora"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sides = [s for s in ("rl-lora", "trl") if s in report["sides"]]
    colors = {"rl-lora": "tab:blue", "trl": "tab:orange"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for side in sides:
        data = report["sides"][side]
        acc = data.get("accuracy")
        label = side + (f" (test acc {acc['before']:.2f} -> {acc['after']:.2f})" if acc else "")
        rewards = data["reward_per_step"]
        axes[0].plot(range(1, len(rewards) + 1), rewards, marker="o", color=colors[side], label=label)
    work = report["work"]
    axes[0].set(title=f"mean reward per step ({work['prompts_per_step']} prompts x {work['completions_per_prompt']} "
                f"completions)", xlabel="step", ylabel="reward", ylim=(-0.03, 1.03))
    axes[0].xaxis.get_major_locator().set_params(integer=True)
    axes[0].legend(loc="upper left", fontsize=8)
    medians = [report["sides"][s]["step_s_median"] or 0 for s in sides]
    axes[1].bar(sides, medians, color=[colors[s] for s in sides])
    for i, side in enumerate(sides):
        steps = report["sides"][side]["step_s_all"][1:] or report["sides"][side]["step_s_all"]
        axes[1].scatter([i] * len(steps), steps, color="black", s=8, zorder=3)
        axes[1].annotate(f"{medians[i]:.1f} s", (i, medians[i]), ha="center", va="bottom")
    ratio = report["ratios"].get("step_time_ratio_rl_lora_over_trl")
    axes[1].set_ylim(0, 1.15 * max([t for s in sides for t in report["sides"][s]["step_s_all"]] + [1e-3]))
    target = TARGETS["step_time_ratio_rl_lora_over_trl"]
    axes[1].set(title="RL step wall time, median after step 1" + (f"\nratio {ratio:.2f} (target <= {target})"
                                                                   if ratio else ""),
                ylabel="seconds")
    rss = [report["sides"][s]["peak_rss_mb"] / 1024 for s in sides]
    axes[2].bar(sides, rss, color=[colors[s] for s in sides])
    for i, value in enumerate(rss):
        axes[2].annotate(f"{value:.2f} GiB", (i, value), ha="center", va="bottom")
    ratio = report["ratios"].get("peak_rss_ratio_rl_lora_over_trl")
    axes[2].set_ylim(0, 1.15 * max(rss + [1e-3]))
    target = TARGETS["peak_rss_ratio_rl_lora_over_trl"]
    axes[2].set(title="peak RSS of the training process" + (f"\nratio {ratio:.2f} (target <= {target})"
                                                            if ratio else ""), ylabel="GiB")
    fig.suptitle(f"rl-lora vs TRL GRPOTrainer {report['versions'].get('trl', '')} · {report['model']} · arithmetic · "
                 f"LoRA r=1 · lr {LR:g} · CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12, help="RL steps on each side (default 12; step 1 is "
                        "reported but left out of the median as warm-up)")
    parser.add_argument("--model", default="smollm2-135m", help="an rl-lora model name or local HF folder "
                        "(default smollm2-135m)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "vs_trl.json"),
                        help="the JSON report; the PNG goes beside it (default benchmarks/vs_trl.json)")
    parser.add_argument("--only", choices=("trl", "rl-lora"), help="run one side only (debugging)")
    parser.add_argument("--eval-limit", type=int, default=100, help="test problems for the before/after greedy "
                        "accuracy (default 100, as train.eval_size)")
    parser.add_argument("--eval-max-new-tokens", type=int, default=256, help="eval token limit (default 256, "
                        "rl-lora's eval.max_new_tokens)")
    parser.add_argument("--trl-micro-batch", type=int, default=8, help="TRL per_device_train_batch_size: "
                        "completions per forward/backward (default 8, as rl-lora's algo.micro_batch_size)")
    smoke = parser.add_argument_group("smoke-test knobs (the comparison is defined at the defaults)")
    smoke.add_argument("--prompts-per-step", type=int, default=8)
    smoke.add_argument("--group-size", type=int, default=8)
    smoke.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--worker-trl", metavar="WORKDIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.eval_limit < 1 or args.steps < 1:
        parser.error("--steps and --eval-limit must be >= 1")

    if args.worker_trl:
        print("RESULT " + json.dumps(trl_worker(args, Path(args.worker_trl))))
        return

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-vs-trl-"))
    print(f"work folder: {work}", file=sys.stderr)
    started = time.perf_counter()
    sides: dict[str, dict] = {}
    if args.only in (None, "rl-lora"):
        print("rl-lora: training ...", file=sys.stderr)
        sides["rl-lora"] = rl_lora_side(args, work)
    trl_stdout = ""
    if args.only in (None, "trl"):
        print("TRL: training ...", file=sys.stderr)
        passthrough = ["--steps", str(args.steps), "--model", args.model, "--trl-micro-batch", str(args.trl_micro_batch),
                       "--prompts-per-step", str(args.prompts_per_step), "--group-size", str(args.group_size),
                       "--max-new-tokens", str(args.max_new_tokens)]
        trl_stdout = run([sys.executable, str(Path(__file__).resolve()), "--worker-trl", str(work), *passthrough],
                         work / "trl-train.log")
        sides["trl"] = json.loads(next(line[7:] for line in trl_stdout.splitlines() if line.startswith("RESULT ")))

    print("evaluating (rl-lora eval, greedy) ...", file=sys.stderr)
    base = evaluate(args, work, "base", None)
    for name, data in sides.items():
        final = evaluate(args, work, name, data["adapter"])
        data["accuracy"] = {"before": base["accuracy"], "after": final["accuracy"], "eval_before": base,
                            "eval_after": final}
        data["step_s_median"] = median_after_warmup(data["step_s_all"])

    ratios: dict = {}
    if len(sides) == 2:
        r, t = sides["rl-lora"], sides["trl"]
        ratios["step_time_ratio_rl_lora_over_trl"] = r["step_s_median"] / t["step_s_median"]
        ratios["peak_rss_ratio_rl_lora_over_trl"] = r["peak_rss_mb"] / t["peak_rss_mb"]
    checks = {key: {"value": ratios.get(key), "target_max": target,
                    "pass": ratios[key] <= target if key in ratios else None} for key, target in TARGETS.items()}
    trl_side = sides.get("trl", {})
    report = {
        "command": "python scripts/bench_vs_trl.py " + shlex.join(sys.argv[1:]),
        "machine": machine(),
        "versions": versions(),
        "model": args.model,
        "work": {"task": "arithmetic (default spec, train split, rl-lora's data order, seed 0)",
                 "prompts_per_step": args.prompts_per_step, "completions_per_prompt": args.group_size,
                 "max_new_tokens": args.max_new_tokens, "temperature": 0.7, "lr": LR, "lora": "r=1 alpha=32 "
                 "dropout=0 all-linear", "dtype": "float32", "device": "cpu", "seed": SEED, "steps": args.steps,
                 "eval": f"rl-lora eval, greedy, first {args.eval_limit} test problems, "
                         f"<= {args.eval_max_new_tokens} tokens"},
        "ratios": ratios,
        "targets": checks,
        "sides": sides,
        "trl_config": {"grpo_config_set": trl_side.get("grpo_config_set"),
                       "grpo_config_resolved": trl_side.get("grpo_config_resolved"),
                       "peft_config": trl_side.get("peft_config")},
        "notes": [
            "Step time: rl-lora's metrics.jsonl time_step (sample + score + learn + sync + probe); TRL's "
            "on_step_begin -> on_step_end (generate + score + the accumulated forward/backward passes + clip + "
            "optimizer step). Median over steps 2..N; step 1 (warm-up) is in step_s_all.",
            "Peak RSS: each side's training process (ru_maxrss). rl-lora's includes its own in-run greedy "
            "evaluations (base and final, train.eval_size problems, <= eval.max_new_tokens) and the second model "
            "copy its sampler holds; TRL's process only trains (it is evaluated afterwards by rl-lora eval).",
            "TRL's batch sizes count completions: per_device_train_batch_size x gradient_accumulation_steps = "
            "generation_batch_size = prompts x num_generations, so one optimizer step (TRL's global_step) is one "
            "generation of the 8 prompts x 8 completions, as one rl-lora step; steps_per_generation = "
            "gradient_accumulation_steps, so no old-logprob pass (TRL uses per_token_logps.detach(), ratio 1).",
            "TRL generates num_generations copies of each prompt in one batch (each prompt prefilled 8 times); "
            "rl-lora prefills each prompt once per group.",
            "TRL defaults kept: gradient_checkpointing=True (recomputes activations in backward: slower, less "
            "memory), loss_type='dapo' (token-level mean over the whole accumulated batch, like rl-lora's "
            "algo.normalization=token), epsilon=0.2 clipping (inactive on-policy, ratio 1; rl-lora is_pg has no "
            "clip), scale_rewards='group' (advantages divided by the group's reward std; rl-lora's default "
            "algo.normalize_std=false divides by nothing): this changes the update's scale, so the reward and "
            "accuracy curves are not the same algorithm, only the same work per step.",
            "Not bitwise the same run: same seed and prompts per step, but the LoRA A init and the sampled tokens "
            "come from different RNG streams.",
            "rl-lora side checks its sampler against the learner after every sync (rollout.probe, one small "
            "forward pass, included in its step time); TRL has nothing to sync (it samples from the training model).",
        ],
        "wall_s_total": time.perf_counter() - started,
        "work_folder": str(work),
    }
    if trl_stdout:
        report["trl_stdout_tail"] = "\n".join(l for l in trl_stdout.splitlines() if not l.startswith("RESULT "))[-4000:]
    out.write_text(json.dumps(report, indent=1))
    png = out.with_suffix(".png")
    plot(report, png)
    brief = {side: {"step_s_median": d["step_s_median"], "peak_rss_mb": round(d["peak_rss_mb"]),
                    "reward_first_last": [d["reward_per_step"][0], d["reward_per_step"][-1]],
                    "accuracy": [d["accuracy"]["before"], d["accuracy"]["after"]]} for side, d in sides.items()}
    print(json.dumps({"sides": brief, "ratios": ratios, "pass": {k: v["pass"] for k, v in checks.items()}}, indent=1))
    print(f"-> {out}, {png} (work folder {work})")


if __name__ == "__main__":
    main()
