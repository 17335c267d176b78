"""Tools from plain Python functions: a typed, docstring'd function becomes a name, a description and the JSON
schema of its arguments (the shape chat templates and Hermes-style tool prompts take), and is called by its
`module:function` spec in a worker child (envs.workers), so a hang, a crash or a huge allocation ends as the
tool's error text, never as a dead run.

A tool that runs code the model wrote takes a `sandbox: Sandbox` argument (not shown to the model): it is called in the
caller's process with the run's sandbox (envs.sandbox), and runs the model's program there, never as the user.

Built in: `calculator` (arithmetic, evaluated without `eval`: envs.calculator) and `python` (the model's code as a
program in the sandbox: envs.python_tool).
"""
from __future__ import annotations

import inspect
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

from envs.calculator import CalculatorError, evaluate, format_number
from envs.errors import TaskError
from envs.imports import import_named
from envs.python_tool import run_python
from envs.sandbox import Sandbox

SANDBOX_ARGUMENT = "sandbox"
_JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean"}


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly and return its value.

    Args:
        expression: numbers with + - * / // % ** and parentheses, e.g. "(1234 * 5678) / 2"
    """
    try:
        return format_number(evaluate(expression))
    except CalculatorError as error:
        return f"error: {error}"


def python(code: str, sandbox: Sandbox) -> str:
    """Run Python code in a fresh interpreter and return what it prints (use print to see a value).

    Args:
        code: the program, e.g. "print(sum(range(10)))"
    """
    return run_python(code, sandbox)


BUILT_IN = {"calculator": calculator, "python": python}


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict  # JSON schema: {"type": "object", "properties": {...}, "required": [...]}
    spec: str  # module:function, what the worker child imports and calls
    function: Callable[..., Any] = field(repr=False, compare=False)
    runs_model_code: bool = False  # it takes the sandbox: called with it, in the caller's process

    def schema(self) -> dict:
        """The OpenAI / Hermes function shape chat templates render: {"type": "function", "function": {...}}."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}

    def check_arguments(self, arguments: Any) -> str | None:
        """What is wrong with a call's arguments (None: nothing), before the call is made."""
        if not isinstance(arguments, dict):
            return f"arguments must be a JSON object, got {type(arguments).__name__}"
        properties = self.parameters["properties"]
        unknown = sorted(set(arguments) - set(properties))
        if unknown:
            return f"unknown argument(s) {', '.join(unknown)}; {self.name} takes {', '.join(properties) or 'none'}"
        missing = [name for name in self.parameters["required"] if name not in arguments]
        if missing:
            return f"missing argument(s) {', '.join(missing)}"
        for name, value in arguments.items():
            expected = properties[name].get("type")
            if expected and not _json_type_matches(value, expected):
                return f"argument {name} must be a {expected}, got {type(value).__name__}"
        return None


def _json_type_matches(value: Any, expected: str) -> bool:
    if expected == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == "array":
        return isinstance(value, list)
    if expected == "object":
        return isinstance(value, dict)
    return isinstance(value, {"string": str, "boolean": bool}.get(expected, object))


def _json_schema(annotation: Any, where: str) -> dict:
    if annotation in _JSON_TYPES:
        return {"type": _JSON_TYPES[annotation]}
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (list, tuple, typing.Sequence) or annotation in (list, tuple):
        item = [a for a in args if a is not Ellipsis]
        return {"type": "array", **({"items": _json_schema(item[0], where)} if item else {})}
    if origin is dict or annotation is dict:
        return {"type": "object"}
    if origin is typing.Literal:
        return {"type": _JSON_TYPES.get(type(args[0]), "string"), "enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        kept = [a for a in args if a is not type(None)]
        if len(kept) == 1:
            return _json_schema(kept[0], where)
    raise TaskError(f"{where}: type {annotation!r} has no JSON schema here; use str, int, float, bool, list or dict")


def _argument_docs(doc: str) -> dict[str, str]:
    """Google-style `Args:` lines: `name: text` or `name (type): text`."""
    docs, inside = {}, False
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            inside = True
            continue
        if inside:
            match = re.match(r"(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)", stripped)
            if match:
                docs[match.group(1)] = match.group(2)
            elif stripped and not line.startswith((" ", "\t")):
                break
    return docs


def tool_from_function(function: Callable[..., Any], name: str | None = None) -> Tool:
    """A Tool from a module-level function with type hints on every argument and a docstring (its first
    paragraph is the description, its `Args:` lines the arguments' descriptions)."""
    where = f"tool {getattr(function, '__module__', '?')}:{getattr(function, '__qualname__', function)}"
    if not inspect.isfunction(function):
        raise TaskError(f"{where}: not a function")
    if "<locals>" in function.__qualname__ or function.__module__ == "__main__":
        raise TaskError(f"{where}: a tool runs in a worker process, which imports it by name: define it at the top "
                        "of an importable module (not in __main__ or inside another function)")
    try:
        hints = typing.get_type_hints(function)
    except Exception as error:
        raise TaskError(f"{where}: its type hints cannot be read ({error})") from None
    doc = inspect.getdoc(function) or ""
    if not doc.strip():
        raise TaskError(f"{where}: has no docstring; the model reads the tool's description from it")
    argument_docs = _argument_docs(doc)
    properties, required, runs_model_code = {}, [], False
    for parameter in inspect.signature(function).parameters.values():
        if parameter.name == SANDBOX_ARGUMENT and hints.get(parameter.name) is Sandbox:
            runs_model_code = True  # given by the caller, not the model
            continue
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise TaskError(f"{where}: *args and **kwargs cannot be described to the model; name each argument")
        if parameter.name not in hints:
            raise TaskError(f"{where}: argument {parameter.name} has no type hint (the model is told each "
                            "argument's JSON type from it)")
        schema = _json_schema(hints[parameter.name], f"{where}, argument {parameter.name}")
        if parameter.name in argument_docs:
            schema["description"] = argument_docs[parameter.name]
        properties[parameter.name] = schema
        if parameter.default is inspect.Parameter.empty:
            required.append(parameter.name)
    description = doc.split("\n\n")[0].strip()
    return Tool(name or function.__name__, description, {"type": "object", "properties": properties,
                                                        "required": required},
                f"{function.__module__}:{function.__qualname__}", function, runs_model_code)


def resolve_tools(names: str | list[str]) -> list[Tool]:
    """`calculator,python,my_tools:lookup`: built-in names or `module:function` specs, as a list of Tools."""
    items = [n.strip() for n in names.split(",")] if isinstance(names, str) else [n.strip() for n in names]
    items = [n for n in items if n]
    if not items:
        raise TaskError(f"env.tools: name at least one tool ({', '.join(BUILT_IN)} or module:function)")
    tools = []
    for item in items:
        if item in BUILT_IN:
            tools.append(tool_from_function(BUILT_IN[item]))
            continue
        module_name, sep, attribute = item.partition(":")
        if not sep or not module_name or not attribute:
            raise TaskError(f"env.tools: unknown tool {item!r}; built in: {', '.join(BUILT_IN)}, or name your own "
                            "as module:function")
        tools.append(tool_from_function(import_named(item, f"env.tools: {item}")))
    names_seen = [t.name for t in tools]
    if len(set(names_seen)) != len(names_seen):
        raise TaskError(f"env.tools: two tools share a name ({', '.join(names_seen)})")
    return tools
