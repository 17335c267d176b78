"""A run folder, and the only module that knows its layout:

    config.yaml            the run's whole config (rl_lora.config), as run and as resumed
    metrics.jsonl          one JSON line per step (rl_lora.types.StepMetrics)
    tensorboard/           the same scalars for TensorBoard
    evals/step_N.jsonl     test answers, one line per problem (step 0: the base model); sampled (eval.samples=N):
                           per problem the counts too (samples, correct, answers' votes, maj@N)
    checkpoints/step_N/    adapter/ (PEFT) or model/ (FullFT, a HF folder), optimizer.pt, rng.pt, trainer_state.json
    plots/curve.png        reward and accuracy curves
    summary.json           written when the run ends (RunSummary)
    learner_memory.json    the learner alone, measured by `rl-lora learner-memory` (compare does it per arm)
    .lock                  who writes here now (rl_lora.run.lock: an OS lock held for the life of the run)
    code.json, code.diff   each session of the run: package version, git commit, uncommitted diff, and the device
                           and dtype it computed in (config.yaml keeps model.device/dtype as given, e.g. auto)

Everything that reads or writes these goes through RunFolder, so the format is defined once. Folders written by
earlier versions load unchanged (fields added since take their defaults).
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rl_lora.config import RunConfig, load_config, to_yaml
from rl_lora.errors import UserError
from rl_lora.io import atomic_write_text
from rl_lora.run.lock import FolderLock, holder_of
from rl_lora.step.evaluate import EvalResult
from rl_lora.types import StepMetrics


@dataclass(frozen=True)
class RunSummary:
    """How a run ended: what `rl-lora compare` reports beside the metrics."""
    run_dir: str
    steps: int  # the last completed step
    base_accuracy: float | None
    final_accuracy: float | None  # None: the run stopped before its last evaluation
    # This process's peak RSS (with Ray: the driver only; on a shared engine: the host, every run and the engine),
    # the time of this session of the run (a resumed run counts from its resume), the update's size.
    wall_s: float | None = None
    peak_rss_mb: float | None = None
    trainable_parameters: int | None = None
    update_bytes: int | None = None
    reward_failures: int | None = None  # completions whose reward failed (scored 0 or left out, by reward.on_error)
    eval_reward_failures: int | None = None  # the same, in the run's evaluations (greedy test answers)
    engine_shared_with: tuple[str, ...] = ()  # runs that trained beside this one on one vLLM engine

    def to_json(self) -> str:
        record = dataclasses.asdict(self)
        if not self.engine_shared_with:  # only hosted runs record it
            del record["engine_shared_with"]
        else:
            record["engine_shared_with"] = list(self.engine_shared_with)
        return json.dumps(record, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "RunSummary":
        record = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        record["engine_shared_with"] = tuple(record.get("engine_shared_with", ()))
        return cls(**{k: v for k, v in record.items() if k in known})


@dataclass(frozen=True)
class LearnerAlone:
    """The learner measured alone on a step-sized batch (rl_lora.compare.learner_memory)."""
    learner_peak_mb: float | None
    step_s_median: float | None


class CheckpointFolder:
    """checkpoints/step_N: appears whole or not at all (written under a staging name, then renamed)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.adapter = self.path / "adapter"  # LoRA: a PEFT adapter folder (`rl-lora eval --adapter` takes it)
        self.model = self.path / "model"  # FullFT: a complete HF model folder (`rl-lora eval --model` takes it)
        self.optimizer, self.rng = self.path / "optimizer.pt", self.path / "rng.pt"
        self.trainer_state = self.path / "trainer_state.json"  # written last: its presence marks a whole checkpoint

    @property
    def step(self) -> int:
        return int(self.path.name.split("_")[1])

    @property
    def weights_file(self) -> Path:
        if self.adapter.is_dir():
            return self.adapter / "adapter_model.safetensors"
        return self.model / "model.safetensors"

    @property
    def complete(self) -> bool:
        return self.trainer_state.is_file()

    def staging(self) -> "CheckpointFolder":
        return CheckpointFolder(self.path.with_name(f".{self.path.name}.partial"))


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def name(self) -> str:
        return self.path.name

    def __str__(self) -> str:
        return str(self.path)

    @property
    def contents(self) -> str:
        """What a user finds in the folder, for the line a finished run prints."""
        return "metrics.jsonl, plots/curve.png, checkpoints/, tensorboard/, summary.json"

    # -- finding and creating ------------------------------------------------------------------------------
    @classmethod
    def for_new_run(cls, config: RunConfig) -> "RunFolder":
        """train.runs_dir / (train.name, or <task>-<arm>-<time>, e.g. arithmetic-lora-r1-...); `claim` creates it."""
        name = config.train.name or f"{config.task.name}-{config.arm_slug}" + time.strftime("-%Y%m%d-%H%M%S")
        return cls(Path(config.train.runs_dir) / name)

    @classmethod
    def existing(cls, path: str | Path) -> "RunFolder":
        folder = cls(path)
        if not folder.is_run():
            raise UserError(f"{folder} is not a run folder (no config.yaml)")
        return folder

    def is_run(self) -> bool:
        return self.config_path.is_file()

    def claim(self, config: RunConfig) -> FolderLock:
        """Create the folder, locked, with its config, before anything heavy loads: a run that cannot write here, or
        that another run started at the same moment under the same name, stops at once. The caller holds the lock
        for the run's life."""
        try:
            self.path.mkdir(parents=True)
        except FileExistsError:
            holder = holder_of(self.path)
            if holder is not None:  # a run is writing there now: resuming it would be refused too
                raise UserError(f"run folder {self} is in use by {holder}; choose another train.name") from None
            raise UserError(f"run folder {self} exists: choose another train.name or resume it with "
                            f"--resume {self}") from None
        except OSError as error:
            raise UserError(f"cannot create run folder {self}: {error.strerror}") from None
        lock = self.lock().acquire()
        self.write_config(config)
        return lock

    def lock(self) -> FolderLock:
        return FolderLock(self.path, "run folder")

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    # -- config --------------------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    def read_config(self, overrides: list[str] = ()) -> RunConfig:
        return load_config(self.config_path, list(overrides))

    def write_config(self, config: RunConfig) -> None:
        warning = ""
        if config.env.sandbox == "none" and config.runs_model_code():
            warning = "# WARNING: env.sandbox=none: code the model wrote ran unisolated, as the user who started the run\n"
        atomic_write_text(self.config_path, warning + to_yaml(config))

    # -- summary -------------------------------------------------------------------------------------------
    def read_summary(self) -> RunSummary | None:
        path = self.path / "summary.json"
        return RunSummary.from_json(path.read_text()) if path.is_file() else None

    def write_summary(self, summary: RunSummary) -> None:
        atomic_write_text(self.path / "summary.json", summary.to_json())

    def finished(self, steps: int) -> bool:
        """The run ended after its last step (a run stopped early has a summary too, with fewer steps)."""
        summary = self.read_summary()
        return summary is not None and summary.steps == steps

    # -- metrics and evaluations ---------------------------------------------------------------------------
    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tensorboard"

    def metric_records(self) -> list[dict[str, Any]]:
        """metrics.jsonl's records. A torn last line (the disk filled, or the process died, mid-append) is
        dropped: the step it was writing was not checkpointed either, and a resume runs it again."""
        if not self.metrics_path.exists():
            return []
        lines = self.metrics_path.read_text(errors="replace").splitlines()
        records = []
        for number, line in enumerate(lines, 1):
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if number < len(lines):
                    raise UserError(f"{self.metrics_path}:{number}: not a JSON line (only the last line may be "
                                    "torn); fix or remove that line") from None
        return records

    def read_metrics(self) -> list[StepMetrics]:
        known = {f.name for f in dataclasses.fields(StepMetrics)}
        return [StepMetrics(**{k: v for k, v in record.items() if k in known},
                            reward_parts={k.removeprefix("reward/"): v for k, v in record.items()
                                          if k.startswith("reward/")} or None,
                            stop_reasons={k.removeprefix("stop/"): v for k, v in record.items()
                                          if k.startswith("stop/")} or None,
                            test_sampled={k.removeprefix("test/"): v for k, v in record.items()
                                          if k.startswith("test/")} or None)
                for record in self.metric_records()]

    def write_eval(self, step: int, result: EvalResult) -> None:
        folder = self.path / "evals"
        folder.mkdir(exist_ok=True)
        atomic_write_text(folder / f"step_{step}.jsonl", result.records_jsonl())

    def eval_steps(self) -> list[int]:
        """The steps with an evaluation file (0: the base model), in order."""
        return sorted(int(p.stem.split("_")[1]) for p in (self.path / "evals").glob("step_*.jsonl"))

    def read_eval(self, step: int) -> list[dict]:
        """evals/step_N.jsonl's records, one per problem."""
        path = self.path / "evals" / f"step_{step}.jsonl"
        return [json.loads(line) for line in path.read_text(errors="replace").splitlines() if line.strip()]

    def eval_failures(self) -> tuple[int, int]:
        """(completions whose reward failed, completions) over every evaluation of the run (evals/step_N.jsonl;
        files from before the field existed count none)."""
        failed = total = 0
        for path in (self.path / "evals").glob("step_*.jsonl"):
            for line in path.read_text(errors="replace").splitlines():
                if line.strip():
                    total += 1
                    failed += bool(json.loads(line).get("reward_failed"))
        return failed, total

    @property
    def plot_path(self) -> Path:
        return self.path / "plots" / "curve.png"

    # -- checkpoints ---------------------------------------------------------------------------------------
    def checkpoint(self, step: int) -> CheckpointFolder:
        return CheckpointFolder(self.path / "checkpoints" / f"step_{step}")

    def checkpoints(self) -> list[CheckpointFolder]:
        """Complete checkpoints, oldest first (a staging folder left by a crash is not one)."""
        found = [CheckpointFolder(p) for p in (self.path / "checkpoints").glob("step_*")]
        return sorted((c for c in found if c.complete), key=lambda c: c.step)

    def latest_checkpoint(self) -> CheckpointFolder | None:
        """None: the run stopped before its first checkpoint (a resume starts it from step 0)."""
        found = self.checkpoints()
        return found[-1] if found else None

    def resumable(self) -> bool:
        return self.is_run() and bool(self.checkpoints())

    # -- the code that ran ----------------------------------------------------------------------------------
    def record_code(self, **session: Any) -> None:
        """Append this session's code version, and `session` (its device and dtype), to code.json; from a git
        checkout with changes, code.diff holds the uncommitted diff (the last session's)."""
        sessions = self.sessions()
        version, diff = _code_version()
        sessions.append({**version, **session, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        path = self.path / "code.json"
        atomic_write_text(path, json.dumps({"sessions": sessions}, indent=1) + "\n")
        if diff:
            atomic_write_text(self.path / "code.diff", diff)

    def sessions(self) -> list[dict[str, Any]]:
        """code.json's sessions, oldest first (folders from before sessions recorded a dtype lack that key)."""
        path = self.path / "code.json"
        return json.loads(path.read_text())["sessions"] if path.is_file() else []

    # -- the learner measured alone ------------------------------------------------------------------------
    @property
    def learner_memory_path(self) -> Path:
        return self.path / "learner_memory.json"

    def write_learner_memory(self, measurement: dict[str, Any]) -> Path:
        atomic_write_text(self.learner_memory_path, json.dumps(measurement, indent=1) + "\n")
        return self.learner_memory_path

    def read_learner_memory(self) -> LearnerAlone | None:
        if not self.learner_memory_path.is_file():
            return None
        record = json.loads(self.learner_memory_path.read_text())
        return LearnerAlone(record.get("learner_peak_mb"), record.get("step_s_median"))


def _code_version() -> tuple[dict[str, Any], str]:
    """({package version, git commit, whether the checkout had uncommitted changes}, the diff)."""
    import importlib.metadata
    import subprocess

    try:
        version = importlib.metadata.version("rl-lora")
    except importlib.metadata.PackageNotFoundError:
        version = None
    checkout = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD") if (checkout / ".git").exists() else None
    diff = (git("diff", "HEAD") or "") if commit else ""
    return {"package_version": version, "git_commit": commit.strip() if commit else None,
            "uncommitted_changes": bool(diff)}, diff
