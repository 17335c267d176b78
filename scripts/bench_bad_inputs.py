"""Bad input, measured (issue 39): each case in a fresh child process, its wall time and its own peak RSS (VmHWM).

- A tool that answers 10 MB, through the episode runner as a run calls it (the answer cut to env.max_tool_output =
  256 tokens by characters first, then by tokens), beside the cut this replaced (the whole answer tokenized, then
  cut), with the 260K chat fixture's tokenizer and SmolLM2's (the default model's).
- A long task.instruction: `rl-lora train` on the 260K model with 10,000 and 60,000 characters and a 10,000-sample
  task (refused in one line before any prompt is built), and SmolLM2 with 60,000.
- Building the prompts when they fit: the 10,000 arithmetic samples with a 60,000-character instruction, each
  prompt rendered by SmolLM2's chat template and measured as the run's context check measures them (64 at a time).

    .venv/bin/python scripts/bench_bad_inputs.py                # writes benchmarks/bad_inputs.json
    .venv/bin/python scripts/bench_bad_inputs.py --skip-build   # without the last case (~4 min on 1 core)
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIXTURE_260K = ROOT / "tests" / "fixtures" / "models" / "stories260K" / "hf"
MAX_TOOL_OUTPUT = 256


def _peak_mb() -> float:
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024


def _tokenizer(model: str):
    from rl_lora.models import load_tokenizer
    from tests.env_fixtures import TEMPLATE

    tokenizer = load_tokenizer(str(FIXTURE_260K) if model == "260K" else "smollm2-135m")
    if model == "260K":
        tokenizer.chat_template = TEMPLATE  # the chat fixture's template (tests/conftest.py: chat_model_dir)
    return tokenizer


def tool_answer_cut(model: str) -> dict:
    """A 10 MB tool answer through EpisodeRunner._answer, the code a run's step calls."""
    from envs.tool_env import ToolEnv
    from envs.tools import resolve_tools
    from rl_lora.sampling.episodes import ChatDeltas, EpisodeLimits, EpisodeRunner, Trajectory
    from rl_lora.tokens import eos_token_ids

    tokenizer = _tokenizer(model)
    tools = resolve_tools("tests.tool_fixtures:huge")
    runner = EpisodeRunner(lambda: ToolEnv(tools), ChatDeltas(tokenizer, eos_token_ids(tokenizer)),
                           EpisodeLimits(3, 4096, MAX_TOOL_OUTPUT))
    call = '<tool_call>{"name": "huge", "arguments": {"megabytes": 10}}</tool_call>'
    seconds = []
    for _ in range(3):  # the first call also compiles the chat template's renderer, once per run
        trajectory = Trajectory(0, runner.new_env(), (1,), text=call, turns=1, last_finished=True)
        started = time.perf_counter()
        runner._answer([trajectory])
        seconds.append(round(time.perf_counter() - started, 3))
    content = trajectory.messages[-1]["content"]
    return {"seconds": seconds, "answer_chars": 10_000_000, "kept_chars": len(content),
            "note": content.rsplit("\n", 1)[-1]}


def tool_answer_whole(model: str) -> dict:
    """The cut this replaced (rl_lora/sampling/episodes.py before issue 39): the whole answer tokenized, then cut."""
    from tests.tool_fixtures import huge

    tokenizer, answer = _tokenizer(model), huge(10)
    started = time.perf_counter()
    ids = tokenizer(answer, add_special_tokens=False, verbose=False)["input_ids"]
    kept = tokenizer.decode(ids[:MAX_TOOL_OUTPUT])
    return {"seconds": round(time.perf_counter() - started, 3), "answer_tokens": len(ids), "kept_chars": len(kept)}


def instruction_refused(model: str, characters: int) -> dict:
    """`rl-lora train` with the instruction and 10,000 training samples: the exit status and its one line."""
    import contextlib
    import io
    import tempfile

    from rl_lora.cli import main

    instruction = ("Think step by step, then answer. " * characters)[:characters]
    err = io.StringIO()
    with tempfile.TemporaryDirectory() as runs, contextlib.redirect_stderr(err):
        started = time.perf_counter()
        code = main(["train", "--set", f"model.name={FIXTURE_260K if model == '260K' else 'smollm2-135m'}",
                     "--set", f"task.instruction={instruction}", "--set", "task.train_size=10000",
                     "--set", "task.digits=3", "--set", f"train.runs_dir={runs}"])
        seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "exit": code, "stderr": err.getvalue().strip()}


def prompts_built(characters: int) -> dict:
    """The 10,000-sample arithmetic task with the instruction, every prompt rendered by SmolLM2's template and
    measured as the run's context check does (rl_lora.tasks.prompt_lengths)."""
    from envs.render import PromptRenderer
    from rl_lora.config import load_config
    from rl_lora.tasks import load_task, prompt_lengths

    instruction = ("Think step by step, then answer. " * characters)[:characters]
    config = load_config(None, [f"task.instruction={instruction}", "task.train_size=10000", "task.digits=3"])
    tokenizer = _tokenizer("smollm2")
    started = time.perf_counter()
    task = load_task(config.task)
    built = time.perf_counter()
    lengths = list(prompt_lengths(task.train, PromptRenderer(tokenizer), tokenizer))
    return {"samples": len(lengths), "longest_prompt_tokens": max(lengths), "seconds_build": round(built - started, 2),
            "seconds_measure": round(time.perf_counter() - built, 1)}


CASES = {
    "tool_answer_10mb_cut_260k": lambda: tool_answer_cut("260K"),
    "tool_answer_10mb_cut_smollm2": lambda: tool_answer_cut("smollm2"),
    "tool_answer_10mb_tokenized_whole_260k (before)": lambda: tool_answer_whole("260K"),
    "tool_answer_10mb_tokenized_whole_smollm2 (before)": lambda: tool_answer_whole("smollm2"),
    "instruction_10000_chars_260k_refused": lambda: instruction_refused("260K", 10_000),
    "instruction_60000_chars_260k_refused": lambda: instruction_refused("260K", 60_000),
    "instruction_60000_chars_smollm2_refused": lambda: instruction_refused("smollm2", 60_000),
    "prompts_10000_samples_60000_chars_built_and_measured": lambda: prompts_built(60_000),
}


def run_case(name: str) -> dict:
    """The case in a child process of its own: its peak RSS is the case's (plus Python's and the imports')."""
    done = subprocess.run([sys.executable, __file__, "--case", name], capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=list(CASES), help=argparse.SUPPRESS)  # the measuring child itself
    parser.add_argument("--skip-build", action="store_true", help="leave out the 10,000-prompt build")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "bad_inputs.json"))
    args = parser.parse_args()
    if args.case:
        result = CASES[args.case]()
        print(json.dumps({**result, "peak_rss_mb": round(_peak_mb())}))
        return
    results = {}
    for name in CASES:
        if args.skip_build and name.startswith("prompts_"):
            continue
        results[name] = run_case(name)
        print(name, json.dumps(results[name])[:300], flush=True)
    Path(args.out).write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                          "python": platform.python_version(), "cases": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
