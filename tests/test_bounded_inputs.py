"""Inputs are bounded and checked before anything is written: a huge line is refused having read only its bound,
config strings have a sane size, YAML keys are not silently overwritten, NaN and inf are refused, and a bad
dataset row is named by its line in the file."""
import json
import subprocess
import sys

import pytest

from rl_lora.cli import main
from tests.test_datasets import RUN

FIFTY_MB_LINE = """
import sys
from pathlib import Path
from envs.errors import TaskError
from envs.loading import read_jsonl
path = Path(sys.argv[1])
with open(path, "wb") as f:  # 50 MB with no newline, written in 1 MB pieces
    for _ in range(50):
        f.write(b"a" * (1 << 20))
try:
    read_jsonl(path)
except TaskError as error:
    print(error)
# VmHWM, this process's own peak: ru_maxrss would also count the parent's, copied into it at fork and exec.
print(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024)
"""


def test_a_50_mb_line_is_refused_with_little_memory(tmp_path):
    """Measured in a child process: its peak RSS is the reader's (plus Python's own start-up, ~15 MB)."""
    done = subprocess.run([sys.executable, "-c", FIFTY_MB_LINE, str(tmp_path / "huge.jsonl")], capture_output=True,
                          text=True, timeout=120)
    message, peak_mb = done.stdout.strip().splitlines()
    assert "huge.jsonl:1: a row of more than 1 MB" in message, done.stderr
    assert float(peak_mb) < 200, peak_mb


def _one_line(capsys, code: int, *parts: str) -> str:
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    for part in parts:
        assert part in err, err
    return err


def test_duplicate_yaml_keys_name_the_key_and_both_lines(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("train:\n  name: first\n  steps: 3\nrollout:\n  group_size: 4\ntrain:\n  steps: 5\n")
    code = main(["train", str(config), "--set", f"train.runs_dir={tmp_path / 'runs'}"])
    _one_line(capsys, code, f"{config}: key 'train' appears twice", "lines 1 and 6")
    config.write_text("algo:\n  lr: 0.001\n  lr: 0.01\n")
    _one_line(capsys, main(["train", str(config)]), "key 'lr' appears twice", "lines 2 and 3")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("setting, message", [
    ("reward.weights=1,nan", "nan is not a finite number"),
    ("reward.weights=1,-inf", "-inf is not a finite number"),
    ("algo.lr=.nan", "config key algo.lr: nan is not a finite number"),
    ("rollout.temperature=.inf", "config key rollout.temperature: inf is not a finite number"),
])
def test_nan_and_inf_are_refused_before_anything_is_written(tmp_path, capsys, setting, message):
    code = main(["train", *RUN, "--reward", "format,tests.reward_fixtures:mentions_the", "--set", setting,
                 "--set", f"train.runs_dir={tmp_path / 'runs'}"])
    _one_line(capsys, code, message)
    assert not (tmp_path / "runs").exists()


def test_a_nan_weight_is_refused_by_the_reward_library_too():
    from rewards.protocol import RewardSpecError
    from rewards.scoring import make_scorer

    with pytest.raises(RewardSpecError, match="nan is not a finite number"):
        make_scorer(["format", "tests.reward_fixtures:mentions_the"], [1.0, float("nan")])


@pytest.mark.parametrize("setting, message", [
    ("task.instruction=" + "x" * 70_000, "config key task.instruction: 70,000 characters; at most 65,536"),
    ("train.runs_dir=" + "r" * 5000, "config key train.runs_dir: 5,000 characters; at most 4,096"),
    ("model.name=" + "m" * 300, "config key model.name: a part of 300 bytes"),
    ("train.name=" + "n" * 256, "config key train.name: a part of 256 bytes"),
])
def test_config_strings_past_a_sane_size_are_one_line(tmp_path, capsys, setting, message):
    code = main(["train", *RUN, "--set", setting, "--set", f"train.runs_dir={tmp_path / 'runs'}"]
                if not setting.startswith("train.runs_dir") else ["train", *RUN, "--set", setting])
    _one_line(capsys, code, message)
    assert not (tmp_path / "runs").exists()


def test_a_long_instruction_within_the_bound_is_kept(tmp_path):
    from rl_lora.config import load_config

    assert len(load_config(None, ["task.instruction=" + "y" * 10_000]).task.instruction) == 10_000


def test_a_bad_dataset_row_is_named_by_its_line_in_the_file_and_its_split(tmp_path, capsys):
    """The held-out test rows are drawn from the whole file: the error names the file's line, not the row's
    index in the split that remains."""
    rows = [{"question": f"q{i}", "answer": str(i)} for i in range(12)]
    rows[5] = {"question": "q5"}  # line 6 has no answer
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows[:3]) + "\n\n" + "".join(json.dumps(r) + "\n"
                                                                                  for r in rows[3:]))
    code = main(["train", *RUN, "--set", f"task.path={data}", "--set", "task.test_size=4",
                 "--set", f"train.runs_dir={tmp_path / 'runs'}"])
    # A blank line after line 3 moves the bad row to line 7 of the file.
    err = _one_line(capsys, code, f"{data} (", "split), line 7: no 'answer'")
    assert "(train split)" in err or "(test split)" in err


MEASURED_CLI = """
import sys, time
from rl_lora.cli import main
started = time.perf_counter()
code = main(sys.argv[1:])
# VmHWM, this process's own peak (ru_maxrss would also count what the parent held at fork).
peak_mb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) // 1024
print(code, round(time.perf_counter() - started, 2), peak_mb)
"""


@pytest.mark.parametrize("characters", [10_000, 60_000])
def test_an_instruction_no_prompt_can_carry_is_refused_before_any_prompt_is_built(tmp_path, tiny_model_dir,
                                                                                    characters):
    """Every prompt carries the instruction: measured alone, it is refused in one line before 10,000 prompts are
    built (10,000 characters were OOM-killed at 3 GB, printing nothing; the refusal itself peaked at 4.6 GB)."""
    instruction = ("Think step by step, then answer. " * characters)[:characters]
    done = subprocess.run([sys.executable, "-c", MEASURED_CLI, "train", "--set", f"model.name={tiny_model_dir}",
                           "--set", f"task.instruction={instruction}", "--set", "task.train_size=10000",
                           "--set", "task.digits=3",
                           "--set", f"train.runs_dir={tmp_path / 'runs'}"], capture_output=True, text=True,
                          timeout=300)
    code, seconds, peak_mb = done.stdout.split()[-3:]
    assert code == "2" and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("rl-lora: error: task.instruction is ") and "no prompt fits the context of 512" \
        in done.stderr, done.stderr
    assert float(seconds) < 10 and int(peak_mb) < 1000, (seconds, peak_mb)
    assert list((tmp_path / "runs").glob("*")) == []  # no run folder left, config.yaml included


TASK_BUILT = """
import sys
from rl_lora.config import load_config
from rl_lora.tasks import load_task
instruction = ("Think step by step, then answer. " * 2000)[:59_999] + "!"
before = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS:")) // 1024
task = load_task(load_config(None, ["task.instruction=" + instruction, "task.train_size=10000", "task.digits=3"]).task)
first, last = task.train[0], task.train[9999]
assert first.prompt == f"What is {first.metadata['expression']}? {instruction}" and last.prompt.endswith(instruction)
assert len(task.train) == 10_000 and len(task.train[100:164]) == 64
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) // 1024
print(before, peak)
"""


def test_a_task_of_10000_samples_holds_its_60000_character_instruction_once():
    """Each prompt is joined with the instruction when its sample is read: copied into 10,000 prompts it held 600
    MB before a prompt was rendered."""
    done = subprocess.run([sys.executable, "-c", TASK_BUILT], capture_output=True, text=True, timeout=300)
    before_mb, peak_mb = map(int, done.stdout.split())
    assert peak_mb - before_mb < 100, (before_mb, peak_mb)
