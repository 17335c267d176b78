"""Tools from plain functions, the calculator and python tools on hostile input, and ToolEnv's Hermes-style turns;
the real worker pool (child processes, time limits), no mocks."""
import json
import time

import pytest

from envs.calculator import CalculatorError, evaluate
from envs.environment import DONE, MAX_TOOL_CALLS, PARSE_ERROR, SingleTurn
from envs.errors import TaskError
from envs.python_tool import run_python
from envs.sample import Sample
from envs.sandbox import Limits, open_sandbox
from envs.tool_env import ToolCalls, ToolEnv, call_in_process, parse_tool_calls
from envs.tools import calculator, resolve_tools, tool_from_function
from tests import tool_fixtures

SAMPLE = Sample("s1", "What is 1234 * 5678?", "7006652")


def call(name, **arguments):
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


@pytest.mark.parametrize("expression, value", [
    ("1234 * 5678", 7006652), ("(2 + 3) * 4", 20), ("7 / 2", 3.5), ("2 ** 10", 1024), ("-3 + 5 % 3", -1),
    ("2^3", 8), ("1,234 + 1", 1235), ("10 // 3", 3), ("1e3 + 1", 1001.0),
])
def test_the_calculator_computes_arithmetic(expression, value):
    assert evaluate(expression) == value


@pytest.mark.parametrize("expression, message", [
    ("__import__('os').system('echo hi')", "only numbers"),
    ("(1).__class__", "only numbers"),
    ("x + 1", "only numbers"),
    ("'a' * 10", "only numbers"),
    ("9 ** 9 ** 9 ** 9", "too large"),
    ("2 ** 100000", "too large"),
    ("10.0 ** 400", "too large"),
    ("1 / 0", "division by zero"),
    ("(-8) ** 0.5", "not a real number"),
    ("(10 ** 500) * (10 ** 500) * (10 ** 500)", "digits"),
    ("-" * 500 + "1", "nests deeper"),
    ("1 +" * 400_000 + "1", "longer than 1000 characters"),  # a 1 MB expression
    ("", "empty"),
    ("lambda: 1", "only numbers"),
])
def test_the_calculator_refuses_hostile_input_in_bounded_time(expression, message):
    started = time.perf_counter()
    with pytest.raises(CalculatorError) as caught:
        evaluate(expression)
    assert message in str(caught.value)
    assert time.perf_counter() - started < 0.5
    assert calculator(expression).startswith("error: ")  # the tool answers with the error, it does not raise


@pytest.fixture(scope="module")
def sandbox():
    box = open_sandbox("bwrap")
    yield box
    box.close()


def test_the_python_tool_returns_output_and_ends_loops_and_huge_allocations_as_errors(sandbox):
    assert run_python("print(sum(range(10)))", sandbox) == "45\n"
    assert run_python("x = 1", sandbox) == "(no output)"
    assert run_python("print('a'); 1 / 0", sandbox).endswith("error: ZeroDivisionError: division by zero")
    assert run_python("print('x' * 10000)", sandbox, max_output_chars=100).endswith("(9901 more characters cut)")
    started = time.perf_counter()
    assert "longer than 1 s" in run_python("while True: pass", sandbox, Limits(wall_s=1))
    assert time.perf_counter() - started < 5
    assert "CPU time limit" in run_python("while True: pass", sandbox, Limits(wall_s=10, cpu_s=1))
    huge = run_python("b = bytearray(10 * 1024 ** 3); print(len(b))", sandbox, Limits(memory_mb=256))
    assert "MemoryError" in huge and "256 MB" in huge
    assert "No module named" in run_python("import tests", sandbox)  # the caller's path is not the tool's
    assert "No module named" in run_python("import torch", sandbox)  # nor its packages, unless listed


def test_a_tool_that_takes_the_sandbox_runs_model_code_and_never_without_one(sandbox):
    python = resolve_tools("python")[0]
    assert python.runs_model_code and list(python.parameters["properties"]) == ["code"]  # the model sees no sandbox
    assert "no sandbox was given" in call_in_process(python, {"code": "print(1)"})
    calls = ToolCalls(timeout_s=5.0, size=1, sandbox=sandbox)
    try:
        assert calls(python, {"code": "print(6 * 7)"}) == "42\n"
    finally:
        calls.pool.close()


def test_a_typed_documented_function_becomes_a_tool_with_its_json_schema():
    tool = tool_from_function(tool_fixtures.lookup)
    assert tool.name == "lookup" and tool.description == "Look up a city's population."
    assert tool.parameters == {"type": "object", "required": ["city"], "properties": {
        "city": {"type": "string", "description": "the city's name"},
        "year": {"type": "integer", "description": "the census year"}}}
    assert tool.spec == "tests.tool_fixtures:lookup"
    assert tool.check_arguments({"city": "Oslo"}) is None
    assert "missing argument(s) city" in tool.check_arguments({})
    assert "must be a integer" in tool.check_arguments({"city": "Oslo", "year": "x"})
    assert "unknown argument(s) town" in tool.check_arguments({"town": "Oslo"})
    assert [t.name for t in resolve_tools("calculator, python,tests.tool_fixtures:lookup")] == \
        ["calculator", "python", "lookup"]


@pytest.mark.parametrize("names, message", [
    ("calculater", "unknown tool 'calculater'; built in: calculator, python"),
    ("tests.tool_fixtures:untyped", "argument city has no type hint"),
    ("tests.tool_fixtures:missing", "env.tools: tests.tool_fixtures:missing: cannot import it"),
    ("calculator,calculator", "two tools share a name"),
    ("", "name at least one tool"),
])
def test_bad_tools_are_one_line(names, message):
    with pytest.raises(TaskError) as caught:
        resolve_tools(names)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_local_function_cannot_be_a_worker_tool():
    def local(x: int) -> int:
        """Local."""
        return x

    with pytest.raises(TaskError, match="importable module"):
        tool_from_function(local)


def test_hermes_calls_are_parsed_and_malformed_ones_named():
    text = "Let me compute.\n" + call("calculator", expression="2+2") + call("lookup", city="Oslo")
    assert [(c.name, c.arguments) for c in parse_tool_calls(text)] == \
        [("calculator", {"expression": "2+2"}), ("lookup", {"city": "Oslo"})]
    assert parse_tool_calls("The answer is 4.") == []
    string_arguments = '<tool_call>{"name": "calculator", "arguments": "{\\"expression\\": \\"1\\"}"}</tool_call>'
    assert parse_tool_calls(string_arguments)[0].arguments == {"expression": "1"}
    for bad, message in [("<tool_call>{name: 1}</tool_call>", "not valid JSON"),
                         ('<tool_call>{"arguments": {}}</tool_call>', "must be a JSON object"),
                         ('<tool_call>{"name": "calculator"', "not closed")]:
        with pytest.raises(ValueError, match=message):
            parse_tool_calls(bad)


def test_a_tool_episode_calls_answers_and_ends_on_a_plain_answer():
    env = ToolEnv(resolve_tools("calculator"))
    opening = env.reset(SAMPLE)
    assert [m["role"] for m in opening] == ["system", "user"] and "<tools>" in opening[0]["content"]
    assert '"name": "calculator"' in opening[0]["content"]
    turn = env.step("I will use the calculator. " + call("calculator", expression="1234 * 5678"))
    assert turn.messages == [{"role": "tool", "content": "7006652"}] and not turn.done and turn.tool_calls == 1
    wrong = env.step(call("calculator", expression="open('/etc/passwd')"))
    assert wrong.tool_errors == 1 and wrong.messages[0]["content"].startswith("error: only numbers")
    unknown = env.step(call("search", query="x"))
    assert "there is no tool 'search'" in unknown.messages[0]["content"]
    end = env.step("The answer is 7006652.")
    assert end.done and end.stop_reason == DONE and end.messages == []
    assert SingleTurn().step("anything").stop_reason == DONE


def test_parse_errors_follow_on_parse_error_and_tool_calls_are_capped():
    bad = "<tool_call>{oops}</tool_call>"
    told = ToolEnv(resolve_tools("calculator"), on_parse_error="continue").step(bad)
    assert not told.done and "not valid JSON" in told.messages[0]["content"] and not told.mask_turn
    assert ToolEnv(resolve_tools("calculator"), on_parse_error="mask").step(bad).mask_turn
    stopped = ToolEnv(resolve_tools("calculator"), on_parse_error="stop").step(bad)
    assert stopped.done and stopped.stop_reason == PARSE_ERROR
    with pytest.raises(TaskError, match="allowed: continue, stop, mask"):
        ToolEnv(resolve_tools("calculator"), on_parse_error="ignore")
    capped = ToolEnv(resolve_tools("calculator"), max_tool_calls=2)
    capped.reset(SAMPLE)
    assert not capped.step(call("calculator", expression="1") * 2).done
    last = capped.step(call("calculator", expression="2"))
    assert last.done and last.stop_reason == MAX_TOOL_CALLS


def test_worker_tools_that_hang_or_crash_become_errors_and_the_episode_goes_on(sandbox):
    calls = ToolCalls(timeout_s=1.0, size=1, sandbox=sandbox)
    try:
        env = ToolEnv(resolve_tools("calculator,python,tests.tool_fixtures:hangs,tests.tool_fixtures:crashes"),
                      call=calls)
        env.reset(SAMPLE)
        started = time.perf_counter()
        hung = env.step(call("hangs", seconds=60))
        assert "did not return within 1 s" in hung.messages[0]["content"] and hung.tool_errors == 1
        assert time.perf_counter() - started < 10
        crashed = env.step(call("crashes", code=3))
        assert "died during the call" in crashed.messages[0]["content"]
        loop = env.step(call("python", code="while True: pass"))
        assert loop.messages[0]["content"].startswith("error:")  # the sandbox's time limit
        assert env.step(call("calculator", expression="6 * 7")).messages[0]["content"] == "42"  # still serving
    finally:
        calls.close()


HOSTILE_CALLS = [
    ("<tool_call>" + "[" * 1_000 + "]" * 1_000 + "</tool_call>", "more than 32 levels deep"),
    ("<tool_call>" + "[" * 30_000 + "</tool_call>", "more than 32 levels deep"),
    ('<tool_call>{"name": "calculator", "arguments": "' + "[" * 5_000 + '"}</tool_call>', "more than 32 levels"),
    ('<tool_call>{"name": "calculator", "arguments": {"expression": ' + "1" * 5_000 + "}}</tool_call>",
     "cannot be read"),  # past Python's int digit limit: a ValueError that is not a JSONDecodeError
    ('<tool_call>{"name": "calculator", "arguments": {"expression": "' + "1" * 40_000 + '"}}</tool_call>',
     "at most 32,768"),
    (call("calculator", expression="1") * 33, "more than 32 tool calls in one turn"),
    ("<tool_call>" * 50_000, "not closed"),
]


@pytest.mark.parametrize("text, message", HOSTILE_CALLS, ids=["deep", "deeper-unclosed", "deep-string-arguments",
                                                              "huge-int", "huge-block", "many", "many-open"])
def test_hostile_tool_calls_are_the_tools_error_answer_in_bounded_time(text, message):
    """Model output is hostile input: each fault is an `error:` answer to the model, never an exception out of
    step (1,000 nested `[` raised RecursionError before the depth was scanned ahead of json.loads)."""
    env = ToolEnv(resolve_tools("calculator,tests.tool_fixtures:lookup"))
    env.reset(SAMPLE)
    started = time.perf_counter()
    answer = env.step(text)
    assert time.perf_counter() - started < 0.5
    assert not answer.done and answer.tool_errors == 1
    assert answer.messages[0]["content"].startswith("error: ") and message in answer.messages[0]["content"]
    assert "\n" not in answer.messages[0]["content"]
    # Brackets inside strings are text, not nesting: a call about brackets still runs.
    brackets = env.step(call("lookup", city="[{" * 100))
    assert brackets.messages[0]["content"] == "[{" * 100 + " had 1000 people in 2024"
