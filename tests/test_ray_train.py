"""`rl-lora train` on Ray (the session's real local cluster, 2 CPUs): a learner actor and 2 rollout worker actors
on the real 260K Llama. Versions advance, the lag is logged, the probe passes; a killed worker is restarted and
the step completes. (A dead learner stopping the run at a checkpoint it resumes from: tests/test_data_parallel.py,
with two learners, through the same RemoteLearner one learner uses.)"""
import threading
import time
from contextlib import contextmanager

import pytest

from tests.test_train import metrics, train

# Small resource requests: the learner and 2 workers fit the session cluster's 2 CPUs.
RAY_RUN = ["--set", "rollout.num_workers=2", "--set", "ray.worker_cpus=0.5", "--set", "ray.learner_cpus=0.5"]


def test_two_workers_learn_sync_and_log_the_lag(ray_cluster, tiny_model_dir, tmp_path, capsys):
    code, out, _ = train(tmp_path, capsys, *RAY_RUN, "--set", "train.steps=4", "--set", "train.name=ray")
    assert code == 0
    steps = metrics(tmp_path / "ray")
    assert [m["step"] for m in steps] == [1, 2, 3, 4]
    assert [m["sampler_version"] for m in steps] == [0, 1, 2, 3]  # each step sampled with the previous update
    assert all(m["lag"] == 0 and m["sampler_kl"] < 1e-4 for m in steps)  # on-policy: workers serve the learner
    assert all(m["probe_gap"] is not None and m["probe_gap"] <= 1e-3 for m in steps)
    rewards = [m["reward_mean"] for m in steps]
    assert rewards[-1] >= rewards[0] + 0.3, rewards
    assert "placed on 1 node(s)" in out and (tmp_path / "ray" / "checkpoints" / "step_4" / "adapter").is_dir()


def test_ray_workers_run_multi_turn_episodes_beside_their_sampler(ray_cluster, chat_model_dir, tmp_path, capsys):
    """The environment runs in each rollout worker: three-turn episodes come back with their loss masks, and the
    learner trains on them (the workers are on-policy: the probe and the sampler KL say so)."""
    code, _, err = train(tmp_path, capsys, *RAY_RUN, "--set", f"model.name={chat_model_dir}",
                         "--set", "env.name=tests.env_fixtures:ThreeTurns", "--set", "env.max_turns=5",
                         "--set", "rollout.prompts_per_step=2", "--set", "rollout.group_size=2",
                         "--set", "rollout.max_new_tokens=6", "--set", "train.steps=2", "--set", "train.name=turns")
    assert code == 0, err
    steps = metrics(tmp_path / "turns")
    assert all(m["episode_turns"] == 3 and m["sampler_kl"] < 1e-4 for m in steps)
    assert all(sum(v for k, v in m.items() if k.startswith("stop/")) == 4 for m in steps)


def test_max_lag_samples_ahead_and_the_ratio_corrects(ray_cluster, tiny_model_dir, tmp_path, capsys):
    code, out, _ = train(tmp_path, capsys, *RAY_RUN, "--set", "rollout.max_lag=1", "--set", "train.steps=4",
                         "--set", "train.name=lag", "--set", "ray.placement=colocated")
    assert "placement colocated" in out
    assert code == 0
    steps = metrics(tmp_path / "lag")
    assert [m["lag"] for m in steps] == [0, 1, 1, 1]
    assert [m["sampler_version"] for m in steps] == [0, 0, 1, 2]
    assert all(m["sampler_kl"] > 1e-4 for m in steps[1:])  # the learner moved on: the ratio is not 1


@contextmanager
def when_steps_done(run_dir, count: int, action):
    """Runs action (in a thread) once the run has logged `count` steps, for as long as the with-block runs, not
    for a fixed time: on a loaded machine the first step can take minutes, and a watcher that gave up would
    leave the test's kill undone."""
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            if (run_dir / "metrics.jsonl").is_file() and len(metrics(run_dir)) >= count:
                action()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def test_a_killed_worker_is_restarted_and_every_step_completes(ray_cluster, tiny_model_dir, tmp_path, capsys):
    ray = ray_cluster
    # Longer completions keep the workers busy, so the kill lands while step 2 samples.
    with when_steps_done(tmp_path / "kill", 1,
                         lambda: ray.kill(ray.get_actor("kill/rollout-worker-0"), no_restart=False)):
        code, _, err = train(tmp_path, capsys, *RAY_RUN, "--set", "train.steps=4", "--set", "train.name=kill",
                             "--set", "rollout.max_new_tokens=48")
    assert code == 0, err
    steps = metrics(tmp_path / "kill")
    assert [m["step"] for m in steps] == [1, 2, 3, 4]
    assert "rollout worker 0" in err and ("reloads version" in err or "died while loading" in err), err
    assert all(m["probe_gap"] <= 1e-3 for m in steps)  # the restarted worker serves the learner's weights again


def test_with_max_restarts_0_a_killed_worker_stops_the_run_and_says_so(ray_cluster, tiny_model_dir, tmp_path,
                                                                        capsys):
    ray = ray_cluster
    with when_steps_done(tmp_path / "once", 1,
                         lambda: ray.kill(ray.get_actor("once/rollout-worker-0"), no_restart=False)):
        code, _, err = train(tmp_path, capsys, *RAY_RUN, "--set", "train.steps=30", "--set", "train.name=once",
                             "--set", "ray.max_restarts=0", "--set", "rollout.max_new_tokens=48",
                             "--set", "train.checkpoint_every=1")
    assert code == 1, err
    assert "Ray restarts it" not in err and "is not restarted (ray.max_restarts=0)" in err, err
    assert "rollout worker 0 died" in err and "the run stops at its last checkpoint, step" in err, err


def test_a_learner_that_fails_in_its_constructor_names_the_cause_and_no_checkpoint(ray_cluster, tiny_model_dir,
                                                                                   tmp_path, capsys):
    """The constructor raises on its node (no CUDA there); the driver's line carries the cause, not Ray's
    'creation task' wrapper, and does not promise a checkpoint that does not exist."""
    code, _, err = train(tmp_path, capsys, *RAY_RUN, "--set", "model.device=cuda", "--set", "train.name=nocuda")
    line = err.strip().splitlines()[-1]
    assert code == 1 and line.startswith("rl-lora: error: a learner actor died: model.device=cuda:"), err
    assert "no checkpoint yet" in line and "creation task" not in line
    assert not (tmp_path / "nocuda").exists()


def test_max_lag_without_workers_is_refused(tiny_model_dir, tmp_path, capsys):
    code, _, err = train(tmp_path, capsys, "--set", "rollout.max_lag=1")
    assert code == 2 and "num_workers" in err and not list(tmp_path.iterdir())


def test_a_run_the_cluster_cannot_place_fails_with_what_it_asked_for(ray_cluster, tiny_model_dir, tmp_path, capsys,
                                                                   monkeypatch):
    monkeypatch.setattr("rl_lora.cluster.placement.PLACEMENT_TIMEOUT_S", 2)
    code, _, err = train(tmp_path, capsys, *RAY_RUN, "--set", "ray.worker_gpus=1", "--set", "train.name=gpu")
    assert code == 2 and "cannot place" in err and "GPU" in err
    assert not (tmp_path / "gpu").exists()


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_ctrl_c_and_sigterm_checkpoint_and_shut_ray_down(tiny_model_dir, tmp_path, how):
    """A terminal's Ctrl-C reaches the whole process group: the driver (its own local Ray here) and Ray's
    processes; a scheduler's SIGTERM (Slurm, Kubernetes, `ray job stop`) reaches the driver. Either way the run
    stops after the step with a checkpoint, and no Ray process outlives it. The Ctrl-C run has two learners in one
    torch.distributed group: the group goes down with their actors."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from tests.test_train import TINY_RUN

    argv = [sys.executable, "-m", "rl_lora.cli", "train", *TINY_RUN, "--set", "rollout.num_workers=2",
            "--set", "train.steps=50", "--set", f"train.runs_dir={tmp_path}", "--set", "train.name=stop",
            "--set", "rollout.max_new_tokens=48"]
    if how == "ctrl-c":
        argv += ["--set", "ray.num_learners=2", "--set", "ray.learner_cpus=0.5", "--set", "ray.worker_cpus=0.5"]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    run_dir = tmp_path / "stop"
    deadline = time.time() + 180
    while time.time() < deadline and not ((run_dir / "metrics.jsonl").is_file() and metrics(run_dir)):
        time.sleep(0.1)
    if how == "ctrl-c":
        os.killpg(child.pid, signal.SIGINT)
    else:
        os.kill(child.pid, signal.SIGTERM)
    out, err = child.communicate(timeout=120)
    # Stopped, resumable, not finished: 128 + the signal's number (130 Ctrl-C, 143 SIGTERM), as schedulers read it.
    assert child.returncode == 128 + (signal.SIGINT if how == "ctrl-c" else signal.SIGTERM), err[-2000:]
    assert "stopped after step" in out
    state = json.loads(next((run_dir / "checkpoints").glob("step_*/trainer_state.json")).read_text())
    assert 1 <= state["step"] < 50
    time.sleep(1)
    leftovers = subprocess.run(["pgrep", "-s", str(child.pid)], capture_output=True, text=True).stdout.split()
    assert not leftovers, f"processes left in the run's session: {leftovers}"


def test_two_nodes_spread_the_actors(tiny_model_dir, tmp_path):
    """A real 2-raylet cluster on loopback (scripts/ray_multinode_smoke.py); the run joins it via RAY_ADDRESS."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, str(root / "scripts" / "ray_multinode_smoke.py"), "--steps", "2",
                             "--out", str(tmp_path / "multinode.json")], cwd=root, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "multinode.json").read_text())
    assert report["nodes_used"] == 2 and report["sampler_versions"] == [0, 1]


class _CannotWriteItsCache:
    def __init__(self):
        raise PermissionError(13, "Permission denied", "/cache/rl-lora/models")

    def ping(self):
        return 1


def test_a_remote_constructor_error_is_described_by_its_innermost_cause(ray_cluster):
    """Ray wraps it twice (ActorDiedError around RayTaskError); the line keeps what pickling drops (the file)."""
    from rl_lora.cluster.remote_errors import describe

    actor = ray_cluster.remote(_CannotWriteItsCache).options(max_restarts=0).remote()
    with pytest.raises(ray_cluster.exceptions.RayActorError) as caught:
        ray_cluster.get(actor.ping.remote())
    assert describe(caught.value) == "PermissionError: [Errno 13] Permission denied: '/cache/rl-lora/models'"
