"""Several LoRA runs that differ only in their adapter (rank, LR), trained side by side in one process on one vLLM
engine, each policy in its own LoRA slot (rl_lora.shared_engine). `rl-lora compare --share-engine` starts one
of these per seed; each run is a normal run folder, resumable on its own.

    python -m rl_lora.shared_runs [--start CONFIG ...] [--resume RUN_DIR ...]

Ctrl-C once: every run finishes its step, checkpoints and stops; twice: stop at once.
"""
from __future__ import annotations

import argparse
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path

from rl_lora.config import RunConfig, load_config
from rl_lora.errors import UserError

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
        if c.lora.mode != "lora" or c.rollout.backend != "vllm" or c.rollout.num_workers != 0:
            raise UserError(f"{spec.name}: only LoRA runs on the vllm backend in this process (lora.mode=lora, "
                            "rollout.backend=vllm, rollout.num_workers=0) can share an engine")
        for key in SHARED_KEYS:
            if _value(c, key) != _value(specs[0].config, key):
                raise UserError(f"{spec.name}: {key} is {_value(c, key)!r}, {specs[0].name} has "
                                f"{_value(specs[0].config, key)!r}; runs on one engine must agree on {key}")


def start_engine(specs: list[RunSpec]):
    from rl_lora.models import load_tokenizer, resolve_model
    from rl_lora.rollout.vllm import VLLMBackend
    from rl_lora.shared_engine import SharedEngine, engine_lora_rank

    first = specs[0].config
    engine = VLLMBackend(str(resolve_model(first.model.name)), load_tokenizer(first.model.name),
                         dtype=first.model.dtype, device=first.model.device, serve="lora",
                         max_model_len=first.rollout.vllm_max_model_len,
                         max_lora_rank=engine_lora_rank([s.config.lora.rank for s in specs]),
                         lora_slots=len(specs), seed=first.train.seed)
    return SharedEngine(engine)


def run_shared(specs: list[RunSpec]) -> int:
    """Every run in a thread of its own; returns 0 when all of them finished (or stopped cleanly on Ctrl-C)."""
    from rl_lora.train_command import HostedRun, train_main

    check_shareable(specs)
    shared = start_engine(specs)
    stop = threading.Event()
    codes: dict[str, int] = {}

    def run(spec: RunSpec, hosted: HostedRun) -> None:
        try:
            codes[spec.name] = train_main(None if spec.resume else spec.config, spec.resume, [], hosted)
        except UserError as error:
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
    try:
        while any(t.is_alive() for t in threads):
            try:
                for thread in threads:
                    thread.join(timeout=0.5)
            except KeyboardInterrupt:
                if stop.is_set():
                    raise
                stop.set()
                print("[shared engine] stopping every run after its step (Ctrl-C again to abort)", file=sys.stderr,
                      flush=True)
    except KeyboardInterrupt:
        print("[shared engine] aborted; runs resume from their last checkpoints", file=sys.stderr)
        return 130
    failed = [name for name, code in codes.items() if code != 0]
    if failed:
        print(f"[shared engine] failed: {', '.join(failed)}", file=sys.stderr)
        return max(codes.values())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", action="append", default=[], metavar="CONFIG", help="a new run from this config "
                        "(its train.runs_dir/train.name is the run folder)")
    parser.add_argument("--resume", action="append", default=[], metavar="RUN_DIR", help="resume this run folder")
    args = parser.parse_args(argv)
    try:
        specs = [RunSpec(load_config(path)) for path in args.start]
        for run_dir in args.resume:
            if not (Path(run_dir) / "config.yaml").is_file():
                raise UserError(f"{run_dir} is not a run folder (no config.yaml)")
            specs.append(RunSpec(load_config(Path(run_dir) / "config.yaml"), run_dir))
        return run_shared(specs)
    except UserError as error:
        print(f"rl-lora: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
