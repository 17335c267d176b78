"""Can RL teach SmolLM2-135M to use a calculator? Multiplying two 3-digit numbers, which the model cannot do in
its head, measured three ways on the same 100 test problems:

1. without tools (the plain task, greedy);
2. with the calculator tool before training (the run's step-0 evaluation: a system message describing the tool,
   one worked example of a call: examples/calculator_example.json);
3. after RL with the tool (rank-1 LoRA), with the share of episodes that call the tool, and that call it without
   an error, per step (the run's plots/curve.png).

    .venv/bin/python scripts/bench_tool_use.py [--steps 20] [--out benchmarks/tool_use]

Writes OUT/tool_use.json (the commands, the three accuracies, the per-step tool use) and keeps the run folder.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "rl_lora.cli"]
TASK = ["--set", "task.digits=3", "--set", "task.operators=*"]
TOOLS = ["--set", "task.instruction=Use the calculator, then answer with just the number.",
         "--set", "env.name=tools", "--set", "env.tools=calculator",
         "--set", f"env.example={ROOT / 'examples' / 'calculator_example.json'}",
         "--set", "env.max_turns=3", "--set", "env.max_total_tokens=160",
         "--set", "rollout.max_new_tokens=48", "--set", "eval.max_new_tokens=48",
         # The tools' description and the worked example make ~430-token prompts: a larger activation budget
         # than a CPU's default (the weights' size) lets a pass hold a group.
         "--set", "algo.learner_memory_mb=3000"]


def run(argv: list[str], cwd: Path) -> str:
    print("$ rl-lora " + " ".join(argv), flush=True)
    result = subprocess.run(CLI + argv, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"rl-lora {' '.join(argv)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--lr", default="3.16e-4")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "tool_use"))
    parser.add_argument("--resume", action="store_true", help="go on with the run folder a stopped run left (its "
                        "checkpoint), to --steps in all; the no-tools evaluation already written is reused")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    plain = ["eval", *TASK, "--limit", "100", "--set", "eval.max_new_tokens=48", "--out", str(out / "no_tools.jsonl")]
    name = "calculator-lora-r1"
    folder = out / "runs" / name
    train = ["train", *TASK, *TOOLS, "--set", f"algo.lr={args.lr}", "--set", f"train.steps={args.steps}",
             "--set", "train.eval_every=10", "--set", f"train.runs_dir={out / 'runs'}", "--set", f"train.name={name}"]
    commands = [plain, train]
    if args.resume:
        records = [json.loads(line) for line in (out / "no_tools.jsonl").read_text().splitlines()]
        without = {"accuracy": sum(r["reward"] or 0 for r in records) / len(records)}
        commands.append(["train", "--resume", str(folder), "--set", f"train.steps={args.steps}"])
        stdout = run(commands[-1], out)
    else:
        without = json.loads(run(plain, out).strip().splitlines()[-1])
        if folder.exists():
            shutil.rmtree(folder)
        stdout = run(train, out)
    summary = json.loads((folder / "summary.json").read_text())
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    evals = {}
    for path in sorted((folder / "evals").glob("step_*.jsonl")):
        records = [json.loads(line) for line in path.read_text().splitlines()]
        evals[int(path.stem.split("_")[1])] = {
            "accuracy": sum(r["reward"] or 0 for r in records) / len(records),
            "tool_call_fraction": sum(r["tool_calls"] > 0 for r in records) / len(records),
            "tool_ok_fraction": sum(r["tool_calls"] > 0 and r["tool_errors"] == 0 for r in records) / len(records),
            "right_among_calls": (sum(bool(r["reward"]) for r in records if r["tool_calls"] > 0)
                                  / max(1, sum(r["tool_calls"] > 0 for r in records)))}
    report = {
        "commands": ["rl-lora " + " ".join(command) for command in commands],
        "script": "python scripts/bench_tool_use.py " + " ".join(sys.argv[1:]),
        "accuracy_without_tools": without["accuracy"],
        "accuracy_with_tools_before_rl": summary["base_accuracy"],
        "accuracy_with_tools_after_rl": summary["final_accuracy"],
        "greedy_test_evals": evals,
        "per_step": [{key: m.get(key) for key in ("step", "reward_mean", "tool_call_fraction", "tool_ok_fraction",
                                                  "episode_turns", "render_mismatch_fraction")}
                     | {k: v for k, v in m.items() if k.startswith("stop/")} for m in metrics],
        "wall_s": time.perf_counter() - started,
        "train_stdout": stdout,
    }
    (out / "tool_use.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("accuracy_without_tools", "accuracy_with_tools_before_rl",
                                             "accuracy_with_tools_after_rl", "greedy_test_evals")}, indent=1))


if __name__ == "__main__":
    main()
