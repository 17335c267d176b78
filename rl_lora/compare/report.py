"""The compare report: run folders -> one table (report.md, report.json) and PNG plots. Works on any run folders
(`rl-lora compare --report RUN_DIRS...`), so a report can be rebuilt without training."""
from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from rl_lora.errors import UserError
from rl_lora.io import atomic_write_text
from rl_lora.run.folder import RunFolder
from rl_lora.step.sampled import mean_pass_at_k


@dataclass(frozen=True)
class RunRecord:
    arm: str  # the arm, then the variant compare --vary gave it: "lora:1 algo.loss=gspo" (RunConfig.compare_label)
    lr: float
    seed: int
    steps: int
    accuracy_curve: list[tuple[int, float]]  # (step, greedy test accuracy), step 0 = base model
    reward_curve: list[tuple[int, float]]
    final_accuracy: float | None
    wall_s: float | None
    peak_rss_mb: float | None
    update_bytes: int | None
    step_s: float
    sync_ms: float
    learner_peak_mb: float | None = None  # from a learner-only measurement (rl_lora.compare.learner_memory)
    learner_step_s: float | None = None
    engine_shared_with: tuple[str, ...] = ()  # runs that trained beside this one on one vLLM engine
    trainable_params: int | None = None
    episodes: int | None = None  # completions the run learned from (steps x prompts x group): its information bound
    # With eval.samples=N: pass@k at the last evaluated step and of the base model (step 0), from the evals' counts.
    pass_at_k: dict[int, float] | None = None
    base_pass_at_k: dict[int, float] | None = None

    @property
    def gain(self) -> float | None:
        """Final test accuracy over the base model's."""
        base = self.accuracy_curve[0][1] if self.accuracy_curve and self.accuracy_curve[0][0] == 0 else None
        return None if base is None or self.final_accuracy is None else self.final_accuracy - base


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _pass_curve(folder: RunFolder, step: int, ks: tuple[int, ...]) -> dict[int, float] | None:
    """pass@k of one evaluation from its per-problem counts; None for a greedy evaluation."""
    counts = [(r["samples"], r["correct"]) for r in folder.read_eval(step) if r.get("samples") is not None]
    return {k: mean_pass_at_k(counts, k) for k in ks} if counts else None


def _pass_curves(folder: RunFolder, ks: tuple[int, ...]) -> tuple[dict | None, dict | None]:
    """(the last evaluation's pass@k, the base model's)."""
    steps = folder.eval_steps()
    final = _pass_curve(folder, steps[-1], ks) if steps and steps[-1] > 0 else None
    base = _pass_curve(folder, 0, ks) if steps and steps[0] == 0 else None
    return final, base


def read_run(run_dir: Path) -> RunRecord:
    folder = RunFolder.existing(run_dir)
    config = folder.read_config()
    summary = folder.read_summary()
    metrics = folder.read_metrics()
    learner_alone = folder.read_learner_memory()
    if not metrics:
        raise UserError(f"{run_dir} has no metrics.jsonl steps yet")
    curve = [(m.step, m.test_accuracy) for m in metrics if m.test_accuracy is not None]
    if summary is not None and summary.base_accuracy is not None:
        curve = [(0, summary.base_accuracy)] + curve
    passes, base_passes = _pass_curves(folder, config.eval.ks()) if config.eval.samples > 1 else (None, None)
    return RunRecord(
        arm=config.compare_label, lr=config.learning_rate(), seed=config.train.seed, steps=metrics[-1].step,
        accuracy_curve=curve, reward_curve=[(m.step, m.reward_mean) for m in metrics],
        final_accuracy=summary.final_accuracy if summary else None, wall_s=summary.wall_s if summary else None,
        peak_rss_mb=summary.peak_rss_mb if summary else None, update_bytes=summary.update_bytes if summary else None,
        step_s=_median([m.time_step for m in metrics]), sync_ms=1000 * _median([m.time_sync for m in metrics]),
        learner_peak_mb=learner_alone.learner_peak_mb if learner_alone else None,
        learner_step_s=learner_alone.step_s_median if learner_alone else None,
        engine_shared_with=summary.engine_shared_with if summary else (),
        trainable_params=summary.trainable_parameters if summary else None,
        episodes=metrics[-1].step * config.rollout.prompts_per_step * config.rollout.group_size,
        pass_at_k=passes, base_pass_at_k=base_passes)


@dataclass(frozen=True)
class ArmRow:
    """One row of the report: an arm at its best LR."""
    arm: str
    best_lr: float
    seeds: int
    final_accuracy: tuple[float, float] | None  # (mean, spread over seeds)
    best_accuracy: tuple[float, float] | None
    steps_to_90pct: float | None
    wall_s: float
    peak_rss_mb: float
    step_s: float
    update_bytes: int | None
    sync_ms: float
    learner_peak_mb: float | None
    learner_step_s: float | None
    lr_finals: dict[float, float]  # mean final accuracy at each LR the arm ran
    trainable_params: int | None = None
    gain: tuple[float, float] | None = None  # final - base test accuracy: (mean, spread over seeds)
    episodes: int | None = None
    pass_at_k: dict[int, tuple[float, float]] | None = None  # eval.samples=N: k -> (mean, spread over seeds)

    @property
    def is_full(self) -> bool:
        return self.arm == "full"  # FullFT as the arms compare it (a variant of it is a row of its own)

    @property
    def order(self) -> tuple:
        """Fewest trained parameters first (tiny, then LoRA ranks, then FullFT); by label where unknown."""
        family, _, size = self.arm.split(" ")[0].partition(":")
        if self.trainable_params is not None:
            return (self.trainable_params, self.arm)
        return ({"tiny": 0, "lora": 1, "dora": 2}.get(family, 3), int(size or 0))


def _median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.pstdev(values) if len(values) > 1 else 0.0)


def steps_to_90(curve: list[tuple[int, float]]) -> int | None:
    """First evaluated step whose accuracy reaches 90 % of the final gain over the base model."""
    if len(curve) < 2:
        return None
    base, final = curve[0][1], curve[-1][1]
    target = base + 0.9 * (final - base)
    return next(step for step, accuracy in curve if accuracy >= target) if final > base else None


def summarise(records: list[RunRecord]) -> list[ArmRow]:
    """One row per arm at its best LR: the highest mean final accuracy over the seeds every LR of the arm ran
    (so extra seeds at one LR do not tilt the choice); the row then shows all seeds at that LR."""
    by_arm: dict[str, dict[float, list[RunRecord]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        by_arm[record.arm][record.lr].append(record)
    rows = []
    for arm, by_lr in by_arm.items():
        common_seeds = set.intersection(*({r.seed for r in runs} for runs in by_lr.values()))

        def score(lr: float) -> float:
            finals = [r.final_accuracy for r in by_lr[lr]
                      if r.final_accuracy is not None and (not common_seeds or r.seed in common_seeds)]
            return statistics.mean(finals) if finals else float("-inf")

        best_lr = max(by_lr, key=score)
        runs = by_lr[best_lr]
        finals = [r.final_accuracy for r in runs if r.final_accuracy is not None]
        bests = [max(a for _, a in r.accuracy_curve) for r in runs if r.accuracy_curve]
        reach = [s for s in (steps_to_90(r.accuracy_curve) for r in runs) if s is not None]
        rows.append(ArmRow(
            arm=arm, best_lr=best_lr, seeds=len(runs),
            final_accuracy=_mean_std(finals) if finals else None,
            best_accuracy=_mean_std(bests) if bests else None,
            steps_to_90pct=_median(reach) if reach else None,
            wall_s=_median([r.wall_s for r in runs if r.wall_s is not None]),
            peak_rss_mb=_median([r.peak_rss_mb for r in runs if r.peak_rss_mb is not None]),
            step_s=_median([r.step_s for r in runs]),
            update_bytes=runs[0].update_bytes, sync_ms=_median([r.sync_ms for r in runs]),
            learner_peak_mb=_median_or_none([r.learner_peak_mb for lr_runs in by_lr.values() for r in lr_runs
                                             if r.learner_peak_mb is not None]),
            learner_step_s=_median_or_none([r.learner_step_s for lr_runs in by_lr.values() for r in lr_runs
                                            if r.learner_step_s is not None]),
            lr_finals={lr: score(lr) for lr in sorted(by_lr)},
            trainable_params=next((r.trainable_params for r in runs if r.trainable_params is not None), None),
            gain=_mean_std(gains) if (gains := [r.gain for r in runs if r.gain is not None]) else None,
            episodes=max((r.episodes for r in runs if r.episodes is not None), default=None),
            pass_at_k=_pass_spread([r.pass_at_k for r in runs]),
        ))
    return sorted(rows, key=lambda row: row.order)


def _pass_spread(curves: list[dict[int, float] | None]) -> dict[int, tuple[float, float]] | None:
    """pass@k per k over seeds: (mean, spread), on the k every seed's curve has."""
    curves = [c for c in curves if c]
    if not curves:
        return None
    return {k: _mean_std([c[k] for c in curves]) for k in sorted(set.intersection(*(set(c) for c in curves)))}


def base_pass_at_k(records: list[RunRecord]) -> dict[int, tuple[float, float]] | None:
    """The base model's pass@k over every run's step-0 evaluation (each run samples it with its own seed)."""
    return _pass_spread([r.base_pass_at_k for r in records])


def pass_table(rows: list[ArmRow], base: dict[int, tuple[float, float]] | None) -> str:
    """pass@k at the final step, a column per k; the base model's first."""
    sampled = [row for row in rows if row.pass_at_k]
    if not sampled:
        return ""
    ks = sorted(set.intersection(*(set(row.pass_at_k) for row in sampled)))
    lines = ["| arm (best LR) | " + " | ".join(f"pass@{k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    if base:
        lines.append("| base model | " + " | ".join(_pm(base[k]) if k in base else "—" for k in ks) + " |")
    lines += [f"| {row.arm} ({row.best_lr:.3g}) | " + " | ".join(_pm(row.pass_at_k[k]) for k in ks) + " |"
              for row in sampled]
    return ("pass@k at the final step (eval.samples per problem, the unbiased estimator; ± over seeds):\n\n"
            + "\n".join(lines) + "\n\n")


def best_lr_ratios(rows: list[ArmRow]) -> dict[str, float]:
    """Each LoRA arm's best LR over FullFT's best LR (the published finding: about 10)."""
    full = next((row.best_lr for row in rows if row.is_full), None)
    return {row.arm: row.best_lr / full for row in rows if full and not row.is_full}


def gain_recovery(rows: list[ArmRow], reference: str = "lora:1") -> dict[str, float]:
    """Each arm's mean accuracy gain over the reference arm's (TinyLoRA's claim: tiny:13 recovers >= 90 % of
    rank-1's)."""
    ref = next((row for row in rows if row.arm == reference and row.gain), None)
    if ref is None or ref.gain[0] <= 0:
        return {}
    return {row.arm: row.gain[0] / ref.gain[0] for row in rows if row.arm != reference and row.gain}


def lr_ratio_spread(records: list[RunRecord], arm: str, reference: str = "full", draws: int = 2000) -> \
        dict[str, float] | None:
    """The best-LR ratio arm / reference with its uncertainty over seeds: resample each LR's seeds with
    replacement (a bootstrap, fixed seed), pick each arm's best LR again, and report the ratio's median and its
    16th-84th percentiles, and how often the resampled ratio equals the point estimate. None where either arm has
    fewer than two LRs with two or more seeds (a ratio from single seeds has no spread to show)."""
    import random

    def finals(label: str) -> dict[float, list[float]]:
        by_lr: dict[float, list[float]] = defaultdict(list)
        for r in records:
            if r.arm == label and r.final_accuracy is not None:
                by_lr[r.lr].append(r.final_accuracy)
        return by_lr

    mine, theirs = finals(arm), finals(reference)
    if any(sum(len(v) >= 2 for v in side.values()) < 2 for side in (mine, theirs)):
        return None
    rng = random.Random(0)

    def best(by_lr: dict[float, list[float]], resample: bool) -> float:
        def mean(values):
            return statistics.mean(rng.choices(values, k=len(values)) if resample else values)
        return max(sorted(by_lr), key=lambda lr: mean(by_lr[lr]))

    point = best(mine, False) / best(theirs, False)
    ratios = sorted(best(mine, True) / best(theirs, True) for _ in range(draws))
    return {"ratio": point, "median": statistics.median(ratios), "p16": ratios[int(0.16 * draws)],
            "p84": ratios[int(0.84 * draws)], "same_as_point": sum(abs(r / point - 1) < 1e-9 for r in ratios) / draws}


def _mean(value):
    """A (mean, spread) pair's mean; a plain number as it is."""
    return value[0] if isinstance(value, (list, tuple)) else value


def cost_ratios(rows: list[ArmRow]) -> dict[str, dict[str, float]]:
    """Each LoRA arm over FullFT: final accuracy (means at the best LRs), learner peak memory, learner step time
    and RL step time (sampling included, which is the same work for every arm)."""
    full = next((row for row in rows if row.is_full), None)
    if full is None:
        return {}

    def ratio(row: ArmRow, key: str) -> float | None:
        mine, theirs = (_mean(getattr(row, key)), _mean(getattr(full, key)))
        return mine / theirs if mine is not None and theirs else None

    return {row.arm: {"final_accuracy": ratio(row, "final_accuracy"),
                         "learner_memory": ratio(row, "learner_peak_mb"),
                         "learner_step_time": ratio(row, "learner_step_s"), "step_time": ratio(row, "step_s")}
            for row in rows if not row.is_full}


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


def _mb(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} MB"


def _pm(pair) -> str:
    return "—" if pair is None else f"{pair[0]:.3f} ± {pair[1]:.3f}"


def _bytes(count) -> str:
    if count is None:
        return "—"
    return f"{count / 1e6:.1f} MB" if count >= 1e6 else f"{count / 1e3:.1f} kB"


def table(rows: list[ArmRow]) -> str:
    lines = ["| arm | trained params | best LR | seeds | final test acc | gain over base | best test acc | "
             "steps to 90 % | wall / run | learner peak | run peak RSS | learner step | RL step | update size | sync |",
             "|" + "---|" * 15]
    for row in rows:
        reach = "—" if row.steps_to_90pct is None else f"{row.steps_to_90pct:g}"
        params = "—" if row.trainable_params is None else f"{row.trainable_params:,}"
        lines.append(f"| {row.arm} | {params} | {row.best_lr:.3g} | {row.seeds} | {_pm(row.final_accuracy)} | "
                     f"{_pm(row.gain)} | "
                     f"{_pm(row.best_accuracy)} | {reach} | {row.wall_s:.0f} s | {_mb(row.learner_peak_mb)} | "
                     f"{_mb(row.peak_rss_mb)} | {_seconds(row.learner_step_s)} | "
                     f"{row.step_s:.2f} s | {_bytes(row.update_bytes)} | {row.sync_ms:.1f} ms |")
    return "\n".join(lines) + "\n"


def write_report(run_dirs: list[Path], out: Path, command: str) -> Path:
    records = [read_run(d) for d in run_dirs]
    rows = summarise(records)
    out.mkdir(parents=True, exist_ok=True)
    plots = plot_all(records, rows, out)
    text = (f"# rl-lora compare\n\n`{command}`\n\n{len(records)} runs. Each arm at its best LR (highest mean final "
            f"greedy test accuracy over the seeds every LR ran); ± is the spread over the seeds at that LR. "
            f"Learner peak: the arm's learner alone on a step-sized batch, in a fresh process "
            f"(`rl-lora learner-memory RUN_DIR`). Run peak RSS: each run's own process (learner and "
            f"sampler together; with Ray, the driver). Step time: the runs' median RL step.{_shared_note(records)}"
            f"\n\n" + table(rows) + "\n" + pass_table(rows, base_pass_at_k(records))
            + "".join(f"Best LR / FullFT's best LR: {arm} {ratio:.3g}x{_spread_text(records, arm)}\n\n"
                      for arm, ratio in best_lr_ratios(rows).items())
            + "".join(f"{arm} recovers {share:.0%} of lora:1's accuracy gain\n\n"
                      for arm, share in gain_recovery(rows).items())
            + "".join(f"{arm} / FullFT: final accuracy {_ratio(r['final_accuracy'])}, learner peak memory "
                      f"{_ratio(r['learner_memory'])}, learner step time {_ratio(r['learner_step_time'])}, RL step "
                      f"time {_ratio(r['step_time'])}\n\n" for arm, r in cost_ratios(rows).items())
            + "".join(f"![{p.stem}]({p.name})\n" for p in plots)
            + "\nRuns:\n" + "".join(f"- `{d}`\n" for d in run_dirs))
    atomic_write_text(out / "report.md", text)
    atomic_write_text(out / "report.json", json.dumps({"command": command, "rows": [asdict(r) for r in rows],
                                                       "best_lr_over_full": best_lr_ratios(rows),
                                                       "best_lr_over_full_spread": {
                                                           row.arm: lr_ratio_spread(records, row.arm)
                                                           for row in rows if not row.is_full},
                                                       "gain_over_lora_1": gain_recovery(rows),
                                                       "cost_over_full": cost_ratios(rows),
                                                       "runs": [str(d) for d in run_dirs]}, indent=1) + "\n")
    return out / "report.md"


def _spread_text(records: list[RunRecord], arm: str) -> str:
    spread = lr_ratio_spread(records, arm)
    if spread is None:
        return " (one seed at most LRs: no spread over seeds)"
    return (f" (bootstrap over seeds: median {spread['median']:.3g}x, 16-84 % {spread['p16']:.3g}x-"
            f"{spread['p84']:.3g}x; {spread['same_as_point']:.0%} of resamples pick the same two LRs)")


def _shared_note(records: list[RunRecord]) -> str:
    shared = sum(bool(r.engine_shared_with) for r in records)
    if not shared:
        return ""
    return (f" {shared} of the runs trained side by side with others on one vLLM engine (`--share-engine`): their "
            "run peak RSS is that process's (every run on the engine, and the engine), and their wall and step times "
            "overlap with the other runs'.")


def plot_all(records: list[RunRecord], rows: list[ArmRow], out: Path) -> list[Path]:
    from rl_lora.run.plots import plt

    best = {row.arm: row.best_lr for row in rows}
    colors = {row.arm: f"C{i}" for i, row in enumerate(rows)}
    paths = []

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for axis, key, ylabel in ((axes[0], "reward_curve", "mean sampled reward"),
                              (axes[1], "accuracy_curve", "test accuracy (greedy, or mean@N)")):
        for arm, lr in best.items():
            curves = [getattr(r, key) for r in records if r.arm == arm and r.lr == lr]
            steps = sorted(set.intersection(*(set(s for s, _ in c) for c in curves)))
            values = [[dict(c)[s] for c in curves] for s in steps]
            mean = [statistics.mean(v) for v in values]
            spread = [statistics.pstdev(v) if len(v) > 1 else 0.0 for v in values]
            axis.plot(steps, mean, marker="." if key == "reward_curve" else "o", color=colors[arm],
                      label=f"{arm} (lr {lr:.3g}, {len(curves)} seed{'s' if len(curves) > 1 else ''})")
            axis.fill_between(steps, [m - s for m, s in zip(mean, spread)], [m + s for m, s in zip(mean, spread)],
                              color=colors[arm], alpha=0.2)
        axis.set(xlabel="RL step", ylabel=ylabel, ylim=(-0.02, 1.02))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("each arm at its best LR: mean ± spread over seeds")
    paths.append(_save(figure, out / "curves.png", plt))

    from matplotlib.ticker import NullFormatter

    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    for row in rows:
        lrs = list(row.lr_finals)
        axis.plot(lrs, [row.lr_finals[lr] for lr in lrs], marker="o", color=colors[row.arm], label=row.arm)
        axis.plot([row.best_lr], [row.lr_finals[row.best_lr]], marker="*", markersize=16,
                  color=colors[row.arm])
        # Seeds beyond the sweep's (added at the best points) do not pick the best LR, but they are the spread
        # behind the best-LR ratio: every seed's final as a faint dot.
        finals = [(r.lr, r.final_accuracy) for r in records if r.arm == row.arm and r.final_accuracy is not None]
        axis.scatter([lr for lr, _ in finals], [final for _, final in finals], s=14, alpha=0.35, color=colors[row.arm])
    ratios = best_lr_ratios(rows)
    axis.set(xscale="log", xlabel="learning rate (★ best per arm)",
             ylabel="final greedy test accuracy\n(line: seeds every LR ran; dots: each seed)",
             title="final accuracy vs LR" + ("; best LR / FullFT's: " + ", ".join(
                 f"{arm} {ratio:.3g}x" for arm, ratio in ratios.items()) if ratios else ""))
    axis.xaxis.set_minor_formatter(NullFormatter())
    axis.grid(alpha=0.3, which="both")
    axis.legend()
    paths.append(_save(figure, out / "lr.png", plt))

    figure, (memory_axis, time_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    labels = [row.arm for row in rows]
    positions = range(len(rows))
    memory_axis.bar([x - 0.2 for x in positions], [(row.learner_peak_mb or 0) / 1024 for row in rows], width=0.4,
                    color=[colors[a] for a in labels], label="learner alone")
    memory_axis.bar([x + 0.2 for x in positions], [row.peak_rss_mb / 1024 for row in rows], width=0.4,
                    color=[colors[a] for a in labels], alpha=0.4, hatch="//", label="whole run (+ sampler)")
    memory_axis.set(ylabel="GB", title="peak memory", xticks=list(positions), xticklabels=labels)
    memory_axis.legend(fontsize=8)
    time_axis.bar([x - 0.2 for x in positions], [row.learner_step_s or 0 for row in rows], width=0.4,
                  color=[colors[a] for a in labels], label="learner step alone")
    time_axis.bar([x + 0.2 for x in positions], [row.step_s for row in rows], width=0.4,
                  color=[colors[a] for a in labels], alpha=0.4, hatch="//", label="RL step (+ sampling)")
    time_axis.set(ylabel="seconds", title="median step time", xticks=list(positions), xticklabels=labels)
    time_axis.legend(fontsize=8)
    for axis in (memory_axis, time_axis):
        axis.grid(alpha=0.3, axis="y")
    paths.append(_save(figure, out / "cost.png", plt))
    if any(row.trainable_params for row in rows):
        paths.append(plot_params(records, rows, colors, out / "params.png", plt))
    if any(row.pass_at_k for row in rows):
        paths.append(plot_pass_at_k(rows, base_pass_at_k(records), colors, out / "pass_at_k.png", plt))
    return paths


def plot_pass_at_k(rows: list[ArmRow], base: dict[int, tuple[float, float]] | None, colors: dict, path: Path,
                   plt) -> Path:
    """pass@k against k (log axis) at the final step, each arm at its best LR (mean ± spread over seeds), the base
    model's curve under them: where RL raised pass@1, did it keep the base model's pass@k at large k?"""
    figure, axis = plt.subplots(figsize=(7, 4.5))
    curves = ([("base model", base, "black", "--")] if base else []) + \
        [(f"{row.arm} (lr {row.best_lr:.3g}, {row.seeds} seed{'s' if row.seeds > 1 else ''})", row.pass_at_k,
          colors[row.arm], "-") for row in rows if row.pass_at_k]
    for label, curve, color, style in curves:
        ks = sorted(curve)
        mean, spread = [curve[k][0] for k in ks], [curve[k][1] for k in ks]
        axis.plot(ks, mean, marker="o", color=color, linestyle=style, label=label)
        axis.fill_between(ks, [m - s for m, s in zip(mean, spread)], [m + s for m, s in zip(mean, spread)],
                          color=color, alpha=0.15)
    axis.set_xscale("log", base=2)
    ticks = sorted({k for _, curve, _, _ in curves for k in curve})
    axis.set_xticks(ticks, [str(k) for k in ticks])
    axis.set(xlabel="k (samples per problem, log)", ylabel="pass@k (test)", ylim=(-0.02, 1.02),
             title="pass@k at the final step, each arm at its best LR")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
    return _save(figure, path, plt)


def plot_params(records: list[RunRecord], rows: list[ArmRow], colors: dict, path: Path, plt) -> Path:
    """Accuracy gain against trained parameters (log axis), each arm at its best LR: mean ± spread over seeds, the
    seeds as dots, and the run's information bound (episodes x 1 bit, as fp32 parameters) as a vertical line."""
    figure, axis = plt.subplots(figsize=(7.5, 4.5))
    for row in rows:
        if not row.trainable_params or row.gain is None:
            continue
        seeds = [r.gain for r in records if r.arm == row.arm and r.lr == row.best_lr and r.gain is not None]
        axis.scatter([row.trainable_params] * len(seeds), seeds, color=colors[row.arm], alpha=0.35, s=14)
        axis.errorbar([row.trainable_params], [row.gain[0]], yerr=[row.gain[1]], marker="o", markersize=8,
                      capsize=4, color=colors[row.arm],
                      label=f"{row.arm}: {row.gain[0]:+.3f} ({row.seeds} seed{'s' if row.seeds > 1 else ''}, "
                            f"lr {row.best_lr:.3g})")
    episodes = max((row.episodes for row in rows if row.episodes), default=None)
    if episodes:
        bound = episodes / 32
        axis.axvline(bound, color="grey", linestyle="--",
                     label=f"information bound: {episodes:,} episodes x 1 bit = {bound:,.0f} fp32 params")
    reference = next((row for row in rows if row.arm == "lora:1" and row.gain), None)
    if reference:
        axis.axhline(0.9 * reference.gain[0], color="dimgrey", linestyle=":",
                     label="90 % of lora:1's gain")
    axis.axhline(0, color="black", linewidth=0.8)
    axis.set(xscale="log", xlabel="trained parameters (log)", ylabel="final - base greedy test accuracy",
             title="accuracy gain vs trained parameters (each arm at its best LR)")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=7.5, loc="best")
    return _save(figure, path, plt)


def _save(figure, path: Path, plt) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
