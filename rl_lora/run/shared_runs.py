"""Several LoRA runs that differ only in their adapter (rank, LR), trained side by side in one process on one vLLM
engine, each policy in its own LoRA slot (rl_lora.sampling.shared_engine). `rl-lora compare --share-engine`
starts one of these per seed; each run is a normal run folder, resumable on its own.

    rl-lora shared-runs [--start CONFIG ...] [--resume RUN_DIR ...]     (internal: compare's child process)

Ctrl-C (or SIGTERM) once: every run finishes its step, checkpoints and stops; twice: stop at once.
"""
from __future__ import annotations

import signal
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path

from rl_lora.config import RunConfig, TrainMode, load_config
from rl_lora.errors import USER_ERRORS, UserError
from rl_lora.run.folder import RunFolder

# What every run on one engine must agree on: the engine's weights, dtype, device and context length.
SHARED_KEYS = ("model.name", "model.dtype", "model.device", "rollout.vllm_max_model_len")


@dataclass(frozen=True)
class RunSpec:
    config: RunConfig
    resume: str | None = None  # a run folder to resume; None: a new run from config

    @property
    def name(self) -> str:
        return Path(self.resume).name if self.resume else str(self.config.train.name)


def _value(config: RunConfig, key: str):
    section, field = key.split(".")
    return getattr(getattr(config, section), field)


def check_shareable(specs: list[RunSpec]) -> None:
    if not specs:
        raise UserError("no runs to share an engine")
    for spec in specs:
        c = spec.config
        if c.lora.mode != TrainMode.LORA or c.lora.adapter == "dora" or c.rollout.backend != "vllm" \
                or c.rollout.num_workers != 0:
            raise UserError(f"{spec.name}: only LoRA and tiny-adapter runs on the vllm backend in this process "
                            "(lora.mode=lora, rollout.backend=vllm, rollout.num_workers=0) can share an engine; DoRA "
                            "is served merged, alone")
        for key in SHARED_KEYS:
            if _value(c, key) != _value(specs[0].config, key):
                raise UserError(f"{spec.name}: {key} is {_value(c, key)!r}, {specs[0].name} has "
                                f"{_value(specs[0].config, key)!r}; runs on one engine must agree on {key}")


def adapter_rank(config) -> int:
    """The rank of the LoRA a run syncs: lora.rank, or a tiny adapter's SVD rank (unset: up to tiny.MAX_RANK)."""
    from rl_lora.policy.tiny import MAX_RANK

    if config.lora.adapter == "tiny":
        return config.lora.tiny_rank or MAX_RANK
    return config.lora.rank


def start_engine(specs: list[RunSpec]):
    from rl_lora.device import resolve
    from rl_lora.models import load_tokenizer
    from rl_lora.sampling.build import build_backend
    from rl_lora.sampling.shared_engine import SharedEngine, engine_lora_rank

    first = specs[0].config
    compute = resolve(first.model)  # the engine runs in this process; each run resolves the same for its learner
    engine = build_backend(compute.apply(first.model), first.rollout, load_tokenizer(first.model.name), compute.device,
                           first.train.seed, serve="lora", lora_slots=len(specs),
                           max_lora_rank=engine_lora_rank([adapter_rank(s.config) for s in specs]))
    return SharedEngine(engine)


def run_shared(specs: list[RunSpec]) -> int:
    """Every run in a thread of its own; returns 0 when all of them finished, 128 + the signal's number when Ctrl-C
    or SIGTERM stopped some after a step (resumable: not finished)."""
    from rl_lora.run.train import HostedRun, train_main

    check_shareable(specs)
    shared = start_engine(specs)
    stop = threading.Event()
    codes: dict[str, int] = {}
    unfinished: list[str] = []  # stopped by the signal before their last step
    signals: list[int] = []  # what stopped the runs, first first

    def run(spec: RunSpec, hosted: HostedRun) -> None:
        try:
            summary = train_main(None if spec.resume else spec.config, spec.resume, [], hosted)
            codes[spec.name] = 0
            if summary.steps < spec.config.train.steps:
                unfinished.append(spec.name)
        except USER_ERRORS as error:
            print(f"rl-lora: error: {spec.name}: {error}", file=sys.stderr, flush=True)
            codes[spec.name] = 2
        except BaseException:  # one run's failure is reported and leaves the others running
            print(f"{spec.name} failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
            codes[spec.name] = 1

    threads = []
    for index, spec in enumerate(specs):
        peers = tuple(s.name for s in specs if s is not spec)
        # The slot name is its adapter's folder: unique even for runs whose train.name is unset.
        hosted = HostedRun(shared.slot(f"{index}-{spec.name}"), stop.is_set, peers)
        threads.append(threading.Thread(target=run, args=(spec, hosted), name=spec.name, daemon=True))
    print(f"[shared engine] {len(specs)} runs on one vLLM engine: {', '.join(s.name for s in specs)}", flush=True)
    for thread in threads:
        thread.start()

    def on_sigterm(signum, frame) -> None:  # a scheduler's SIGTERM stops the runs as Ctrl-C does
        signals.append(signum)
        raise KeyboardInterrupt

    previous_sigterm = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        while any(t.is_alive() for t in threads):
            try:
                for thread in threads:
                    thread.join(timeout=0.5)
            except KeyboardInterrupt:
                if stop.is_set():
                    raise
                stop.set()
                signals.append(signal.SIGINT)  # after SIGTERM's own entry, if that was it
                print("[shared engine] stopping every run after its step (Ctrl-C again to abort)", file=sys.stderr,
                      flush=True)
    except KeyboardInterrupt:
        print("[shared engine] aborted; runs resume from their last checkpoints", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
    failed = [name for name, code in codes.items() if code != 0]
    if failed:
        print(f"[shared engine] failed: {', '.join(failed)}", file=sys.stderr)
        return max(codes.values())
    if unfinished:
        print(f"[shared engine] stopped before their last step: {', '.join(unfinished)}; re-run to resume them",
              file=sys.stderr)
        return 128 + signals[0]
    return 0


def shared_runs_main(start: list[str], resume: list[str]) -> int:
    """`start`: config files of new runs; `resume`: run folders to resume."""
    specs = [RunSpec(load_config(path)) for path in start]
    specs += [RunSpec(RunFolder.existing(run_dir).read_config(), run_dir) for run_dir in resume]
    return run_shared(specs)
