"""`rl-lora compare`: run arms (adapter rank or FullFT) x variants (any other config keys, --vary) x learning rates
x seeds from one base config, each a normal run folder, then one report. A finished run is not re-run; an
interrupted one resumes from its checkpoint.

Every run shares the base config's data order and seeds (train.seed = the seed index), so runs differ only in
what is trained, the settings their variant names, and the LR.
"""
from __future__ import annotations

import copy
import itertools
import re
import signal
from dataclasses import dataclass
from pathlib import Path

from rl_lora.config import RunConfig, TrainMode, arm_slug, to_yaml, with_overrides
from rl_lora.compare.children import STOP_SIGNALS, ChildEnd, run_tied
from rl_lora.errors import Interrupted, UserError
from rl_lora.run.folder import RunFolder
from rl_lora.run.lock import FolderLock, holder_of

# The adapter families an arm can name, and how each is written: lora:RANK, dora:RANK, tiny:U, full.
FAMILIES = ("lora", "dora", "tiny", "full")


@dataclass(frozen=True)
class Arm:
    family: str  # one of FAMILIES
    size: int = 0  # lora/dora: the rank; tiny: U, the trainable parameters; full: 0

    @property
    def mode(self) -> TrainMode:
        return TrainMode.FULL if self.family == "full" else TrainMode.LORA

    @property
    def label(self) -> str:
        return "full" if self.family == "full" else f"{self.family}:{self.size}"

    @property
    def slug(self) -> str:
        return arm_slug(self.label)

    @classmethod
    def parse(cls, text: str) -> "Arm":
        text = text.strip()
        if text == "full":
            return cls("full")
        family, _, size = text.partition(":")
        if family in ("lora", "dora", "tiny") and size.isdigit() and int(size) >= 1:
            return cls(family, int(size))
        if family == "tiny" and size.isdigit():
            raise UserError(f"--arms: {text!r}: a tiny adapter trains at least 1 parameter (tiny:U, U >= 1)")
        raise UserError(f"--arms: {text!r} is not an arm; write lora:RANK, dora:RANK, tiny:PARAMS (e.g. tiny:13) "
                        "or full")

    def apply(self, config: RunConfig) -> RunConfig:
        """Set what this arm trains in `config` (lora.mode, lora.adapter, the rank or U); returns it."""
        config.lora.mode = self.mode
        if self.family in ("lora", "dora"):
            config.lora.adapter, config.lora.rank = self.family, self.size
        elif self.family == "tiny":
            config.lora.adapter, config.lora.tiny_params = "tiny", self.size
        return config


# Keys compare sets itself (per run), or that an arm sets: --vary refuses them, naming what to use instead.
COMPARE_OWNS = {"algo.lr": "compare sets each run's LR from its grid (--lr-sweep; algo.full_lr and "
                "algo.lora_lr_multiplier centre it, and may be varied)",
                "train.seed": "use --seeds", "train.name": "compare names each run", "train.runs_dir": "use --out",
                "train.variant": "compare names each variant",
                **{key: "use --arms (lora:RANK, dora:RANK, tiny:U, full)"
                   for key in ("lora.mode", "lora.rank", "lora.adapter", "lora.tiny_params")}}
# One value of --vary may carry more settings after "+" (ppo+algo.clip_eps_high=0.28): a "+" that starts a key.
RIDER = re.compile(r"\+(?=[a-z_]+\.[a-z_]+=)")


@dataclass(frozen=True)
class Variant:
    """An arm with the settings one point of the --vary grid gives it; without settings, the arm itself (same
    label, same run folder names as before --vary existed)."""
    arm: Arm
    settings: tuple[str, ...] = ()  # KEY=VALUE assignments, as --set takes them

    @property
    def family(self) -> str:
        return self.arm.family

    @property
    def mode(self) -> TrainMode:
        return self.arm.mode

    @property
    def name(self) -> str | None:
        """What the variant varies, written as on the command line: algo.loss=ppo+algo.clip_eps_high=0.28."""
        return "+".join(self.settings) or None

    @property
    def label(self) -> str:
        return f"{self.arm.label} {self.name}" if self.settings else self.arm.label

    @property
    def slug(self) -> str:
        """A run folder name's start: lora-r1-loss-ppo-clip_eps_high-0.28 (each key by its last part)."""
        parts = [f"{key.rsplit('.', 1)[-1]}-{value}" for key, _, value in (s.partition("=") for s in self.settings)]
        return "-".join([self.arm.slug] + [re.sub(r"[^A-Za-z0-9._-]+", "_", part) for part in parts])

    def apply(self, config: RunConfig) -> RunConfig:
        """This variant's config: the arm's adapter, then the settings (a copy when there are settings)."""
        self.arm.apply(config)
        if not self.settings:
            return config
        config = with_overrides(config, list(self.settings))
        config.train.variant = self.name
        return config


def parse_vary(texts: list[str], base: RunConfig) -> list[tuple[str, ...]]:
    """--vary KEY=V1,V2,... (repeatable: several make a grid) -> each grid point's settings. A value may carry
    more settings after "+": --vary algo.loss=is_pg,ppo+algo.clip_eps_high=0.28. Every setting is checked against
    the config (unknown keys and bad values are named) before anything runs."""
    axes, keys = [], set()
    for text in texts:
        key, sep, values = text.partition("=")
        key = key.strip()
        if not sep or not key or not values:
            raise UserError(f"--vary {text!r}: expected KEY=VALUE1,VALUE2 (e.g. --vary algo.loss=is_pg,gspo)")
        choices = [v.strip() for v in values.split(",")]
        if len(choices) < 2 or any(not c for c in choices):
            raise UserError(f"--vary {text!r}: give at least two values, comma-separated (one value is --set "
                            f"{key}=VALUE)")
        if len(set(choices)) != len(choices):
            raise UserError(f"--vary {text!r} names a value twice")
        if key in keys:
            raise UserError(f"--vary {key} is given twice: put all its values in one --vary")
        keys.add(key)
        axis = []
        for choice in choices:
            value, *riders = RIDER.split(choice)
            settings = (f"{key}={value}", *riders)
            for setting in settings:
                owned = setting.partition("=")[0]
                if owned in COMPARE_OWNS:
                    raise UserError(f"--vary {owned}: {COMPARE_OWNS[owned]}")
            with_overrides(base, list(settings))  # names an unknown key or a bad value now, before any run
            axis.append(settings)
        axes.append(axis)
    return [tuple(s for settings in point for s in settings) for point in itertools.product(*axes)]


def variants(arms: list[Arm], grid: list[tuple[str, ...]]) -> list[Variant]:
    return [Variant(arm, settings) for arm in arms for settings in (grid or [()])]


@dataclass(frozen=True)
class ArmRun:
    arm: Arm | Variant  # what is trained and with which settings (an Arm: the arm as the base config has it)
    lr: float
    seed: int

    @property
    def name(self) -> str:
        return f"{self.arm.slug}-lr{self.lr:.3g}-s{self.seed}"


def parse_arms(text: str) -> list[Arm]:
    arms = [Arm.parse(part) for part in text.split(",") if part.strip()]
    if not arms:
        raise UserError("--arms: name at least one arm, e.g. lora:1,lora:8,full")
    if len({a.label for a in arms}) != len(arms):
        raise UserError(f"--arms: {text!r} names an arm twice")
    return arms


def lr_centre(config: RunConfig, arm: Arm) -> float:
    """Each family's own centre: the LR a run of that arm gets when algo.lr is unset (RunConfig.learning_rate)."""
    config = arm.apply(copy.deepcopy(config))
    config.algo.lr = None
    return config.learning_rate()


def lr_at(config: RunConfig, arm: Arm, offset: int, step: float = 0.5) -> float:
    """The LR `offset` grid steps (`step` decades each; half a decade by default) from the arm's family centre:
    algo.full_lr for FullFT, lora_lr_multiplier x that for LoRA and DoRA, tiny_lr_multiplier x that for tiny
    adapters, so the published 10x shift shows as the arms' best LRs landing on different grid points."""
    return float(f"{lr_centre(config, arm) * 10 ** (offset * step):.3g}")


def grid_offsets(points: int) -> list[int]:
    return [i - points // 2 for i in range(points)]


def lr_grid(config: RunConfig, arm: Arm, points: int, step: float = 0.5) -> list[float]:
    return [lr_at(config, arm, offset, step) for offset in grid_offsets(points)]


def plan(config: RunConfig, arms: list[Arm | Variant], lr_points: int, seeds: int, step: float = 0.5) -> list[ArmRun]:
    if config.algo.lr is not None:
        raise UserError("compare sets each arm's LR itself: leave algo.lr unset (algo.full_lr centres the grid)")
    return [ArmRun(arm, lr, seed) for arm in arms for lr in lr_grid(config, arm, lr_points, step)
            for seed in range(seeds)]


def arm_config(base: RunConfig, run: ArmRun, runs_dir: Path) -> RunConfig:
    config = run.arm.apply(copy.deepcopy(base))
    config.algo.lr = run.lr
    config.train.seed = run.seed
    config.train.runs_dir = str(runs_dir)
    config.train.name = run.name
    return config


@dataclass(frozen=True)
class PendingRun:
    """A run compare still has to start (config_path) or resume (resume_dir)."""
    run: ArmRun
    prefix: str  # "[compare i/n] name:"
    config_path: Path | None = None
    resume_dir: Path | None = None

    @property
    def action(self) -> str:
        return "resuming" if self.resume_dir else "starting"

    def argv(self, start_flag: tuple[str, ...] = ()) -> list[str]:
        return ["--resume", str(self.resume_dir)] if self.resume_dir else [*start_flag, str(self.config_path)]


def _train(pending: PendingRun) -> None:
    """One arm in its own process (tied to this one: rl_lora.compare.children): its peak memory is its own, and a
    crash stops only that arm."""
    print(f"{pending.prefix} {pending.action}", flush=True)
    end = run_tied(["train", *pending.argv()])
    _stop_if_signalled(end, pending.run.name)
    if end.code != 0:
        raise UserError(f"{pending.prefix} the run failed (exit {end.code}); re-run compare to resume it")


def _train_shared(group: list[PendingRun]) -> None:
    """Runs that differ only in their adapter, side by side on one vLLM engine, in a process of their own."""
    argv = []
    for pending in group:
        print(f"{pending.prefix} {pending.action} on a shared engine", flush=True)
        argv += pending.argv(("--start",))
    end = run_tied(["shared-runs", *argv])
    names = ", ".join(p.run.name for p in group)
    _stop_if_signalled(end, names)
    if end.code != 0:
        raise UserError(f"[compare] the shared-engine runs {names} failed (exit {end.code}); re-run compare to resume "
                        "them (finished ones are kept)")


def _stop_if_signalled(end: ChildEnd, names: str) -> None:
    """Ctrl-C or SIGTERM reached compare while a child trained: the child stopped (after its step, with a
    checkpoint), and compare stops too rather than start the next run. A child stopped by a signal sent to it
    alone says so by its exit status (128 + the signal's number): compare stops the same way."""
    signum = end.stopped_by
    if signum is None and end.code - 128 in STOP_SIGNALS:
        signum = end.code - 128
    if signum is not None:
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        raise Interrupted(name, signum, f"while {names} trained; re-run compare to go on (finished runs are "
                          "kept, stopped ones resume)")


def engine_groups(pending: list[PendingRun], share_engine: bool) -> list[list[PendingRun]]:
    """With share_engine, the LoRA and tiny runs of one seed (every size and LR) form one group on one engine;
    FullFT runs push all weights into their engine and DoRA runs are served merged, so they run alone."""
    if not share_engine:
        return [[p] for p in pending]
    groups: dict[int, list[PendingRun]] = {}
    alone = []
    for p in pending:
        if p.run.arm.family in ("lora", "tiny"):  # DoRA has no vLLM LoRA kernel: served merged, alone
            groups.setdefault(p.run.seed, []).append(p)
        else:
            alone.append([p])
    return list(groups.values()) + alone


def run_all(base: RunConfig, runs: list[ArmRun], out: Path, share_engine: bool = False) -> list[Path]:
    """Each run in turn (one at a time: on a small machine arms side by side would only share its cores), or
    with share_engine, each seed's LoRA runs side by side on one engine."""
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    (out / "compare.yaml").write_text(to_yaml(base))  # the base config every arm was made from
    folders, pending = [], []
    for index, run in enumerate(runs, 1):
        config = arm_config(base, run, runs_dir)
        folder = RunFolder(runs_dir / run.name)
        folders.append(folder.path)
        prefix = f"[compare {index}/{len(runs)}] {run.name}:"
        holder = holder_of(folder.path)
        if holder is not None:  # a run still training here (started by hand, or left by an older compare)
            raise UserError(f"{prefix} its run folder {folder} is in use by {holder}; stop that process first (compare "
                            "neither removes nor resumes a folder another process writes)")
        if folder.finished(config.train.steps):
            print(f"{prefix} finished earlier, not re-run")
            continue
        if folder.resumable():
            pending.append(PendingRun(run, prefix, resume_dir=folder.path))
            continue
        folder.remove()  # killed before its first checkpoint (if it ran at all): nothing there to keep
        config_path = out / "configs" / f"{run.name}.yaml"
        config_path.parent.mkdir(exist_ok=True)
        config_path.write_text(to_yaml(config))
        pending.append(PendingRun(run, prefix, config_path=config_path))
    for group in engine_groups(pending, share_engine):
        if len(group) == 1:
            _train(group[0])
        else:
            _train_shared(group)
    return folders


def final_accuracy(run_dir: Path) -> float | None:
    summary = RunFolder(run_dir).read_summary()
    return summary.final_accuracy if summary else None


def lr_scores(base: RunConfig, arm: Arm, offsets: list[int], seeds: int, out: Path, step: float = 0.5) -> \
        dict[int, float]:
    """Mean final accuracy over the sweep's seeds at each grid point (-inf where none finished)."""
    scores = {}
    for offset in offsets:
        finals = [final_accuracy(out / "runs" / ArmRun(arm, lr_at(base, arm, offset, step), seed).name)
                  for seed in range(seeds)]
        finals = [f for f in finals if f is not None]
        scores[offset] = sum(finals) / len(finals) if finals else float("-inf")
    return scores


def best_offset(scores: dict[int, float]) -> int:
    return best_offsets(scores, 1)[0]


def best_offsets(scores: dict[int, float], count: int) -> list[int]:
    """The `count` grid points with the highest scores, best first (ties: the lower LR)."""
    return sorted(sorted(scores), key=lambda offset: -scores[offset])[:count]


def edge_to_extend(scores: dict[int, float]) -> int | None:
    """The next grid point past an end whose LR beat its inner neighbour outright (a tie says nothing)."""
    offsets = sorted(scores)
    if len(offsets) < 3:
        return None
    if scores[offsets[0]] > max(scores[o] for o in offsets[1:]):
        return offsets[0] - 1
    if scores[offsets[-1]] > max(scores[o] for o in offsets[:-1]):
        return offsets[-1] + 1
    return None


def run_compare(base: RunConfig, arms: list[Arm | Variant], lr_points: int, seeds: int, out: Path, lr_extend: int = 0,
                seeds_at_best: int = 0, learner_memory: bool = True, share_engine: bool = False,
                lr_step: float = 0.5, best_points: int = 1) -> list[Path]:
    """The sweep (arms x LR grid x seeds, grid points lr_step decades apart); then, per arm, up to lr_extend more
    LRs past a grid end that won (a best LR on the edge is only a bound), and more seeds up to seeds_at_best at
    each of the best_points best LRs (2: enough to tell the best LR from its neighbour over seeds). Last, each
    arm's learner alone, for its memory. Every decision is read back from finished run folders, so a re-run after
    a crash makes the same ones. share_engine: LoRA runs of one seed train side by side on one vLLM engine."""
    varied = [arm for arm in arms if isinstance(arm, Variant) and arm.settings]
    if share_engine and varied:
        raise UserError("--share-engine trains runs that differ only in their adapter on one engine; runs that "
                        "--vary other settings run one at a time: drop --share-engine")
    check_runs(base, plan(base, arms, lr_points, seeds, lr_step))
    if share_engine and (base.rollout.backend != "vllm" or base.rollout.num_workers != 0):
        raise UserError("--share-engine puts several runs' adapters in one vLLM engine's LoRA slots: it needs "
                        "rollout.backend=vllm and rollout.num_workers=0 (--set rollout.backend=vllm)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the compare folder {out}: {error.strerror}") from None
    with FolderLock(out, "compare folder").acquire("run compare in it"):  # one compare per output folder
        return _run_compare(base, arms, lr_points, seeds, out, lr_extend, seeds_at_best, learner_memory,
                            share_engine, lr_step, best_points)


def check_runs(base: RunConfig, runs: list[ArmRun]) -> None:
    """Every planned run's config passes the checks a run makes at its start (rloo with group_size 1, ...), and
    its folder name fits a file name, before the first run starts."""
    for run in runs:
        if len(run.name.encode()) > 255:
            raise UserError(f"compare: the run folder name {run.name[:60]}... is longer than 255 bytes: vary fewer "
                            "keys at once, or shorter values")
        config = arm_config(base, run, Path("runs"))
        try:
            config.check()
        except UserError as error:
            raise UserError(f"compare: {run.arm.label}: {error}") from None


def _run_compare(base: RunConfig, arms: list[Arm | Variant], lr_points: int, seeds: int, out: Path, lr_extend: int,
                 seeds_at_best: int, learner_memory: bool, share_engine: bool, lr_step: float,
                 best_points: int) -> list[Path]:
    folders = run_all(base, plan(base, arms, lr_points, seeds, lr_step), out, share_engine)
    for arm in arms:
        offsets = grid_offsets(lr_points)

        def lr(offset: int) -> float:
            return lr_at(base, arm, offset, lr_step)

        for _ in range(lr_extend):
            scores = lr_scores(base, arm, offsets, seeds, out, lr_step)
            offset = edge_to_extend(scores)
            if offset is None:
                break
            print(f"[compare] {arm.label}: the best LR, {lr(best_offset(scores)):.3g}, is at the end "
                  f"of the grid; trying {lr(offset):.3g}", flush=True)
            offsets = sorted(offsets + [offset])
            folders += run_all(base, [ArmRun(arm, lr(offset), s) for s in range(seeds)], out, share_engine)
        if seeds_at_best > seeds:
            for offset in best_offsets(lr_scores(base, arm, offsets, seeds, out, lr_step), best_points):
                print(f"[compare] {arm.label}: seeds {seeds}..{seeds_at_best - 1} at LR {lr(offset):.3g}, one of "
                      f"its {best_points} best", flush=True)
                folders += run_all(base, [ArmRun(arm, lr(offset), s) for s in range(seeds, seeds_at_best)], out,
                                   share_engine)
    if learner_memory:
        measure_learners(arms, folders)
    return folders


def measure_learners(arms: list[Arm | Variant], folders: list[Path]) -> None:
    """One learner-only measurement per arm (memory does not depend on the LR or the seed), kept in the arm's
    first run folder, where `--report` finds it too."""
    from rl_lora.compare.learner_memory import measure_run

    for arm in arms:
        mine = [RunFolder(f) for f in folders if f.name.startswith(f"{arm.slug}-lr")]
        if mine and not any(f.learner_memory_path.is_file() for f in mine):
            print(f"[compare] {arm.label}: measuring the learner alone (memory, step time)", flush=True)
            measure_run(mine[0])
