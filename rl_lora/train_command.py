"""`rl-lora train`: set up a run folder and its parts, run the loop with a progress bar, stop cleanly."""
from __future__ import annotations

import json
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from envs.registry import load_task
from envs.render import PromptRenderer
from rewards.scoring import RewardScorer
from rl_lora.checkpoint import TrainerState, latest_checkpoint, load_checkpoint, save_checkpoint
from rl_lora.config import RunConfig, load_config, to_yaml
from rl_lora.data_order import DataOrder
from rl_lora.errors import UserError
from rl_lora.evaluate import EvalResult, write_records
from rl_lora.io import atomic_write_text
from rl_lora.learner import Learner
from rl_lora.memory import peak_rss_mb
from rl_lora.metrics import MetricsLog, read_metrics
from rl_lora.models import load_causal_lm, load_tokenizer, resolve_model
from rl_lora.plots import plot_run
from rl_lora.rollout.base import AdapterUpdate
from rl_lora.rollout import make_backend
from rl_lora.samplers import LocalSampler
from rl_lora.sync import Probe
from rl_lora.trainer import RunParts, test_accuracy, train_loop


def check_run_config(config: RunConfig) -> None:
    """Combinations that would silently do nothing useful are refused up front."""
    if config.algo.baseline == "group_mean" and config.rollout.group_size < 2:
        raise UserError("rollout.group_size=1 with algo.baseline=group_mean gives every completion advantage 0: "
                        "use group_size >= 2 or algo.baseline=none")
    if config.rollout.temperature == 0:
        raise UserError("rollout.temperature=0 samples greedily: every completion of a group is the same, "
                        "so there is nothing to learn from; use a temperature > 0 (0.7 is the default)")
    if config.learning_rate() <= 0:
        raise UserError(f"learning rate must be > 0 (got {config.learning_rate()})")
    if config.rollout.backend == "vllm":
        from rl_lora.rollout.vllm import require_vllm

        require_vllm()
    if config.rollout.max_lag > 0 and config.rollout.num_workers == 0:
        raise UserError("rollout.max_lag > 0 samples ahead while the learner trains, which needs Ray rollout "
                        "workers: set rollout.num_workers >= 1 (or max_lag=0)")
    if config.algo.kl_coef > 0 and config.lora.mode == "full":
        raise UserError("algo.kl_coef > 0 needs the base model as reference; with lora.mode=full that is a second "
                        "full copy, which rl-lora does not keep: use lora.mode=lora or algo.kl_coef=0")


def new_run_dir(config: RunConfig) -> Path:
    name = config.train.name or (f"{config.task.name}-{config.lora.mode}"
                                 + (f"-r{config.lora.rank}" if config.lora.mode == "lora" else "")
                                 + time.strftime("-%Y%m%d-%H%M%S"))
    run_dir = Path(config.train.runs_dir) / name
    if run_dir.exists():
        raise UserError(f"run folder {run_dir} exists: choose another train.name or resume it with --resume {run_dir}")
    return run_dir


def capacity_line(learner: Learner, config: RunConfig) -> str:
    episodes = config.train.steps * config.rollout.prompts_per_step * config.rollout.group_size
    params = learner.trainable_parameters
    what = f"rank-{config.lora.rank} LoRA" if config.lora.mode == "lora" else "FullFT"
    return (f"capacity: {what} trains {params:,} parameters ({params * 32:,} bits in fp32); this run's "
            f"{episodes:,} episodes deliver at most {episodes:,} bits (<= 1 bit each, through the advantage) "
            f"-> {params * 32 / episodes:,.0f}x more capacity than information")


def _eval_line(label: str, result: EvalResult, limit: int) -> str:
    finished = [r for r in result.records if r.finished]
    on_finished = sum(r.reward or 0 for r in finished) / len(finished) if finished else 0.0
    return (f"{label}: accuracy {result.accuracy:.1%} | format: {1 - result.truncated_fraction:.0%} finished within "
            f"{limit} tokens, {result.mean_tokens:.0f} tokens on average | arithmetic: {on_finished:.1%} right "
            f"among finished")


class StopFlag:
    """First Ctrl-C: finish the current step, checkpoint, stop. Second: stop at once."""

    def __init__(self, console: Console):
        self.requested, self.console = False, console

    def __call__(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.console.print("[yellow]stopping after this step (Ctrl-C again to abort without a checkpoint)")


@dataclass(frozen=True)
class HostedRun:
    """A run driven by a host that trains several runs side by side in one process (rl_lora.shared_runs): its
    sampler's backend comes from the host (a slot of a shared engine), the host's Ctrl-C handler stops it, and it
    prints a line per step instead of drawing a progress bar of its own."""
    backend: object
    stop_requested: Callable[[], bool]
    peers: tuple[str, ...] = ()  # the other runs on the same engine, recorded in the summary


def build_parts(config: RunConfig, console: Console, run_name: str,
                backend=None) -> tuple[RunParts, Callable[[], None]]:
    """The run's parts, and how to release them (Ray actors and, if this process started it, Ray itself).
    `backend`: the in-process sampler's backend, if the caller has one already (a shared engine's slot)."""
    resolve_model(config.model.name)
    task = load_task(config.task)
    scorer = RewardScorer.for_task(config.reward, task)
    tokenizer = load_tokenizer(config.model.name)
    probe = Probe.for_tokenizer(tokenizer) if config.rollout.probe else None
    if config.rollout.num_workers == 0:
        with console.status(f"loading {config.model.name} (learner and sampler)"):
            learner = Learner(load_causal_lm(config.model.name, config.model.dtype, config.model.device),
                              config.lora, config.algo, config.learning_rate(), config.rollout.temperature,
                              seed=config.train.seed)
            if backend is None:
                backend = make_backend(config.model, config.rollout, tokenizer, config.model.device,
                                       config.train.seed)
        sampler, release = LocalSampler(backend, scorer, probe), scorer.close
    else:
        from rl_lora import cluster

        print(cluster.describe_requests(config))
        with console.status(f"starting Ray actors: a learner and {config.rollout.num_workers} rollout worker(s), "
                            f"each loading {config.model.name}"):
            ray_parts = cluster.start(config, probe, config.reward.name or task.reward, run_name)
        learner, sampler = ray_parts.learner, ray_parts.pool

        def release() -> None:
            scorer.close()
            ray_parts.shutdown()
    renderer = PromptRenderer(tokenizer, config.task.render, config.task.system_prompt)
    parts = RunParts(config=config, task=task, renderer=renderer, tokenizer=tokenizer, learner=learner,
                     sampler=sampler, scorer=scorer, order=DataOrder(len(task.train), config.train.seed),
                     pad_id=sampler.pad_id)
    return parts, release


def train_main(config: RunConfig | None, resume: str | None, overrides: list[str],
               hosted: HostedRun | None = None) -> int:
    console = Console(stderr=True)
    if resume:
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").is_file():
            raise UserError(f"{run_dir} is not a run folder (no config.yaml)")
        config = load_config(run_dir / "config.yaml", overrides)
        checkpoint = latest_checkpoint(run_dir)
    else:
        run_dir, checkpoint = new_run_dir(config), None
    check_run_config(config)
    if resume:
        atomic_write_text(run_dir / "config.yaml", to_yaml(config))  # keep --set changes (e.g. more steps)
    parts, release = build_parts(config, console, run_dir.name, hosted.backend if hosted else None)
    try:
        return _start(parts, run_dir, checkpoint, console, hosted)
    finally:
        release()  # Ray too: Ctrl-C, a failure or the end of the run all leave no actors behind


def _start(parts: RunParts, run_dir: Path, checkpoint: Path | None, console: Console,
           hosted: HostedRun | None) -> int:
    config = parts.config
    if checkpoint is not None:
        state, tensors, optimizer_state = load_checkpoint(checkpoint)
        kind = "lora" if config.lora.mode == "lora" else "full"
        update = AdapterUpdate(state.step, kind, tensors, parts.learner.lora_config)
        parts.learner.load_state(update, optimizer_state)
        parts.sampler.sync(parts.learner)
        parts.order.position = state.data_position
        base_accuracy, first_step = state.base_accuracy, state.step + 1
        console.print(f"resuming {run_dir} after step {state.step}")
    else:
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(to_yaml(config))
        first_step, base_accuracy = 1, None
    try:
        return _run(parts, run_dir, checkpoint is not None, first_step, base_accuracy, console, hosted)
    except BaseException:
        # A run that dies before its first checkpoint leaves nothing to resume: leave no folder behind either.
        if checkpoint is None and not any((run_dir / "checkpoints").glob("step_*")):
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            print(f"the run stopped; resume from its last checkpoint with: rl-lora train --resume {run_dir}",
                  file=sys.stderr)
        raise


def _run(parts: RunParts, run_dir: Path, resumed: bool, first_step: int, base_accuracy: float | None,
         console: Console, hosted: HostedRun | None) -> int:
    config, started = parts.config, time.perf_counter()
    # Hosted runs print side by side: each line says whose it is.
    tag = f"{run_dir.name}: " if hosted else ""
    print(tag + capacity_line(parts.learner, config))
    (run_dir / "evals").mkdir(exist_ok=True)

    if base_accuracy is None:
        with console.status(f"base model test accuracy ({config.train.eval_size} problems, greedy, "
                            f"<= {config.eval.max_new_tokens} tokens)"):
            base = test_accuracy(parts)
        write_records(run_dir / "evals" / "step_0.jsonl", base)
        base_accuracy = base.accuracy
        print(tag + _eval_line("base model", base, config.eval.max_new_tokens))

    log = MetricsLog(run_dir, resume_after_step=first_step - 1 if resumed else None)
    # Only the main thread may set a signal handler; a hosted run's host owns Ctrl-C.
    if hosted:
        previous_handler, stop_requested = None, hosted.stop_requested
    else:
        stop = StopFlag(console)
        previous_handler, stop_requested = signal.signal(signal.SIGINT, stop), (lambda: stop.requested)
    last_eval: dict = {}
    columns = (TextColumn("step"), MofNCompleteColumn(), BarColumn(), TextColumn("{task.fields[status]}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=console, disable=hosted is not None) as progress:
            bar = progress.add_task("train", total=config.train.steps, completed=first_step - 1, status="")

            def on_step(metrics):
                log.write(metrics)
                accuracy = "" if metrics.test_accuracy is None else f" test {metrics.test_accuracy:.0%}"
                status = f"reward {metrics.reward_mean:.2f}{accuracy} | {metrics.time_step:.1f} s/step"
                progress.update(bar, completed=metrics.step, status=status)
                if hosted:
                    print(f"{tag}step {metrics.step}/{config.train.steps} {status}", flush=True)

            def on_eval(step, result):
                write_records(run_dir / "evals" / f"step_{step}.jsonl", result)
                last_eval["result"] = result
                print(tag + _eval_line(f"step {step}", result, config.eval.max_new_tokens))

            def on_checkpoint(step, data_position):
                save_checkpoint(run_dir, parts.learner, TrainerState(step, data_position, base_accuracy),
                                parts.tokenizer)

            last_step = train_loop(parts, first_step, on_step, on_eval, on_checkpoint, stop_requested)
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)
        log.close()

    metrics = read_metrics(run_dir)
    plot = plot_run(metrics, base_accuracy, run_dir / "plots" / "curve.png",
                    f"{config.model.name} · {config.task.name} · " +
                    (f"LoRA r={config.lora.rank}" if config.lora.mode == "lora" else "FullFT") +
                    f" · lr {config.learning_rate():g}")
    final = last_eval.get("result")
    params = parts.learner.trainable_parameters
    summary = {"run_dir": str(run_dir), "steps": last_step, "base_accuracy": base_accuracy,
               "final_accuracy": final.accuracy if final else None,
               # What `rl-lora compare` reports: this process's peak RSS (with Ray: the driver only), the time of
               # this session of the run (a resumed run counts from its resume), the update's size.
               "wall_s": time.perf_counter() - started,
               "peak_rss_mb": peak_rss_mb(),
               "trainable_parameters": params,
               "update_bytes": params * (4 if config.model.dtype == "float32" else 2)}
    if hosted:  # peak RSS above is then the host process's: every run on the engine, and the engine
        summary["engine_shared_with"] = list(hosted.peers)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    if stop_requested() and last_step < config.train.steps:
        print(f"stopped after step {last_step}; resume with: rl-lora train --resume {run_dir}")
    if final is not None:
        print(f"{tag}test accuracy: base {base_accuracy:.1%} -> final {final.accuracy:.1%} "
              f"({(final.accuracy - base_accuracy) * 100:+.1f} points) after {last_step} steps")
    print(f"{tag}run folder: {run_dir} (metrics.jsonl, plots/{plot.name}, checkpoints/, tensorboard/)")
    return 0
