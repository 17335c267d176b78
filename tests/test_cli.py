"""`rl-lora eval` end to end on the real default model, and bad input as a user would type it."""
import json
import subprocess
import sys

import pytest

from rl_lora.cli import main
from rl_lora.device import cuda_device_count
from tests.conftest import STORIES_260K
from tests.test_train import train

# What a machine without a CUDA GPU answers (this one; on a GPU machine these cases are not bad input).
no_gpu = pytest.mark.skipif(cuda_device_count() > 0, reason="this machine has a CUDA GPU")


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
    (["--set", "model.device=gpu"], "'gpu' is not allowed; allowed: auto, cpu, cuda, or cuda:N"),
    pytest.param(["--set", "model.device=cuda"], "use model.device=auto", marks=no_gpu),
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
    for command in ("train", "compare"):  # what a scheduler reads: stopped (resumable) is not finished
        help_text = subprocess.run([sys.executable, "-m", "rl_lora.cli", command, "--help"],
                                   capture_output=True, text=True).stdout
        assert "exit status: 0 finished" in help_text and "(143 SIGTERM, 130 Ctrl-C): resumable" in help_text


@no_gpu
def test_train_says_first_where_auto_computes_and_a_resume_in_another_dtype_says_so(tiny_model_dir, tmp_path,
                                                                                 capsys):
    small = ["--set", "rollout.prompts_per_step=2", "--set", "rollout.group_size=2",
             "--set", "rollout.max_new_tokens=8"]
    code, out, _ = train(tmp_path, capsys, *small, "--set", "train.steps=1", "--set", "train.name=auto")
    assert code == 0
    assert out.splitlines()[0] == "device cpu (auto: torch sees no CUDA GPU), dtype float32 (auto: float32 on a CPU)"
    run = tmp_path / "auto"
    assert "device: auto" in (run / "config.yaml").read_text() and "dtype: auto" in (run / "config.yaml").read_text()

    def sessions() -> list[dict]:
        return json.loads((run / "code.json").read_text())["sessions"]

    assert [(s["device"], s["dtype"]) for s in sessions()] == [("cpu", "float32")]
    assert main(["train", "--resume", str(run), "--set", "train.steps=2"]) == 0  # auto, as given: it resumes
    assert "note:" not in capsys.readouterr().out
    # As if the run had started on a GPU with bf16: the resume goes on here in float32, and says so.
    record = sessions()
    record[-1]["dtype"] = "bfloat16"
    (run / "code.json").write_text(json.dumps({"sessions": record}))
    assert main(["train", "--resume", str(run), "--set", "train.steps=3"]) == 0
    assert ("note: model.dtype=auto computes in float32 here; this run's previous session computed in bfloat16"
            in capsys.readouterr().out)
    assert [s["dtype"] for s in sessions()] == ["float32", "bfloat16", "float32"]


@no_gpu
@pytest.mark.parametrize("device", ["cuda", "cuda:3"])
def test_a_cuda_device_this_machine_lacks_is_one_line_before_anything_loads(tmp_path, capsys, device):
    code, out, err = train(tmp_path, capsys, "--set", f"model.device={device}", "--set", "train.name=gpu")
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"rl-lora: error: model.device={device}: ") and "use model.device=auto" in err, err
    assert out == "" and not (tmp_path / "gpu").exists()


def test_eval_says_first_where_it_computes(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "eval", "--model", str(STORIES_260K), "--task", "arithmetic", "--limit", "2",
                           "--set", "eval.max_new_tokens=4", "--out", str(tmp_path / "results.jsonl"))
    assert code == 0 and out.splitlines()[0].startswith("device ") and ", dtype " in out.splitlines()[0], out
