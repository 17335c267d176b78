import time

import pytest

from envs.sample import Sample
from rewards.protocol import RewardError, RewardSpecError
from rewards.registry import BUILTIN_REWARDS, resolve_reward
from rewards.scoring import RewardScorer

SAMPLES = [Sample("a", "q1", "yes"), Sample("b", "q2", "no")]
FIX = "tests.reward_fixtures"


def scorer(name: str, **kw) -> RewardScorer:
    return RewardScorer.from_name(name if name in BUILTIN_REWARDS else f"{FIX}:{name}", **kw)


def test_builtins_resolve_by_name_and_path():
    assert resolve_reward("gsm8k").spec == "rewards.gsm8k:gsm8k_reward"
    assert resolve_reward("rewards.math:math_reward").builtin
    assert scorer("format").score(["The answer is 4", "four"], SAMPLES).rewards == [1.0, 0.0]


def test_user_reward_styles_are_detected_and_scored():
    assert resolve_reward(f"{FIX}:exact").style == "sample"
    assert resolve_reward(f"{FIX}:trl_length").style == "trl"
    assert resolve_reward(f"{FIX}:compute_score").style == "verl"
    for name in ("exact", "trl_length", "compute_score"):
        result = scorer(name).score(["yes", "yes"], SAMPLES)
        assert result.rewards == [1.0, 0.0], name
        assert result.failures == []


def test_bool_rewards_count_as_numbers():
    assert scorer("says_yes").score(["yes", "no"], SAMPLES).rewards == [1.0, 0.0]


@pytest.mark.parametrize("name, reason", [
    ("raises", "RuntimeError: reward bug"),
    ("returns_nan", "not a finite number"),
    ("returns_text", "not a number"),
    ("trl_wrong_length", "returned 1 values for a batch of 2"),
])
def test_failures_stop_the_run_with_sample_and_text(name, reason):
    with pytest.raises(RewardError) as caught:
        scorer(name).score(["yes", "no"], SAMPLES)
    message = str(caught.value)
    assert reason in message and "sample a" in message and "'yes'" in message


def test_a_hanging_reward_is_cut_off_and_reported():
    hanging = scorer("hangs", timeout_s=1.0, on_error="skip")
    start = time.perf_counter()
    result = hanging.score(["yes", "no"], SAMPLES)
    assert time.perf_counter() - start < 10
    assert result.rewards == [None, None]
    assert [f.sample_id for f in result.failures] == ["a", "b"]
    assert "timed out after 1 s" in result.failures[0].reason
    hanging.close()


def test_with_on_error_stop_the_first_hanging_completion_stops_the_batch():
    """One timeout, not one per completion: 6 completions at a 1 s limit stop after ~1 s (6 s before)."""
    hanging = scorer("hangs", timeout_s=1.0, on_error="stop")
    start = time.perf_counter()
    with pytest.raises(RewardError, match="timed out after 1 s"):
        hanging.score(["yes"] * 6, [SAMPLES[0]] * 6)
    assert time.perf_counter() - start < 3.5
    hanging.close()


def test_zero_policy_scores_zero_but_reports():
    result = scorer("raises", on_error="zero").score(["yes", "no"], SAMPLES)
    assert result.rewards == [0.0, 0.0]
    assert len(result.failures) == 2


@pytest.mark.parametrize("name, message", [
    ("no_such_module_xyz:fn", "cannot import no_such_module_xyz"),
    (f"{FIX}:missing", "has no callable 'missing'"),
    (f"{FIX}:three_args", "expected (completion, sample)"),
    ("justaname", "use a built-in"),
])
def test_bad_reward_names_are_user_errors(name, message):
    with pytest.raises(RewardSpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_reward(name)


def test_a_hanging_reward_dies_with_a_killed_trainer():
    """kill -9 of the process that owns the worker (no pipe is closed in an orderly way, the reward hangs): the
    worker child must not outlive it."""
    import os
    import signal
    import subprocess
    import sys

    owner = subprocess.Popen([sys.executable, "-c", "from envs.workers import Worker; "
                              f"Worker().call('{FIX}:hangs', ('x', None), 600, {{}})"])
    deadline, child = time.time() + 60, None
    while time.time() < deadline and child is None:
        found = subprocess.run(["pgrep", "-P", str(owner.pid), "-f", "envs._worker_main"],
                               capture_output=True, text=True).stdout.split()
        child = int(found[0]) if found else None
        time.sleep(0.2)
    assert child is not None, "the worker child never started"
    time.sleep(1.5)  # the reward is now hanging inside the child
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    deadline = time.time() + 5
    while time.time() < deadline and os.path.exists(f"/proc/{child}"):
        try:  # reap it if it became ours (it is re-parented to init or a subreaper)
            os.waitpid(child, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    alive = os.path.exists(f"/proc/{child}") and "Z" not in open(f"/proc/{child}/stat").read().split()[2]
    assert not alive, f"worker child {child} outlived its killed owner"


def test_a_pool_of_children_scores_a_batch_side_by_side_with_the_same_results():
    completions = ["yes", "no"] * 4
    samples = SAMPLES * 4
    one, three = scorer("slow_exact", workers=1), scorer("slow_exact", workers=3)
    one.score(completions[:1], samples[:1]), three.score(completions[:3], samples[:3])  # children up, imported
    timed = {}
    for name, each in (("one", one), ("three", three)):
        start = time.perf_counter()
        timed[name] = (each.score(completions, samples).rewards, time.perf_counter() - start)
        each.close()
    assert timed["one"][0] == timed["three"][0] == [1.0, 1.0] * 4
    assert timed["one"][1] >= 8 * 0.4 and timed["three"][1] < 0.6 * timed["one"][1], timed


def test_a_hanging_call_in_the_pool_does_not_stall_the_others():
    pooled = scorer("hangs_on_hang", workers=2, timeout_s=1.0, on_error="skip")
    start = time.perf_counter()
    result = pooled.score(["yes", "hang", "yes", "no", "yes", "yes"], [SAMPLES[0]] * 6)
    assert time.perf_counter() - start < 4
    assert result.rewards == [1.0, None, 1.0, 0.0, 1.0, 1.0]
    assert "timed out after 1 s" in result.failures[0].reason
    pooled.close()


def test_a_killed_child_is_reported_and_replaced():
    pooled = scorer("dies_on_die", workers=2, on_error="skip")
    result = pooled.score(["yes", "die", "yes", "no"], [SAMPLES[0]] * 4)
    assert result.rewards == [1.0, None, 1.0, 0.0]
    reason = result.failures[0].reason
    assert "the worker process died" in reason and "killed by SIGKILL" in reason and "out-of-memory" in reason
    assert pooled.score(["yes"] * 3, [SAMPLES[0]] * 3).rewards == [1.0] * 3
    pooled.close()


def test_a_user_reward_is_imported_once_in_its_worker_not_in_the_trainer():
    import sys

    user = RewardScorer.from_name("tests.reward_imported_once:reward", workers=1)
    assert user.reward.style == "sample"
    assert user.score(["yes", "yes"], SAMPLES).rewards == [1.0, 0.0]
    assert "tests.reward_imported_once" not in sys.modules  # only the child imported it
    user.close()
    with pytest.raises(RewardSpecError, match="cannot import no_such_module_xyz"):
        RewardScorer.from_name("no_such_module_xyz:fn")
    with pytest.raises(RewardSpecError, match=r"expected \(completion, sample\)"):
        RewardScorer.from_name(f"{FIX}:three_args")
