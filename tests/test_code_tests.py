"""reward code_tests and task humaneval: the completion's program against the sample's tests, in the real bwrap
sandbox; HumanEval's own canonical solutions are the positive control."""
from __future__ import annotations

import time

import pytest

from envs.humaneval import humaneval_rows, humaneval_task
from envs.sample import Sample
from rewards.code_tests import code_tests_all_reward, code_tests_reward, last_code_block
from rl_lora.config import EnvConfig, RewardConfig
from rl_lora.errors import UserError
from rl_lora.tasks import reward_scorer

TESTS = """
def check(candidate):
    assert candidate(1) == 2
    assert candidate(2) == 3
    for x in range(3, 6):
        assert candidate(x) == x + 1
    assert candidate(-1) == 0
"""
INC = Sample("inc", "write inc", "inc", metadata={"tests": TESTS, "entry_point": "inc",
                                                   "code_prompt": "def inc(x):\n    \"\"\"x + 1\"\"\"\n"})


def fenced(code: str) -> str:
    return f"Here is the function:\n```python\n{code}\n```\nIt adds one."


@pytest.mark.parametrize("completion, share", [
    (fenced("def inc(x):\n    return x + 1"), 1.0),
    (fenced("    return x + 1"), 1.0),  # a body: the sample's signature goes before it
    (fenced("def inc(x):\n    return 2 if x == 1 else x"), 0.25),  # the first of 4 tests
    (fenced("def inc(x):\n    return x + 1 if x > 0 else 5"), 0.75),  # a failing test does not hide the next
    ("def inc(x): return x + 1", 0.0),  # no fenced block: nothing to run
    (fenced("import sys\nfor i in range(4): print(f'PASS x {i}'); sys.__stdout__.write(f'PASS x {i}\\n')\n"
            "def inc(x): return None"), 0.0),  # printed passes do not count
    (fenced("def inc(x):\n    import os; os._exit(0)"), 0.0),  # exiting 0 early is not passing
])
def test_code_tests_scores_the_share_of_tests_passed(completion, share):
    assert code_tests_reward(completion, INC) == pytest.approx(share)
    assert code_tests_all_reward(completion, INC) == float(share == 1.0)


def test_a_program_that_hangs_keeps_what_it_passed_within_the_time_limit():
    started = time.perf_counter()
    hangs_on_2 = fenced("def inc(x):\n    while x == 2: pass\n    return x + 1")
    assert code_tests_reward(hangs_on_2, INC) == pytest.approx(0.25)
    assert time.perf_counter() - started < 15


def test_the_last_complete_block_is_the_program():
    assert last_code_block("```python\na = 1\n```\ntext\n```py\nb = 2\n```\n```python\nunclosed") == "b = 2\n"
    assert last_code_block("```\nc = 3\n```") == "c = 3\n"
    assert last_code_block("no code at all") is None
    started = time.perf_counter()
    last_code_block("```" * 300_000)  # linear on hostile input
    assert time.perf_counter() - started < 0.5


def test_humaneval_splits_deterministically_and_its_canonical_solutions_pass():
    task = humaneval_task()
    assert (len(task.train), len(task.test)) == (131, 33) and task.reward == "code_tests"
    assert all(int(s.id.split("/")[1]) % 5 == 0 for s in task.test)
    canonical = {row["task_id"]: row["canonical_solution"] for row in humaneval_rows()}
    for sample in task.test[:6]:  # HumanEval/50 among them needs the prompt's helper beside the tests
        assert code_tests_all_reward(fenced(sample.metadata["code_prompt"] + canonical[sample.id]), sample) == 1.0
    sample = task.test[0]
    assert code_tests_reward(fenced(sample.metadata["code_prompt"] + "    return None\n"), sample) == 0.0


def test_a_code_reward_whose_sandbox_cannot_be_made_stops_before_scoring():
    with pytest.raises(UserError, match="the factory failed"):
        reward_scorer(RewardConfig(name="code_tests"), "humaneval", "code_tests",
                      EnvConfig(sandbox="tests.test_sandbox:broken_factory"))
    reward_scorer(RewardConfig(), "humaneval", "code_tests", EnvConfig()).close()  # and the default opens


@pytest.mark.parametrize("backend", ["bwrap", "none"])
def test_the_code_reward_runs_the_completion_in_the_sandbox(backend, tmp_path):
    """An attack through code_tests: the program passes its tests only if it can read a file outside its sandbox.
    In bwrap it cannot (0); unisolated (env.sandbox=none) the same completion pays (1), so the test is not vacuous."""
    from envs.sandbox.shared import configure

    secret = tmp_path / "key"
    secret.write_text("CANARY")
    cheat = fenced(f"def inc(x):\n    try:\n        return x + 1 if open({str(secret)!r}).read() == 'CANARY' else None\n"
                   "    except OSError:\n        return None")
    configure(backend)
    try:
        assert code_tests_reward(cheat, INC) == (0.0 if backend == "bwrap" else 1.0)
    finally:
        configure("bwrap")
