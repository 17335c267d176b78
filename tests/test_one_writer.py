"""One writer per run folder, and signals from the first second: real processes on the 260K Llama. A second
`--resume` of a training run is refused while the first goes on; compare killed with -9 takes its training child
with it, and the re-run resumes alone; SIGTERM during the base evaluation stops at once and leaves no folder."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rl_lora.cli import main
from rl_lora.run.lock import FolderLock, holder_of
from tests.test_compare import TINY
from tests.test_train import TINY_RUN, metrics, train

ENV = dict(os.environ, PYTHONUNBUFFERED="1")


def _cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "rl_lora.cli", *argv]


def _until(condition, child: subprocess.Popen | None = None, timeout: float = 180, what: str = "") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if child is not None and child.poll() is not None:
            raise AssertionError(f"the child ended (exit {child.returncode}) before {what}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.endswith("}")]


def test_a_second_resume_of_a_training_run_is_refused_and_the_first_is_unharmed(tiny_model_dir, tmp_path, capsys):
    assert train(tmp_path, capsys, "--set", "train.steps=1", "--set", "train.name=one")[0] == 0
    run = tmp_path / "one"
    first = subprocess.Popen(_cli("train", "--resume", str(run), "--set", "train.steps=30"), env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _until(lambda: len(_steps(run)) >= 3, first, what="the first resume's steps")
    code = main(["train", "--resume", str(run), "--set", "train.steps=30"])
    err = capsys.readouterr().err
    assert code == 2 and f"PID {first.pid}" in err and "in use by" in err, err
    # A new run under the same name is refused naming the holder too (not told to resume a folder in use).
    code = main(["train", *TINY_RUN, "--set", f"train.runs_dir={tmp_path}", "--set", "train.name=one"])
    err = capsys.readouterr().err
    assert code == 2 and f"in use by PID {first.pid}" in err and "--resume" not in err, err
    out, err = first.communicate(timeout=180)
    assert first.returncode == 0, err[-2000:]
    assert _steps(run) == list(range(1, 31))  # one writer: every step once, in order
    assert holder_of(run) is None  # the lock went with the process


def test_the_lock_is_released_by_the_kernel_when_its_holder_is_killed(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from rl_lora.run.lock import FolderLock; "
                               f"FolderLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert f"PID {holder.pid}" in holder_of(tmp_path)
    holder.kill()
    holder.wait()
    with FolderLock(tmp_path) as lock:  # kill -9 left no stale lock
        assert lock.held


def test_sigterm_during_the_base_evaluation_stops_at_once_and_leaves_no_folder(tiny_model_dir, tmp_path):
    # A long base evaluation (many problems, long answers), so the signal lands inside it.
    child = subprocess.Popen(_cli("train", *TINY_RUN, "--set", f"train.runs_dir={tmp_path}",
                                  "--set", "train.name=early",
                                  "--set", "train.eval_size=200", "--set", "eval.max_new_tokens=200",
                                  "--set", "train.steps=5"),
                             env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in child.stdout:  # the capacity line is printed just before the base evaluation starts
        if line.startswith("capacity:"):
            break
    time.sleep(0.5)
    assert child.poll() is None, "the base evaluation ended before the signal"
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "SIGTERM before the first step" in err and "no checkpoint yet" in err, err
    assert "Traceback" not in err and not (tmp_path / "early").exists()


def test_compare_killed_with_kill_9_takes_its_training_child_and_the_rerun_resumes_alone(tiny_model_dir, tmp_path):
    argv = _cli("compare", *TINY, "--arms", "lora:2", "--no-learner-memory", "--out", str(tmp_path / "cmp"),
                "--set", "train.steps=40", "--set", "train.checkpoint_every=2")
    compare = subprocess.Popen(argv, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = tmp_path / "cmp" / "runs"
    _until(lambda: any(len(_steps(r)) >= 3 for r in runs.glob("*")), compare, what="the arm's steps")
    run = next(runs.glob("*"))
    child = json.loads((run / ".lock").read_text())["pid"]
    assert child != compare.pid
    compare.kill()
    compare.wait()
    # The kernel signals the child (SIGTERM): it stops after its step, with a checkpoint; nothing of its group stays.
    _until(lambda: not subprocess.run(["pgrep", "-g", str(child)], capture_output=True).stdout.strip(), timeout=60,
           what="the training child's process group to end")
    stopped = _steps(run)
    assert stopped and stopped[-1] < 40
    rerun = subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming" in rerun.stdout
    steps = _steps(run)
    assert steps == list(range(1, 41))  # one writer: every step once, in order
    assert metrics(run)[-1]["step"] == 40
