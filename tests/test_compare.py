"""`rl-lora compare` on the real 260K Llama: arms run as normal run folders, a report with a table and plots,
the report rebuilt from the folders alone, and a killed compare that resumes where it stopped."""
import json
import os
import signal
import subprocess
import sys
import time

from rl_lora.cli import main
from tests.test_train import TINY_RUN

# compare sets each arm's LR from algo.full_lr, so the tiny run's fixed algo.lr is left out.
TINY = [arg for pair in zip(TINY_RUN[::2], TINY_RUN[1::2]) if pair[1] != "algo.lr=0.005" for arg in pair]
COMPARE = ["compare", *TINY, "--arms", "lora:1,full", "--set", "algo.full_lr=0.0005", "--set", "train.steps=2"]


def test_compare_writes_runs_a_table_and_every_plot_and_report_rebuilds_it(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main([*COMPARE, "--out", str(out)]) == 0
    runs = sorted((out / "runs").iterdir())
    assert [r.name for r in runs] == ["full-lr0.0005-s0", "lora-r1-lr0.005-s0"]  # LoRA centred on 10x full_lr
    report = (out / "report.md").read_text()
    assert "| lora:1 | 0.005 | 1 |" in report and "| full | 0.0005 | 1 |" in report
    for plot in ("curves.png", "lr.png", "cost.png"):
        assert (out / plot).stat().st_size > 10_000, plot
    rows = json.loads((out / "report.json").read_text())["rows"]

    rebuilt = tmp_path / "rebuilt"
    assert main(["compare", "--report", *map(str, runs), "--out", str(rebuilt)]) == 0
    assert json.loads((rebuilt / "report.json").read_text())["rows"] == rows
    table = [line for line in report.splitlines() if line.startswith("|")]
    assert table == [line for line in (rebuilt / "report.md").read_text().splitlines() if line.startswith("|")]


def test_a_killed_compare_skips_finished_arms_and_resumes_the_rest(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = [sys.executable, "-m", "rl_lora.cli", *COMPARE, "--set", "train.steps=4", "--set",
            "train.checkpoint_every=1", "--set", "rollout.max_new_tokens=48", "--out", str(out)]
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    second = out / "runs" / "full-lr0.0005-s0"
    deadline = time.time() + 240
    while time.time() < deadline and not (second / "checkpoints" / "step_1" / "trainer_state.json").is_file():
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGKILL)  # no clean-up at all: the machine went away
    child.wait()
    first = out / "runs" / "lora-r1-lr0.005-s0"
    assert (first / "summary.json").is_file() and not (second / "summary.json").is_file()
    first_metrics = (first / "metrics.jsonl").read_text()

    capsys.readouterr()
    assert main([*COMPARE, "--set", "train.steps=4", "--set", "train.checkpoint_every=1", "--set",
                 "rollout.max_new_tokens=48", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "lora-r1-lr0.005-s0: finished earlier, not re-run" in printed
    assert "full-lr0.0005-s0: resuming" in printed
    assert (first / "metrics.jsonl").read_text() == first_metrics
    steps = [json.loads(line)["step"] for line in (second / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert (out / "report.md").is_file()


def test_bad_arms_are_refused_before_anything_runs(tmp_path, capsys):
    assert main(["compare", "--arms", "lora:0,full", "--out", str(tmp_path / "x")]) == 2
    assert "lora:RANK" in capsys.readouterr().err and not (tmp_path / "x").exists()
