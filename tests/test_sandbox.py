"""The sandbox seam: backends chosen by env.sandbox, fail closed before a model loads, a user's factory (the
documented example, run for real), the warning a run gives with `none`, and a training run whose tool calls are
hostile (the real CLI, ToolEnv, python tool and bwrap sandbox)."""
from __future__ import annotations

import json
import socket
import subprocess
import sysconfig
from pathlib import Path

import pytest

from envs.python_tool import run_python
from envs.sandbox import Program, SandboxUnavailable, open_sandbox
from envs.sandbox.bwrap import BwrapSandbox
from rl_lora.cli import main
from rl_lora.config import RunConfig
from tests.env_fixtures import HOSTILE_CODE

REPO = Path(__file__).resolve().parents[1]
TOOLS = ["--set", "env.name=tools", "--set", "env.tools=python"]


def broken_factory(python_packages=()):
    raise ConnectionError("the sandbox service at sandbox.example:443 did not answer")


def not_a_sandbox(python_packages=()):
    return object()


@pytest.mark.parametrize("setting, message", [
    ("env.sandbox=docker", "env.sandbox: 'docker' is not allowed; allowed: bwrap, none, or module:factory"),
    ("env.sandbox=tests.test_sandbox:broken_factory", "the factory failed (ConnectionError: the sandbox service"),
    ("env.sandbox=tests.test_sandbox:not_a_sandbox", "the factory returned object, not a Sandbox"),
    ("env.sandbox=tests.test_sandbox:missing", "env.sandbox: tests.test_sandbox:missing: cannot import it"),
    ("env.python_packages=no_such_package_here", "env.python_packages: 'no_such_package_here' is not installed"),
])
def test_a_sandbox_that_cannot_be_made_refuses_the_run_in_one_line_before_the_model_loads(setting, message, capsys,
                                                                                          tmp_path):
    code = main(["train", *TOOLS, "--set", setting, "--set", "model.name=/nonexistent/model",
                 "--set", f"train.runs_dir={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not any(tmp_path.iterdir())  # no run folder was made


def test_bwrap_without_its_binary_is_unavailable_not_a_fallback():
    sandbox = BwrapSandbox()
    sandbox.bwrap = None
    with pytest.raises(SandboxUnavailable, match="no bwrap binary"):
        sandbox.check()
    sandbox.bwrap = "/nonexistent/bwrap"
    with pytest.raises(SandboxUnavailable, match="cannot start"):
        sandbox.check()


def test_listed_packages_are_importable_in_the_sandbox_and_others_are_not():
    sandbox = open_sandbox("bwrap", ["yaml"])
    assert run_python("import yaml; print(yaml.safe_load('a: 1'))", sandbox) == "{'a': 1}\n"
    assert "No module named 'rich'" in run_python("import rich", sandbox)


def test_the_documented_user_factory_runs_programs_and_audits_them(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("SANDBOX_AUDIT", str(tmp_path / "audit.jsonl"))
    sandbox = open_sandbox("examples.audited_sandbox:audited")
    assert run_python("print(2 ** 10)", sandbox) == "1024\n"
    assert sandbox.run(Program(argv=("sh", "-c", "echo from a command"))).stdout == "from a command\n"
    assert "longer than" in run_python("while True: pass", sandbox)  # its own 3 s bound
    logged = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [entry["limit"] for entry in logged] == [None, None, "wall_time"]


def test_a_run_with_sandbox_none_says_so_first_and_in_its_config(capsys, tmp_path):
    from rl_lora.config import load_config
    from rl_lora.run.folder import RunFolder
    from rl_lora.run.train import check_environment

    config = RunConfig()
    config.env.name, config.env.tools, config.env.sandbox = "tools", "python", "none"
    check_environment(config)
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("WARNING: env.sandbox=none: code the model writes runs unisolated")
    folder = RunFolder(tmp_path)
    folder.write_config(config)
    assert folder.config_path.read_text().startswith("# WARNING: env.sandbox=none: code the model wrote ran unisolated")
    assert load_config(folder.config_path).env.sandbox == "none"  # still a config a resume reads


def test_a_training_run_whose_tool_calls_are_hostile_finishes_untouched(chat_model_dir, tmp_path, monkeypatch,
                                                                        capsys):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    run_dir = tmp_path / "runs" / "hostile"
    site = Path(sysconfig.get_paths()["purelib"])
    for key, value in {"HOSTILE_PORT": str(listener.getsockname()[1]), "HOSTILE_RUN_DIR": str(run_dir),
                       "HOSTILE_LOG": str(tmp_path / "answers.jsonl"), "HF_TOKEN": "hf_CANARYTOKEN"}.items():
        monkeypatch.setenv(key, value)
    code = main(["train", "--set", f"model.name={chat_model_dir}", "--reward", "tests.reward_fixtures:mentions_the",
                 "--set", "env.name=tests.env_fixtures:HostilePython", "--set", "env.max_turns=3",
                 "--set", "train.steps=2", "--set", "train.eval_every=0", "--set", "train.eval_size=2",
                 "--set", "eval.max_new_tokens=4", "--set", "rollout.prompts_per_step=2",
                 "--set", "rollout.group_size=2", "--set", "rollout.max_new_tokens=6", "--set", "lora.rank=1",
                 "--set", f"train.runs_dir={tmp_path / 'runs'}", "--set", "train.name=hostile"])
    assert code == 0, capsys.readouterr().err
    answers = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert len(answers) >= len(HOSTILE_CODE)  # 2 steps x 4 episodes and the evaluations: every attack ran
    for entry in answers:
        assert "hf_CANARYTOKEN" not in entry["answer"]
        daemon = "setsid" in entry["code"]  # it ends at once by design; whether its child lives on is checked below
        assert daemon or entry["answer"].rstrip().splitlines()[-1].startswith("error:"), entry
    try:
        connection, _ = listener.accept()
        pytest.fail("the sandbox reached the host's loopback")
    except BlockingIOError:
        pass
    assert "POISON" not in (run_dir / "config.yaml").read_text()
    assert not (site / "rl_lora_evil.pth").exists()
    assert list((run_dir / "checkpoints").iterdir())
    assert subprocess.run(["pgrep", "-f", "sleep 93.21"], capture_output=True).returncode == 1  # nothing left
