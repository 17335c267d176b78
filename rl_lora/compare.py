"""`rl-lora compare`: run arms (adapter rank or FullFT) x learning rates x seeds from one base config, each a
normal run folder, then one report. A finished arm is not re-run; an interrupted one resumes from its checkpoint.

Every arm shares the base config's data order and seeds (train.seed = the seed index), so arms differ only in
what is trained and at which LR.
"""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from rl_lora.config import RunConfig, to_yaml
from rl_lora.errors import UserError


@dataclass(frozen=True)
class Arm:
    mode: str  # "lora" or "full"
    rank: int = 0

    @property
    def label(self) -> str:
        return f"lora:{self.rank}" if self.mode == "lora" else "full"

    @classmethod
    def parse(cls, text: str) -> "Arm":
        text = text.strip()
        if text == "full":
            return cls("full")
        kind, _, rank = text.partition(":")
        if kind == "lora" and rank.isdigit() and int(rank) >= 1:
            return cls("lora", int(rank))
        raise UserError(f"--arms: {text!r} is not an arm; write lora:RANK (e.g. lora:1) or full")


@dataclass(frozen=True)
class ArmRun:
    arm: Arm
    lr: float
    seed: int

    @property
    def name(self) -> str:
        return f"{self.arm.label.replace(':', '-r')}-lr{self.lr:.3g}-s{self.seed}"


def parse_arms(text: str) -> list[Arm]:
    arms = [Arm.parse(part) for part in text.split(",") if part.strip()]
    if not arms:
        raise UserError("--arms: name at least one arm, e.g. lora:1,lora:8,full")
    if len({a.label for a in arms}) != len(arms):
        raise UserError(f"--arms: {text!r} names an arm twice")
    return arms


def lr_grid(config: RunConfig, arm: Arm, points: int) -> list[float]:
    """Half-decade steps centred on the FullFT LR (full_lr) for FullFT, and on lora_lr_multiplier x that for
    LoRA: the published 10x shift shows as the two arms' best LRs landing on different grid points."""
    centre = config.algo.full_lr * (config.algo.lora_lr_multiplier if arm.mode == "lora" else 1.0)
    first = -(points // 2)
    return [float(f"{centre * 10 ** ((first + i) / 2):.3g}") for i in range(points)]


def plan(config: RunConfig, arms: list[Arm], lr_points: int, seeds: int) -> list[ArmRun]:
    if config.algo.lr is not None:
        raise UserError("compare sets each arm's LR itself: leave algo.lr unset (algo.full_lr centres the grid)")
    return [ArmRun(arm, lr, seed) for arm in arms for lr in lr_grid(config, arm, lr_points) for seed in range(seeds)]


def arm_config(base: RunConfig, run: ArmRun, runs_dir: Path) -> RunConfig:
    config = copy.deepcopy(base)
    config.lora.mode = run.arm.mode
    if run.arm.mode == "lora":
        config.lora.rank = run.arm.rank
    config.algo.lr = run.lr
    config.train.seed = run.seed
    config.train.runs_dir = str(runs_dir)
    config.train.name = run.name
    return config


def finished(run_dir: Path, steps: int) -> bool:
    summary = run_dir / "summary.json"
    return summary.is_file() and json.loads(summary.read_text()).get("steps") == steps


def _train(argv: list[str], prefix: str) -> None:
    """One arm in its own process: its peak memory is its own, and a crash stops only that arm."""
    code = subprocess.run([sys.executable, "-m", "rl_lora.cli", "train", *argv]).returncode
    if code != 0:
        raise UserError(f"{prefix} the run failed (exit {code}); re-run compare to resume it")


def run_all(base: RunConfig, runs: list[ArmRun], out: Path) -> list[Path]:
    """Each arm in turn (one at a time: on a small machine arms side by side would only share its cores)."""
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    (out / "compare.yaml").write_text(to_yaml(base))  # the base config every arm was made from
    folders = []
    for index, run in enumerate(runs, 1):
        config = arm_config(base, run, runs_dir)
        run_dir = runs_dir / run.name
        folders.append(run_dir)
        prefix = f"[compare {index}/{len(runs)}] {run.name}:"
        if finished(run_dir, config.train.steps):
            print(f"{prefix} finished earlier, not re-run")
            continue
        if (run_dir / "config.yaml").is_file() and any((run_dir / "checkpoints").glob("step_*/trainer_state.json")):
            print(f"{prefix} resuming", flush=True)
            _train(["--resume", str(run_dir)], prefix)
            continue
        if run_dir.exists():  # killed before its first checkpoint: nothing there to keep
            shutil.rmtree(run_dir)
        print(f"{prefix} starting", flush=True)
        config_path = out / "configs" / f"{run.name}.yaml"
        config_path.parent.mkdir(exist_ok=True)
        config_path.write_text(to_yaml(config))
        _train([str(config_path)], prefix)
    return folders
