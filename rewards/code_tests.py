"""code_tests: run the completion's program with the sample's tests, in the sandbox (envs.sandbox), and score the
share of tests it passes (`code_tests`) or 1 only when all pass (`code_tests_all`).

The program is the completion's last fenced code block (```python ... ```); a block that does not define the
function the tests call gets the sample's own signature and docstring put before it (a body-only answer). The tests
are the sample's `tests` (HumanEval's `def check(candidate): assert ...`): each top-level statement of `check` that
asserts is one test, run in order in one namespace, so a failing test does not hide the ones after it and a program
that hangs keeps the tests it passed before the wall-time limit.

The harness reports each pass with a token it reads (and deletes) before the model's code runs. That keeps printed
"PASS" lines from counting, not a program that inspects the harness's own frames: the sandbox protects the machine,
the grade is as strong as an in-process test harness (as HumanEval's own and verl's).
"""
from __future__ import annotations

import ast
import secrets

from envs.sample import Sample
from envs.sandbox import Limits, Program
from envs.sandbox.shared import shared_sandbox

LIMITS = Limits(wall_s=5.0, cpu_s=5.0, output_bytes=16 * 1024)
MAX_COMPLETION_CHARS = 100_000
FENCE = "```"
HARNESS = """import ast, os, sys
token = open("token").read(); os.remove("token")
module = ast.parse(open("tests.py").read())
check = next(n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == "check")
tests = [n for n in check.body if any(isinstance(x, ast.Assert) for x in ast.walk(n))]
# As HumanEval runs it: the solution, then the tests' module, in one namespace (tests may call the prompt's helpers).
namespace = {"__name__": "__main__"}
exec(compile(open("solution.py").read(), "solution.py", "exec"), namespace)
exec(compile(ast.Module([n for n in module.body if n is not check], []), "tests.py", "exec"), namespace)
namespace["candidate"] = namespace[ENTRY]
write, flush = sys.__stdout__.write, sys.__stdout__.flush
for statement in check.body:
    try:
        exec(compile(ast.Module([statement], []), "tests.py", "exec"), namespace)
    except BaseException:
        if statement not in tests: raise
    else:
        if statement in tests: write(f"PASS {token} {tests.index(statement)}\\n"); flush()
"""


def last_code_block(text: str) -> str | None:
    """The last complete fenced block's code, its language tag dropped; None when there is none. str.split, not a
    regex: linear on any input."""
    parts = text.split(FENCE)
    blocks = [parts[i] for i in range(1, len(parts) - 1, 2)]
    if not blocks:
        return None
    first, _, rest = blocks[-1].partition("\n")
    return rest if first.strip().isidentifier() or not first.strip() else blocks[-1]


def count_tests(tests: str) -> int:
    check = next((n for n in ast.parse(tests).body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
    if check is None:
        raise ValueError("the sample's tests define no check(candidate) function")
    return sum(any(isinstance(x, ast.Assert) for x in ast.walk(n)) for n in check.body)


def passed_share(completion: str, sample: Sample) -> float:
    tests, entry = sample.metadata.get("tests"), sample.metadata.get("entry_point")
    if not isinstance(tests, str) or not isinstance(entry, str):
        raise ValueError("code_tests needs samples with metadata tests (a check(candidate) function) and entry_point "
                         "(the function's name): task.name=humaneval has them")
    total = count_tests(tests)
    code = last_code_block(completion[:MAX_COMPLETION_CHARS])
    if code is None or total == 0:
        return 0.0
    if f"def {entry}" not in code:
        code = sample.metadata.get("code_prompt", "") + code
    token = secrets.token_hex(16)
    harness = f"ENTRY = {entry!r}\n" + HARNESS
    outcome = shared_sandbox().run(Program(code=harness, files={"solution.py": code, "tests.py": tests,
                                                                "token": token}), LIMITS)
    passed = {line.split()[2] for line in outcome.stdout.splitlines()
              if line.startswith(f"PASS {token} ") and len(line.split()) == 3}
    return len(passed) / total


def code_tests_reward(completion: str, sample: Sample) -> float:
    """The share of the sample's tests the completion's program passes."""
    return passed_share(completion, sample)


def code_tests_all_reward(completion: str, sample: Sample) -> float:
    """1.0 when the completion's program passes every test, else 0."""
    return float(passed_share(completion, sample) == 1.0)
