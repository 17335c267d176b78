"""`rl-lora train`: set up a run folder and its parts (in process, or Ray actors), run the loop with a progress
bar, stop cleanly."""
from __future__ import annotations

import dataclasses
import signal
import sys
import time
from dataclasses import dataclass
from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from envs.render import PromptRenderer
from rl_lora.config import RunConfig, check_resume_changes
from rl_lora.device import Compute, resolve
from rl_lora.errors import Interrupted, RunStopped, StoppedAfterStep, UserError
from rl_lora.io import out_of_space
from rl_lora.memory import peak_rss_mb
from rl_lora.models import check_gradient_checkpointing, check_model, load_causal_lm, load_tokenizer
from rl_lora.policy.learner import LocalLearner
from rl_lora.run.checkpoint import TrainerState, load_checkpoint, save_checkpoint
from rl_lora.run.folder import CheckpointFolder, RunFolder, RunSummary
from rl_lora.run.metrics import MetricsLog, WandbLog
from rl_lora.run.plots import plot_run
from rl_lora.sampling.build import build_backend
from rl_lora.sampling.episodes import build_episodes
from rl_lora.sampling.local import LocalSampler
from rl_lora.step.data_order import DataOrder
from rl_lora.step.evaluate import EvalResult
from rl_lora.step.loop import RunParts, test_accuracy, train_loop
from rl_lora.tasks import load_fitted_task, reward_scorer
from rl_lora.tokens import eos_token_ids
from rl_lora.types import Learner, Probe, SamplingBackend


def check_environment(config: RunConfig, tag: str = "", in_process: bool | None = None) -> Compute:
    """What this machine must have for the run (the config's own combinations: RunConfig.check). First the device
    and dtype, checked and printed as the run's first line (`tag` before it), before any model loads. `in_process`:
    the model loads in this process (None: when rollout.num_workers=0; eval always loads it here)."""
    in_process = config.rollout.num_workers == 0 if in_process is None else in_process
    if config.runs_model_code() and config.env.sandbox == "none":
        print(f"{tag}WARNING: env.sandbox=none: code the model writes runs unisolated, as you (your files, your "
              "environment's secrets, the network, your processes)", flush=True)
    if in_process:  # the model loads in this process: its hardware decides
        compute = resolve(config.model)
    else:  # Ray actors compute on their own nodes, which may have GPUs where the driver has none
        from rl_lora.cluster.placement import plan_compute

        compute = plan_compute(config)
    print(tag + compute.line, flush=True)
    if config.rollout.backend == "vllm":
        from rl_lora.sampling.vllm import require_vllm

        require_vllm()
        tensor_parallel = config.rollout.vllm_tensor_parallel_size
        if tensor_parallel > 1 and in_process:
            import torch

            if torch.cuda.device_count() < tensor_parallel:
                raise UserError(f"rollout.vllm_tensor_parallel_size={tensor_parallel} needs {tensor_parallel} GPUs "
                                f"for the engine; this machine has {torch.cuda.device_count()}")
        if config.engine_sleeps:
            from rl_lora.sampling.vllm import check_sleep_mode

            # In process, the engine runs on this machine; a Ray worker's engine checks its own node's platform.
            engine_device = compute.device if in_process else \
                (None if config.ray.worker_gpus > 0 else "cpu")
            note = check_sleep_mode(engine_device)
            if note:
                print(note)
    if config.log.wandb:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise UserError("log.wandb=true needs wandb, an optional extra: pip install 'rl-lora[wandb]'") from None
    return compute


def capacity_line(learner: Learner, config: RunConfig) -> str:
    episodes = config.train.steps * config.rollout.prompts_per_step * config.rollout.group_size
    params = learner.trainable_parameters
    return (f"capacity: {config.arm_label} ({config.arm_description}) trains {params:,} parameters "
            f"({params * 32:,} bits in fp32); this run's {episodes:,} episodes deliver at most {episodes:,} bits "
            f"(<= 1 bit each, through the advantage) -> {_times(params * 32 / episodes)} more capacity than "
            "information")


def _times(ratio: float) -> str:
    return f"{ratio:,.0f}x" if ratio >= 10 else f"{ratio:.2g}x"


def _eval_line(label: str, result: EvalResult, limit: int) -> str:
    finished = [r for r in result.records if r.finished]
    on_finished = sum(r.reward or 0 for r in finished) / len(finished) if finished else 0.0
    return (f"{label}: accuracy {result.accuracy:.1%} | format: {1 - result.truncated_fraction:.0%} finished within "
            f"{limit} tokens, {result.mean_tokens:.0f} tokens on average | answers: {on_finished:.1%} right "
            f"among finished")


class StopFlag:
    """Ctrl-C and SIGTERM (what Slurm, Kubernetes and `ray job stop` send), handled from the moment the run folder is
    claimed. Before the first step (loading, the base evaluation) there is nothing to finish: stop at once (the
    caller removes a folder with no checkpoint). From the first step on, the first signal finishes the current
    step, checkpoints and stops; the second stops at once (the last checkpoint stays whole: it is written under a
    staging name and renamed)."""
    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, console: Console):
        self.requested, self.console = False, console
        self.signum: int | None = None  # the first signal's number: the CLI exits with 128 + it
        self.training = False  # set when the first step starts: from then on a signal finishes the step first
        self._previous: dict = {}

    def __call__(self, signum, frame) -> None:
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        if not self.training:
            raise Interrupted(name, signum, "before the first step")
        if self.requested:
            raise Interrupted(name, signum, "again: aborting the step")
        self.requested, self.signum = True, signum
        self.console.print(f"[yellow]{name}: stopping after this step (again to abort without a checkpoint)")

    def install(self) -> "StopFlag":
        """Handle both signals until restore()."""
        self._previous = {signum: signal.signal(signum, self) for signum in self.SIGNALS}
        return self

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


@dataclass(frozen=True)
class HostedRun:
    """A run driven by a host that trains several runs side by side in one process (rl_lora.run.shared_runs): its
    sampler's backend comes from the host (a slot of a shared engine), the host's Ctrl-C handler stops it, and it
    prints a line per step instead of drawing a progress bar of its own."""
    backend: SamplingBackend
    stop_requested: Callable[[], bool]
    peers: tuple[str, ...] = ()  # the other runs on the same engine, recorded in the summary


def build_parts(config: RunConfig, console: Console, run_name: str,
                backend: SamplingBackend | None = None) -> tuple[RunParts, Callable[[], None]]:
    """The run's parts, and how to release them (Ray actors and, if this process started it, Ray itself).
    `backend`: the in-process sampler's backend, if the caller has one already (a shared engine's slot). The parts'
    config has model.device and model.dtype resolved: the learner's, where it loaded."""
    check_model(config.model.name)
    if config.algo.gradient_checkpointing:
        check_gradient_checkpointing(config.model.name)
    tokenizer = load_tokenizer(config.model.name)
    renderer = PromptRenderer(tokenizer, config.task.render, config.task.system_prompt)
    # The environment's template checks, before a model loads (Ray workers build their own beside their sampler).
    episodes = build_episodes(config.env, tokenizer, eos_token_ids(tokenizer), config.reward.timeout_s,
                              config.task.system_prompt)
    task = load_fitted_task(config, renderer, tokenizer, max(config.rollout.max_new_tokens, config.eval.max_new_tokens))
    with console.status(f"importing the reward {config.reward.name or task.reward}"):
        scorer = reward_scorer(config.reward, task.name, task.reward, config.env)
    probe = Probe.for_tokenizer(tokenizer) if config.rollout.probe else None
    if config.rollout.num_workers == 0:
        config = dataclasses.replace(config, model=resolve(config.model).apply(config.model))
        with console.status(f"loading {config.model.name} (learner and sampler)"):
            learner = LocalLearner(load_causal_lm(config.model.name, config.model.dtype, config.model.device),
                                   config.lora, config.algo, config.learning_rate(), config.rollout.temperature,
                                   seed=config.train.seed, max_new_tokens=config.rollout.max_new_tokens)
            if backend is None and config.rollout.backend == "hf":
                # One copy of the weights: the hf sampler serves the learner's own model (adapter included).
                from rl_lora.sampling.hf import HFBackend

                backend = HFBackend(learner.model, tokenizer, batch_size=config.rollout.batch_size,
                                    shares_learner_model=True, decode=config.rollout.hf_decode)
                probe = None  # the probe checks that a sampler got the update; this one holds the learner's weights
            elif backend is None:
                backend = build_backend(config.model, config.rollout, tokenizer, config.model.device,
                                        config.train.seed, sleep=config.engine_sleeps)
        sampler = LocalSampler(backend, scorer, probe, episodes)
        release = sampler.close
    else:
        from rl_lora.cluster import placement

        print(placement.describe_requests(config))
        with console.status(f"starting Ray actors: a learner and {config.rollout.num_workers} rollout worker(s), "
                            f"each loading {config.model.name}"):
            ray_parts = placement.start(config, probe, task.reward, run_name)
        learner, sampler = ray_parts.learner, ray_parts.pool
        config = dataclasses.replace(config, model=ray_parts.learner.compute.apply(config.model))

        def release() -> None:
            scorer.close()
            episodes.close()
            ray_parts.shutdown()
    parts = RunParts(config=config, task=task, renderer=renderer, tokenizer=tokenizer, learner=learner,
                     sampler=sampler, scorer=scorer, order=DataOrder(len(task.train), config.train.seed),
                     pad_id=sampler.pad_id)
    return parts, release


def train_main(config: RunConfig | None, resume: str | None, overrides: list[str],
               hosted: HostedRun | None = None) -> RunSummary:
    """One run, new (`config`) or resumed (`resume`, a run folder; `overrides` as --set). Returns its summary;
    errors a user can fix raise UserError (the CLI prints them as one line)."""
    console = Console(stderr=True)
    lock = stop = None
    try:
        if resume:
            folder = RunFolder.existing(resume)
            config = folder.read_config(overrides)
            check_resume_changes(folder.read_config(), config)
            # One writer: a second --resume stops here (the checks above only read; a refused one writes nothing).
            lock = folder.lock().acquire("resume it")
            checkpoint = folder.latest_checkpoint()  # None: stopped before its first checkpoint; it starts again
            if checkpoint is not None and checkpoint.step >= config.train.steps:
                raise UserError(f"{folder} finished step {checkpoint.step} of {config.train.steps} already; to "
                                f"train further: rl-lora train --resume {folder} --set train.steps=N (N > "
                                f"{checkpoint.step})")
        else:
            folder, checkpoint = RunFolder.for_new_run(config), None
        # Signals are handled from here on (a hosted run's host owns them): before the first step they stop at once.
        stop = None if hosted else StopFlag(console).install()
        config.check()
        tag = f"{folder.name}: " if hosted else ""
        check_environment(config, tag)
        # Nothing is written before every check above has passed.
        if resume:
            folder.write_config(config)  # keep --set changes (e.g. more steps); model.dtype=auto stays auto
        else:
            lock = folder.claim(config)
        try:
            parts, release = build_parts(config, console, folder.name, hosted.backend if hosted else None)
        except BaseException as error:
            if not resume:
                folder.remove()
                _say_removed(folder, error)
            if isinstance(error, RunStopped):
                raise _what_is_left(error, folder.latest_checkpoint() if resume else None) from None
            raise
        record_session(folder, parts.config, config, tag)
        stop_requested = hosted.stop_requested if hosted else (lambda: stop.requested)
        try:
            summary = _start(parts, folder, resume is not None, checkpoint, console, hosted, stop, stop_requested)
        finally:
            release()  # Ray too: Ctrl-C, a failure or the end of the run all leave no actors behind
        if stop is not None and stop.requested and summary.steps < config.train.steps:
            # Stopped, resumable, not finished: exits 128 + the signal's number, as schedulers expect.
            raise StoppedAfterStep(f"stopped after step {summary.steps}; resume with: rl-lora train --resume "
                                   f"{folder}", stop.signum)
        return summary
    finally:
        if stop is not None:
            stop.restore()
        if lock is not None:
            lock.release()


def _say_removed(folder: RunFolder, error: BaseException) -> None:
    """A run stopped before its first checkpoint leaves no folder: say so when a signal stopped it (an error says
    its own line)."""
    if isinstance(error, KeyboardInterrupt):
        print(f"{folder} had no checkpoint yet: its folder was removed; start the run again to train it",
              file=sys.stderr, flush=True)


def record_session(folder: RunFolder, used: RunConfig, given: RunConfig, tag: str) -> None:
    """This session's code and the device and dtype it computes in, into the run folder. A resume may change them
    (model.device may change; model.dtype=auto resolves on each machine): the run says so, rather than continue
    quietly in another precision."""
    sessions = folder.sessions()
    before = sessions[-1].get("dtype") if sessions else None
    if before not in (None, used.model.dtype):
        print(f"{tag}note: model.dtype={given.model.dtype} computes in {used.model.dtype} here; this run's previous "
              f"session computed in {before}, so from here on it is not the run it would have been (start a new "
              "run with model.dtype set to keep one precision)", flush=True)
    folder.record_code(device=used.model.device, dtype=used.model.dtype)


def _start(parts: RunParts, folder: RunFolder, resumed: bool, checkpoint: CheckpointFolder | None,
           console: Console, hosted: HostedRun | None, stop: StopFlag | None,
           stop_requested: Callable[[], bool]) -> RunSummary:
    if checkpoint is not None:
        state, update, optimizer_state = load_checkpoint(checkpoint, parts.learner.lora_config)
        parts.learner.load_state(update, optimizer_state)
        parts.sampler.sync(parts.learner)
        parts.order.position = state.data_position
        base_accuracy, first_step = state.base_accuracy, state.step + 1
        console.print(f"resuming {folder} after step {state.step}")
    else:
        if resumed:
            console.print(f"{folder} stopped before its first checkpoint: starting it again from step 1")
        first_step, base_accuracy = 1, None
    try:
        return _run(parts, folder, resumed, first_step, base_accuracy, console, hosted, stop, stop_requested)
    except BaseException as error:
        kept = folder.latest_checkpoint()
        # A run that dies before its first checkpoint leaves nothing to resume: leave no folder behind either.
        if kept is None:
            folder.remove()
            _say_removed(folder, error)
        else:
            print(f"the run stopped; resume from its last checkpoint with: rl-lora train --resume {folder}",
                  file=sys.stderr)
        if out_of_space(error, folder.path if kept else folder.path.parent):
            raise RunStopped(f"no space left on {folder.path.parent}: " + (
                f"the last complete checkpoint, step {kept.step}, is kept; free space, then resume" if kept
                else "the run stopped before its first checkpoint and its folder was removed")) from None
        if isinstance(error, RunStopped):
            raise _what_is_left(error, kept) from None
        raise


def _what_is_left(error: RunStopped, kept: CheckpointFolder | None) -> RunStopped:
    """A part failed for good: the line says what is left to resume from."""
    return RunStopped(f"{error}; " + (f"the run stops at its last checkpoint, step {kept.step}" if kept
                                      else "no checkpoint yet, so its folder was removed"))


def _run(parts: RunParts, folder: RunFolder, resumed: bool, first_step: int, base_accuracy: float | None,
         console: Console, hosted: HostedRun | None, stop: StopFlag | None,
         stop_requested: Callable[[], bool]) -> RunSummary:
    config, started = parts.config, time.perf_counter()
    # Hosted runs print side by side: each line says whose it is.
    tag = f"{folder.name}: " if hosted else ""
    print(tag + capacity_line(parts.learner, config))

    if base_accuracy is None:
        with console.status(f"base model test accuracy ({config.train.eval_size} problems, greedy, "
                            f"<= {config.eval.max_new_tokens} tokens)"):
            base = test_accuracy(parts)
        folder.write_eval(0, base)
        base_accuracy = base.accuracy
        print(tag + _eval_line("base model", base, config.eval.max_new_tokens))

    log = MetricsLog(folder, resume_after_step=first_step - 1 if resumed else None)
    dashboard = WandbLog(config, folder) if config.log.wandb else None
    if stop is not None:
        stop.training = True  # from the first step on, a signal finishes the step and checkpoints
    last_eval: dict = {}
    columns = (TextColumn("step"), MofNCompleteColumn(), BarColumn(), TextColumn("{task.fields[status]}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    # A progress bar shows nothing in a log file (`ray job submit`, nohup, CI) until the end: there, and for runs
    # printing side by side, one plain line per step instead.
    plain_lines = hosted is not None or not console.is_terminal
    try:
        with Progress(*columns, console=console, disable=plain_lines) as progress:
            bar = progress.add_task("train", total=config.train.steps, completed=first_step - 1, status="")

            def on_step(metrics):
                log.write(metrics)
                if dashboard:
                    dashboard.write(metrics)
                accuracy = "" if metrics.test_accuracy is None else f" test {metrics.test_accuracy:.0%}"
                refilled = "" if metrics.sample_batches == 1 else \
                    f" | {metrics.groups_dropped} constant groups dropped, {metrics.sample_batches} batches drawn"
                status = f"reward {metrics.reward_mean:.2f}{accuracy}{refilled} | {metrics.time_step:.1f} s/step"
                progress.update(bar, completed=metrics.step, status=status)
                if plain_lines:
                    elapsed = time.perf_counter() - started
                    left = elapsed / (metrics.step - first_step + 1) * (config.train.steps - metrics.step)
                    print(f"{tag}step {metrics.step}/{config.train.steps} {status} | {elapsed:.0f} s, about "
                          f"{left:.0f} s left", flush=True)

            def on_eval(step, result):
                folder.write_eval(step, result)
                last_eval["result"] = result
                print(tag + _eval_line(f"step {step}", result, config.eval.max_new_tokens))

            def on_checkpoint(step, data_position):
                save_checkpoint(folder, parts.learner, TrainerState(step, data_position, base_accuracy),
                                parts.tokenizer)

            last_step = train_loop(parts, first_step, on_step, on_eval, on_checkpoint, stop_requested)
    except BaseException:
        if dashboard:
            dashboard.finish(failed=True)
        raise
    finally:
        log.close()

    metrics = folder.read_metrics()
    plot_run(metrics, base_accuracy, folder.plot_path,
             f"{config.model.name} · {config.task.name} · " +
             config.arm_description +
             f" · lr {config.learning_rate():g}")
    if dashboard:
        dashboard.finish(folder.plot_path)
    final = last_eval.get("result")
    params = parts.learner.trainable_parameters
    failures = sum(m.reward_failures for m in metrics)
    eval_failures, evaluated = folder.eval_failures()
    summary = RunSummary(
        run_dir=str(folder), steps=last_step, base_accuracy=base_accuracy,
        final_accuracy=final.accuracy if final else None, wall_s=time.perf_counter() - started,
        peak_rss_mb=peak_rss_mb(), trainable_parameters=params,
        update_bytes=parts.learner.update_bytes,
        reward_failures=failures, eval_reward_failures=eval_failures,
        engine_shared_with=hosted.peers if hosted else ())
    folder.write_summary(summary)
    if hosted and stop_requested() and last_step < config.train.steps:  # the host's exit status says so
        print(f"{tag}stopped after step {last_step}; resume with: rl-lora train --resume {folder}")
    if failures or eval_failures:
        sampled = len(metrics) * config.rollout.prompts_per_step * config.rollout.group_size
        print(f"{tag}the reward failed on {failures} of {sampled} sampled completions and {eval_failures} of "
              f"{evaluated} evaluated ones (reward.on_error={config.reward.on_error}: "
              + ("scored 0" if config.reward.on_error == "zero" else "left out") +
              ("; every sampled one failed, so this run learned nothing from its reward" if failures >= sampled
               else "") + "); the log names each")
    if final is not None:
        print(f"{tag}test accuracy: base {base_accuracy:.1%} -> final {final.accuracy:.1%} "
              f"({(final.accuracy - base_accuracy) * 100:+.1f} points) after {last_step} steps")
    print(f"{tag}run folder: {folder} ({folder.contents})")
    return summary
