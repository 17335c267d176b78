"""The cluster launch a user runs: the README's cluster commands, on a real Ray head node started on loopback in a
temporary folder (free ports, its own HOME for the auth token), and `ray job submit` of a tiny run whose reward
module travels in --working-dir. The head is started with --block so that stopping it stops this head only, never
another Ray on the machine (`ray stop` would stop them all)."""
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.conftest import STORIES_260K

README = Path(__file__).resolve().parent.parent / "README.md"
RAY = str(Path(sys.executable).parent / "ray")
STEPS = 3


def readme_cluster_commands() -> list[str]:
    """The lines of the README's cluster block, comments stripped."""
    text = README.read_text()
    block = text[text.index("<!-- cluster-commands"):]
    block = block[block.index("```bash\n") + len("```bash\n"):]
    block = block[:block.index("\n```")]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Head:
    """A head node of its own: started by the README's command, stopped (with everything it started) by the test."""

    def __init__(self, command: str, env: dict, temp_dir: str):
        self.port, self.dashboard_port = free_port(), free_port()
        command = command.replace("6379", str(self.port)).replace("8265", str(self.dashboard_port))
        # Test-only: loopback, a temp dir of its own, --block so the head lives and dies with this process, and
        # free ports for the head's agents: their defaults (e.g. the dashboard agent's 52365) are taken when the
        # test session's own Ray runs on this machine too, and a head without its job agent answers every
        # submission with "No available agent".
        agent_ports = [item for flag in ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                                         "--runtime-env-agent-port", "--metrics-export-port",
                                         "--ray-client-server-port") for item in (flag, str(free_port()))]
        args = shlex.split(command) + ["--block", "--temp-dir", temp_dir, "--node-ip-address", "127.0.0.1",
                                       "--dashboard-host", "127.0.0.1", "--disable-usage-stats", *agent_ports]
        self.log = open(Path(temp_dir) / "head.log", "w")
        self.process = subprocess.Popen([RAY, *args[1:]], env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        # SIGINT: the head's `ray start --block` kills the processes it started (SIGTERM would drain for 30 s).
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:  # seen in the full suite under load: the head outlived 60 s after SIGINT
            self.process.kill()
            self.process.wait()  # reaped: nothing of the head outlives the test
        self.log.close()


def test_ray_job_submit_of_a_tiny_run_on_a_loopback_head(tmp_path):
    commands = readme_cluster_commands()
    exports = [c for c in commands if c.startswith("export ")]
    token, head_command, _other_nodes, submit = [c for c in commands if c not in exports]  # one machine: no 2nd node
    assert [c.split()[:3] for c in (token, head_command, _other_nodes, submit)] == [
        ["ray", "get-auth-token", "--generate"], ["ray", "start", "--head"], ["ray", "start", "--address"],
        ["ray", "job", "submit"]]

    # A user's folder: their config and their reward module, shipped by --working-dir.
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "my_reward.py").write_text(
        "def score(completion, sample):\n    return float(' the ' in f' {completion} ')\n")
    (folder / "my_run.yaml").write_text(
        f"model: {{name: {STORIES_260K}}}\n"
        f"train: {{steps: {STEPS}, eval_size: 8, eval_every: 0, name: job, runs_dir: {tmp_path / 'runs'}}}\n"
        "eval: {max_new_tokens: 8}\nalgo: {lr: 0.005}\nray: {worker_cpus: 0.5, learner_cpus: 0.5}\n")

    # The user's shell: this venv on PATH (rl-lora and ray), a HOME of its own for ~/.ray/auth_token.
    env = {**os.environ, "HOME": str(tmp_path / "home"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.update(dict(c.removeprefix("export ").split("=") for c in exports))
    assert env["RAY_AUTH_MODE"] == "token" and int(env["RAY_JOB_STOP_WAIT_TIME_S"]) >= 60
    env.pop("RAY_ADDRESS", None)
    subprocess.run([RAY, *shlex.split(token)[1:]], env=env, check=True, capture_output=True)
    assert (tmp_path / "home" / ".ray" / "auth_token").is_file()

    # Ray's sockets live under the temp dir: keep its path short (Unix socket paths stop at 107 bytes).
    temp_dir = tempfile.mkdtemp(prefix="rlr-", dir="/tmp")
    head = Head(head_command, env, temp_dir)
    try:
        address = f"http://127.0.0.1:{head.dashboard_port}"
        submit = submit.replace("<head-ip>", "127.0.0.1").replace("8265", str(head.dashboard_port))
        deadline = time.monotonic() + 120
        while True:  # the job server answers once the head is up
            probe = subprocess.run([RAY, "job", "list", "--address", address], env=env, capture_output=True,
                                   text=True)
            if probe.returncode == 0:
                break
            assert head.process.poll() is None, Path(temp_dir, "head.log").read_text()[-3000:]
            assert time.monotonic() < deadline, probe.stderr[-2000:]
            time.sleep(1)
        job = submit_when_ready([RAY, *shlex.split(submit)[1:]], folder, env)
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        job_id = re.search(r"Job '(raysubmit_\w+)' succeeded", job.stdout + job.stderr).group(1)
        logs = job_logs(job_id, address, env)
        stopped_logs = stop_a_job(submit, address, folder, env)
    finally:
        head.stop()

    # The job's log: one line per step, the reward from the shipped module, the run folder.
    step_lines = [line for line in logs.splitlines() if re.match(r"step \d+/\d+ reward", line)]
    assert [line.split()[1] for line in step_lines] == [f"{i}/{STEPS}" for i in range(1, STEPS + 1)], logs
    assert "placed on 1 node(s)" in logs and f"{2} rollout worker(s)" in logs
    run = tmp_path / "runs" / "job"
    assert f"run folder: {run}" in logs
    assert len((run / "metrics.jsonl").read_text().splitlines()) == STEPS
    assert (run / "summary.json").is_file() and (run / "checkpoints" / f"step_{STEPS}").is_dir()
    assert "my_reward:score" in (run / "config.yaml").read_text()
    assert head.process.returncode is not None

    # `ray job stop`: SIGTERM to the driver and every child of it (the reward workers too); the run finishes its
    # step, checkpoints and stops, before the head's RAY_JOB_STOP_WAIT_TIME_S runs out.
    assert "SIGTERM: stopping after this step" in stopped_logs and "stopped after step" in stopped_logs, stopped_logs
    long_run = tmp_path / "runs" / "long"
    checkpoints = [p.name for p in (long_run / "checkpoints").iterdir()]
    steps_logged = len((long_run / "metrics.jsonl").read_text().splitlines())
    assert checkpoints == [f"step_{steps_logged}"] and 2 <= steps_logged < 500, (checkpoints, steps_logged)


def submit_when_ready(args: list[str], folder: Path, env: dict) -> subprocess.CompletedProcess:
    """`ray job submit`, again while the head's job agent is still starting (the job server answers before it
    does, with "No available agent to submit job, please try again later")."""
    deadline = time.monotonic() + 180
    while True:
        job = subprocess.run(args, cwd=folder, env=env, capture_output=True, text=True, timeout=300)
        if "No available agent" not in job.stderr or time.monotonic() > deadline:
            return job
        time.sleep(2)


def job_logs(job_id: str, address: str, env: dict) -> str:
    return subprocess.run([RAY, "job", "logs", job_id, "--address", address], env=env, capture_output=True,
                          text=True, check=True).stdout


def stop_a_job(submit: str, address: str, folder: Path, env: dict) -> str:
    """A long run submitted without waiting, stopped with `ray job stop` once two steps are logged; its logs."""
    args = shlex.split(submit)[1:]
    args.insert(args.index("--"), "--no-wait")
    args += ["--set", "train.steps=500", "--set", "train.name=long", "--set", "train.checkpoint_every=1000"]
    submitted = submit_when_ready([RAY, *args], folder, env)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    job_id = re.search(r"Job '(raysubmit_\w+)' submitted successfully", submitted.stdout + submitted.stderr).group(1)
    deadline = time.monotonic() + 180
    while "step 2/500" not in job_logs(job_id, address, env):
        assert time.monotonic() < deadline, job_logs(job_id, address, env)[-3000:]
        time.sleep(1)
    subprocess.run([RAY, "job", "stop", job_id, "--address", address], env=env, capture_output=True, check=True,
                   timeout=300)
    return job_logs(job_id, address, env)
