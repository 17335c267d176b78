"""`rl-lora eval` end to end on the real default model, and bad input as a user would type it."""
import json
import subprocess
import sys

import pytest

from rl_lora.cli import main


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_eval_on_the_default_model(tmp_path, capsys):
    out_file = tmp_path / "results.jsonl"
    code, out, _ = run_cli(capsys, "eval", "--model", "smollm2-135m", "--task", "arithmetic", "--limit", "8",
                           "--out", str(out_file), "--set", "eval.max_new_tokens=96")
    assert code == 0
    records = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert len(records) == 8 and {r["reward"] for r in records} <= {0.0, 1.0}
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["num_samples"] == 8
    assert summary["accuracy"] == sum(r["reward"] for r in records) / 8
    assert "arithmetic accuracy" in out


@pytest.mark.parametrize("argv, message", [
    (["--model", "./missing/model"], "model path not found: ./missing/model"),
    (["--task", "chess"], "'chess' is not allowed; allowed: arithmetic, gsm8k, math, math500"),
    (["--set", "eval.limt=3"], "unknown config key eval.limt"),
    (["--reward", "no_such_pkg.rewards:fn"], "cannot import no_such_pkg.rewards"),
    (["--adapter", "/nonexistent"], "has no adapter_config.json"),
    (["--out", "/nonexistent/dir/out.jsonl"], "output folder does not exist"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "eval", *argv)
    assert code == 2
    assert err.count("\n") == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_malformed_jsonl_row_names_its_line(tmp_path, capsys):
    (tmp_path / "train.jsonl").write_text('{"question": "q", "answer": "#### 1"}\n')
    (tmp_path / "test.jsonl").write_text('{"question": "q", "answer": "#### 1"}\n\n{oops\n')
    code, _, err = run_cli(capsys, "eval", "--task", "gsm8k", "--data", str(tmp_path))
    assert code == 2 and "test.jsonl:3: malformed JSON" in err


def test_console_script_exit_code_and_help():
    result = subprocess.run([sys.executable, "-m", "rl_lora.cli", "eval", "--task", "chess"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("rl-lora: error: config key task.name")
    help_text = subprocess.run([sys.executable, "-m", "rl_lora.cli", "eval", "--help"],
                               capture_output=True, text=True).stdout
    assert "task.digits (int, default 2)" in help_text
