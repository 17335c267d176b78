"""ToolEnv: the model calls tools by writing Hermes-style blocks, the environment runs them and answers with `tool`
messages, until the model answers without a call.

    <tool_call>
    {"name": "calculator", "arguments": {"expression": "1234 * 5678"}}
    </tool_call>

(the format most open models are trained on: Qwen2.5/3, Hermes, Llama-3-Groq). The tools are described in the
system message, in the same format, so a model whose chat template knows nothing of tools can use them too.

Tools run in worker children (envs.workers) with a time limit, and model-written code in the sandbox (envs.sandbox):
a hang, a crash, an exception or an attack stopped by the sandbox becomes an `error: ...` answer to the model, and
the episode goes on.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from envs.environment import DONE, MAX_TOOL_CALLS, PARSE_ERROR, Message, StepResult, prompt_messages
from envs.errors import TaskError
from envs.sample import Sample
from envs.sandbox import Sandbox
from envs.tools import Tool

ON_PARSE_ERROR = ("continue", "stop", "mask")

TOOLS_PROMPT = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: Any


class ParseError(ValueError):
    pass


# Bounds on what a turn's calls may hold, checked before any JSON is decoded: model output is hostile input, and
# json.loads recurses once per nesting level (1,000 `[` raise RecursionError), holds whole blocks in memory, and
# turns a 5,000-digit number into a ValueError of its own.
MAX_CALLS_PER_TURN = 32
MAX_CALL_CHARS = 32_768  # one <tool_call> block
MAX_JSON_DEPTH = 32  # nested objects and arrays; a call's arguments need a few
OPEN, CLOSE = "<tool_call>", "</tool_call>"


def _blocks(text: str) -> list[str]:
    """The text of each <tool_call> block, found by str.find in one pass (a regex's lazy match rescans the rest of
    the text for every unclosed opening tag)."""
    blocks, at = [], text.find(OPEN)
    while at >= 0:
        end = text.find(CLOSE, at + len(OPEN))
        if end < 0:
            raise ParseError("a <tool_call> block is not closed with </tool_call>")
        if len(blocks) == MAX_CALLS_PER_TURN:
            raise ParseError(f"more than {MAX_CALLS_PER_TURN} tool calls in one turn")
        if end - at - len(OPEN) > MAX_CALL_CHARS:
            raise ParseError(f"a tool call of {end - at - len(OPEN):,} characters; at most {MAX_CALL_CHARS:,}")
        blocks.append(text[at + len(OPEN):end])
        at = text.find(OPEN, end + len(CLOSE))
    return blocks


def json_depth(text: str, stop_past: int = MAX_JSON_DEPTH) -> int:
    """How deeply the JSON in `text` nests objects and arrays (brackets inside strings do not count), found by a
    flat scan, so that json.loads only ever sees text within MAX_JSON_DEPTH. The scan ends as soon as the depth
    passes `stop_past` (a hostile block costs that many characters, not its length)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > stop_past:
                break
        elif char in "]}":
            depth -= 1
    return deepest


def _decode(text: str, what: str) -> Any:
    """JSON within the bounds, or a ParseError naming what is wrong."""
    if json_depth(text) > MAX_JSON_DEPTH:
        raise ParseError(f"{what} nests objects and arrays more than {MAX_JSON_DEPTH} levels deep")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ParseError(f"{what} is not valid JSON ({error.msg} at character {error.pos})") from None
    except ValueError as error:  # e.g. an integer past Python's digit limit
        raise ParseError(f"{what} cannot be read: {str(error)[:120]}") from None


def parse_tool_calls(text: str) -> list[ToolCall]:
    """The Hermes-style calls in an assistant turn, in order ([] when it makes none); ParseError for a block that is
    not `{"name": ..., "arguments": {...}}` JSON, a `<tool_call>` left open, or calls past the bounds above."""
    calls = []
    for block in _blocks(text):
        payload = _decode(block.strip(), "the tool call")
        if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
            raise ParseError('a tool call must be a JSON object {"name": ..., "arguments": {...}}')
        arguments = payload.get("arguments", {})
        if isinstance(arguments, str):  # some models write the arguments as a JSON string
            arguments = _decode(arguments, "the tool call's arguments (a string)")
        calls.append(ToolCall(payload["name"], arguments))
    return calls


def read_example(path: str) -> list[Message]:
    """env.example: a JSON list of {"role", "content"} messages (user, assistant, tool), shown before each
    episode's question."""
    from pathlib import Path

    try:
        messages = json.loads(Path(path).read_text())
    except OSError as error:
        raise TaskError(f"env.example: cannot read {path} ({error.strerror})") from None
    except json.JSONDecodeError as error:
        raise TaskError(f"env.example: {path} is not JSON ({error.msg}, line {error.lineno})") from None
    roles = ("user", "assistant", "tool")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and m.get("role") in roles and isinstance(m.get("content"), str) for m in messages):
        raise TaskError(f"env.example: {path} must hold a JSON list of messages, each {{\"role\": one of "
                        f"{', '.join(roles)}, \"content\": text}}")
    return messages


def tools_system_prompt(tools: list[Tool], system_prompt: str | None = None) -> str:
    listed = TOOLS_PROMPT.format(tools="\n".join(json.dumps(t.schema()) for t in tools))
    return f"{system_prompt}\n\n{listed}" if system_prompt else listed


# What runs a tool: (tool, arguments) -> its answer as text. The default calls the function in this process;
# rl_lora passes ToolCalls: the worker pool for trusted tools, the run's sandbox for model-written code.
ToolCaller = Callable[[Tool, dict], str]


def call_in_process(tool: Tool, arguments: dict) -> str:
    if tool.runs_model_code:  # fail closed: model-written code never runs without the sandbox it asks for
        return f"error: {tool.name} runs model-written code and no sandbox was given (envs.tool_env.ToolCalls)"
    return str(tool.function(**arguments))


class ToolCalls:
    """The ToolCaller of a run. A trusted tool (a user's function, the calculator) runs in a worker child
    (envs.workers.WorkerPool), `timeout_s` each: a hung tool's child is killed and replaced, a dead one reported, and
    the calls of many episodes run side by side. A tool that runs model-written code (python) is called here with
    `sandbox`, where its program runs under the sandbox's own limits. close() ends the children."""

    def __init__(self, timeout_s: float = 10.0, size: int | None = None, sandbox: Sandbox | None = None):
        from envs.workers import WorkerPool

        self.pool, self.timeout_s, self.sandbox = WorkerPool(size), timeout_s, sandbox

    def __call__(self, tool: Tool, arguments: dict) -> str:
        if tool.runs_model_code:
            if self.sandbox is None:
                return call_in_process(tool, arguments)
            return str(tool.function(sandbox=self.sandbox, **arguments))
        return str(self.pool.call(tool.spec, (), self.timeout_s, kwargs=arguments))

    def close(self) -> None:
        self.pool.close()
        if self.sandbox is not None:
            self.sandbox.close()


class ToolEnv:
    """An episode with tools: each assistant turn either calls tools (answered with `tool` messages) or answers.

    max_tool_calls: calls per episode; past it the episode stops (stop reason max_tool_calls).
    on_parse_error: continue (tell the model what was wrong, go on), stop (end the episode, stop reason
    parse_error), or mask (go on, but the malformed turn carries no loss).
    truncate: cuts a tool's answer (rl_lora passes one that counts tokens: env.max_tool_output)."""

    def __init__(self, tools: list[Tool], call: ToolCaller = call_in_process, max_tool_calls: int = 8,
                 on_parse_error: str = "continue", system_prompt: str | None = None,
                 truncate: Callable[[str], str] = lambda text: text, example: list[Message] = ()):
        if not tools:
            raise TaskError("a ToolEnv needs at least one tool")
        if on_parse_error not in ON_PARSE_ERROR:
            raise TaskError(f"env.on_parse_error={on_parse_error!r}: allowed: {', '.join(ON_PARSE_ERROR)}")
        self.tools = {tool.name: tool for tool in tools}
        self.call, self.max_tool_calls, self.on_parse_error = call, max_tool_calls, on_parse_error
        self.system_prompt, self.truncate, self.example = system_prompt, truncate, list(example)
        self.calls_made = 0

    def reset(self, sample: Sample) -> list[Message]:
        self.calls_made = 0
        messages = prompt_messages(sample)
        prompt = tools_system_prompt(list(self.tools.values()), self.system_prompt)
        if messages and messages[0]["role"] == "system":  # the dataset's own system message comes first
            prompt, messages = f"{messages[0]['content']}\n\n{prompt}", messages[1:]
        return [{"role": "system", "content": prompt}] + self.example + messages

    def step(self, assistant_text: str) -> StepResult:
        try:
            calls = parse_tool_calls(assistant_text)
        except ParseError as error:
            if self.on_parse_error == "stop":
                return StepResult(done=True, stop_reason=PARSE_ERROR)
            return StepResult([{"role": "tool", "content": f"error: {error}"}],
                              mask_turn=self.on_parse_error == "mask", tool_errors=1)
        if not calls:
            return StepResult(done=True, stop_reason=DONE)
        if self.calls_made + len(calls) > self.max_tool_calls:
            return StepResult(done=True, stop_reason=MAX_TOOL_CALLS, tool_calls=len(calls))
        self.calls_made += len(calls)
        answers, errors = [], 0
        for call in calls:
            answer = self._run(call)
            errors += answer.rstrip().rsplit("\n", 1)[-1].startswith("error:")  # a tool's error is its last line
            answers.append({"role": "tool", "content": self.truncate(answer)})
        return StepResult(answers, tool_calls=len(calls), tool_errors=errors)

    def _run(self, call: ToolCall) -> str:
        tool = self.tools.get(call.name)
        if tool is None:
            return f"error: there is no tool {call.name!r}; the tools are {', '.join(self.tools)}"
        problem = tool.check_arguments(call.arguments)
        if problem:
            return f"error: {call.name}: {problem}"
        try:
            return str(self.call(tool, call.arguments))
        except Exception as error:  # a worker call's timeout, crash or exception: the model is told
            return f"error: {call.name} failed: {error}"
