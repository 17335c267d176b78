"""What the sandbox costs: the `python` tool's per-call time for a trivial program, side by side, interleaved, on
the same machine in one run:

- `before`: the tool as it was before the sandbox (a `python -I` child with rlimits: envs/python_tool.py at the
  commit given by --before, loaded from git);
- `none`: env.sandbox=none (the same plain child, now with bounded output reading);
- `bwrap`: env.sandbox=bwrap (namespaces, a private tmpfs, the process bound).

a batch: 64 calls through the run's ToolCalls from 8 threads at once (the tool calls of a step's episodes side by
side), per backend; and with --episodes N, whole tool episodes: `rl-lora eval` of SmolLM2-135M with the python tool
(and its worked example) on N 3-digit multiplications, env.sandbox=none then bwrap.

    .venv/bin/python scripts/bench_sandbox.py [--calls 200] [--before 07f28c5] [--episodes 50] \
        [--out benchmarks/sandbox.json]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from envs.sandbox import open_sandbox  # noqa: E402
from envs.tool_env import ToolCalls  # noqa: E402
from envs.tools import resolve_tools  # noqa: E402

TRIVIAL = "print(sum(range(10)))"


def old_runner(commit: str):
    source = subprocess.run(["git", "show", f"{commit}:envs/python_tool.py"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "python_tool_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("python_tool_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return lambda code: module.run_python(code)


def tool_episodes(sandbox: str, limit: int) -> dict:
    """`rl-lora eval` with the python tool: wall time, accuracy and the tool's use, from its records."""
    out = Path(tempfile.mkdtemp()) / "eval.jsonl"
    command = [sys.executable, "-m", "rl_lora.cli", "eval", "--set", "task.digits=3", "--set", "task.operators=*",
               "--set", "task.instruction=Use python, then answer with just the number.", "--set", "env.name=tools",
               "--set", "env.tools=python", "--set", f"env.example={ROOT / 'examples' / 'python_example.json'}",
               "--set", "env.max_turns=3", "--set", "env.max_total_tokens=160", "--set", "eval.max_new_tokens=48",
               "--set", f"env.sandbox={sandbox}", "--limit", str(limit), "--out", str(out)]
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    wall = time.perf_counter() - started
    records = [json.loads(line) for line in out.read_text().splitlines()]
    return {"wall_s": wall, "episodes": len(records), "accuracy": sum(r["reward"] or 0 for r in records) / len(records),
            "tool_calls": sum(r["tool_calls"] for r in records), "tool_errors": sum(r["tool_errors"] for r in records),
            "command": " ".join(command[2:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--before", default="07f28c5")
    parser.add_argument("--episodes", type=int, default=0, help="also time N whole tool episodes per backend")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "sandbox.json"))
    args = parser.parse_args()
    boxes = {"none": open_sandbox("none"), "bwrap": open_sandbox("bwrap")}
    from envs.python_tool import run_python

    runners = {"before": old_runner(args.before), **{name: (lambda code, b=box: run_python(code, b))
                                                    for name, box in boxes.items()}}
    for runner in runners.values():  # warm the page cache
        assert runner(TRIVIAL) == "45\n"
    times = {name: [] for name in runners}
    for i in range(args.calls):  # interleaved, so a busy moment of the machine falls on every backend alike
        for name, runner in runners.items():
            started = time.perf_counter()
            runner(TRIVIAL)
            times[name].append(time.perf_counter() - started)
        if (i + 1) % 50 == 0:
            print(f"{i + 1}/{args.calls} calls each", flush=True)
    per_call = {name: {"median_ms": 1000 * statistics.median(t), "p90_ms": 1000 * sorted(t)[int(0.9 * len(t))]}
                for name, t in times.items()}
    python = resolve_tools("python")[0]
    batch = {}
    for name, box in boxes.items():
        calls = ToolCalls(sandbox=box)
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda _: calls(python, {"code": TRIVIAL}), range(64)))
            runs.append(time.perf_counter() - started)
            assert answers == ["45\n"] * 64
        calls.pool.close()
        batch[name] = {"median_s": statistics.median(runs), "runs_s": runs}
    episodes = {name: tool_episodes(name, args.episodes) for name in ("none", "bwrap")} if args.episodes else None
    result = {"command": " ".join(["python", "scripts/bench_sandbox.py", *sys.argv[1:]]),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "load_average_at_end": os.getloadavg()},
              "calls_each": args.calls, "per_call": per_call,
              "overhead_ms_bwrap_vs_before": per_call["bwrap"]["median_ms"] - per_call["before"]["median_ms"],
              "batch_64_calls_8_threads": batch, "tool_episodes": episodes}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"per_call": per_call, "batch": {k: v["median_s"] for k, v in batch.items()}}, indent=2))


if __name__ == "__main__":
    main()
