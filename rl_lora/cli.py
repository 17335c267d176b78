"""`rl-lora`, the one entry point: train, eval and compare read the same typed config (YAML + --set overrides).
Two hidden subcommands serve compare's child processes (shared-runs) and its learner measurement
(learner-memory); they are not listed in --help."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from envs.environment import EnvironmentFault
from envs.registry import TASK_NAMES
from rewards.protocol import RewardError
from rewards.registry import BUILTIN_REWARDS
from rl_lora.config import RunConfig, describe, load_config
from rl_lora.errors import USER_ERRORS, RunStopped, StoppedAfterStep, UserError


EXIT_STATUS = ("exit status: 0 finished; 1 a part failed (resume from the last checkpoint); 2 bad input, nothing "
               "written;\n  128+N stopped by signal N after its step and checkpoint (143 SIGTERM, 130 Ctrl-C): "
               "resumable, not finished\n\n")


def _config_epilog(exit_status: str = "") -> str:
    return (exit_status + "config keys (YAML sections, or --set section.key=value):\n" +
            "\n".join(describe(RunConfig)))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="YAML config file (sections as listed below); optional")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set task.digits=3 (repeatable); a text key takes VALUE "
                        "as written (task.operators=-), null unsets a key that may be unset")
    parser.add_argument("--reward", help="same as --set reward.name=... "
                        f"({', '.join(BUILTIN_REWARDS)}, package.module:function)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rl-lora", description="RL fine-tuning of language models with LoRA.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    tr = commands.add_parser(
        "train", help="one RL run (no arguments: SmolLM2-135M, arithmetic, rank-1 LoRA, on a CUDA GPU if torch sees "
        "one, else the CPU: a few minutes)",
        description="One RL run: sample groups with the current policy, score them, update LoRA (or all) weights. "
                    "Writes a run folder with config.yaml, metrics.jsonl, TensorBoard events, checkpoints and plots.",
        epilog=_config_epilog(EXIT_STATUS), formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(tr)
    tr.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint "
                    "(its config.yaml is used; --set may change e.g. train.steps)")

    ev = commands.add_parser(
        "eval", help="test accuracy of a model or an adapter: greedy, or sampled (eval.samples=N: pass@k, maj@N)",
        description="Test-set accuracy of a model (and optionally a PEFT adapter): greedy, or with eval.samples=N "
                    "N completions per problem reporting mean@N, pass@k (unbiased estimator) and maj@N. Prints the "
                    "metrics and writes one JSON line per problem.",
        epilog=_config_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(ev)
    ev.add_argument("--model", help="same as --set model.name=...")
    ev.add_argument("--task", help=f"same as --set task.name=... ({', '.join(TASK_NAMES)}, package.module:function)")
    ev.add_argument("--data", help="same as --set task.path=... (a local jsonl/parquet file or folder)")
    ev.add_argument("--adapter", help="a PEFT adapter folder (a run's checkpoints/step_N/adapter)")
    ev.add_argument("--limit", type=int, help="same as --set eval.limit=N")
    ev.add_argument("--out", help="same as --set eval.output=PATH")
    cp = commands.add_parser(
        "compare", help="tiny vs rank-1 vs rank-8 vs FullFT, or any config key's values (x LR sweep x seeds) from "
        "one config, one report",
        description="Run arms x variants (--vary: any config key's values) x learning rates x seeds from one base "
                    "config (each a normal run folder under OUT/runs; finished runs are skipped, interrupted ones "
                    "resume), then write OUT/report.md with a table (a row per arm and variant, at its best LR) and "
                    "PNG plots. With --report, rebuild the report from existing run folders only.",
        epilog=_config_epilog(EXIT_STATUS.replace("after its step", "(compare, or the run it trains) after the run's "
                                                  "step")), formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(cp)
    cp.add_argument("--arms", help="comma-separated arms: lora:RANK, dora:RANK, tiny:U (a TinyLoRA adapter of U "
                    "parameters in all, e.g. tiny:13) or full (default: lora:1,lora:8,full; with --vary, the base "
                    "config's own arm)")
    cp.add_argument("--vary", action="append", default=[], metavar="KEY=V1,V2", help="run each value of any config "
                    "key, e.g. --vary algo.loss=is_pg,ppo,gspo,cispo; several --vary make a grid; a value may carry "
                    "more settings after '+' (--vary algo.loss=is_pg,ppo+algo.clip_eps_high=0.28). Each variant "
                    "gets its own LR grid and seeds, a row in the report and run folders named after it")
    cp.add_argument("--lr-sweep", type=int, default=1, metavar="N", help="learning rates per arm, --lr-step "
                    "apart, centred on each family's own LR: algo.full_lr for FullFT, algo.lora_lr_multiplier x it "
                    "for LoRA and DoRA, algo.tiny_lr_multiplier x it for tiny (default 1: the centre only)")
    cp.add_argument("--lr-step", type=float, default=0.5, metavar="DECADES", help="grid spacing in decades "
                    "(default 0.5: 3.16x apart; 0.25 for a finer grid around a known best)")
    cp.add_argument("--seeds", type=int, default=1, metavar="N", help="seeds per arm and LR (default 1)")
    cp.add_argument("--seeds-at-best", type=int, default=0, metavar="N", help="after the sweep, more seeds at "
                    "each arm's best LR, up to N in all (e.g. --seeds 1 --seeds-at-best 3: sweep with one seed, "
                    "then confirm the best with three)")
    cp.add_argument("--best-points", type=int, default=1, metavar="K", help="with --seeds-at-best: add the seeds "
                    "at each arm's K best LRs (default 1; 2 shows whether the best LR beats its runner-up over "
                    "seeds, which the report's best-LR ratio spread uses)")
    cp.add_argument("--lr-extend", type=int, default=2, metavar="N", help="with --lr-sweep >= 3, when the LR at "
                    "an end of an arm's grid beats all the others (so the best may lie past it), try up to N more "
                    "LRs past that end, one --lr-step each (default 2)")
    cp.add_argument("--share-engine", action="store_true", help="with rollout.backend=vllm: train each seed's LoRA "
                    "runs (every rank and LR) side by side in one process on one vLLM engine, each adapter in its "
                    "own LoRA slot, instead of one run (and one engine) at a time; FullFT runs still run alone")
    cp.add_argument("--no-learner-memory", action="store_true", help="skip the last part: each arm's learner alone "
                    "in a fresh process for its peak memory and step time (the report shows '—' there)")
    cp.add_argument("--out", default="runs/compare", help="where runs/ and the report go (default runs/compare)")
    cp.add_argument("--report", nargs="+", metavar="RUN_DIR", help="only rebuild the report from these run folders")

    gr = commands.add_parser(
        "grade", help="score completions with a reward, and see what the grader read and why",
        description="Score one completion (or a .jsonl file of them) with a reward as a run would, and print what "
                    "the grader read and which rule decided (gsm8k); --explain lists every candidate it considered.",
        epilog='examples:\n  rl-lora grade --answer 42 "The answer is 42 pens, one for each of the 6 tables."\n'
               "  rl-lora grade --reward math --answer '\\frac{1}{2}' 'so $\\boxed{0.5}$'\n"
               "  rl-lora grade --file completions.jsonl --explain   # columns: completion, answer (question)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    gr.add_argument("completion", nargs="?", help="the completion text (or use --file)")
    gr.add_argument("--reward", default="gsm8k", help="gsm8k (default), math, format, or package.module:function")
    gr.add_argument("--answer", help="the reference answer")
    gr.add_argument("--question", help="the question (the GSM8K grader refuses an unevaluated restatement of its "
                    "arithmetic, and reads \"$4 million\" as 4 when it counts in millions)")
    gr.add_argument("--file", help="a .jsonl file: one object per line with completion and answer (question too)")
    gr.add_argument("--explain", action="store_true", help="also every candidate considered and the asides set apart")
    gr.add_argument("--timeout-s", type=float, default=10.0, help="time limit per completion for a user reward")

    ex = commands.add_parser(
        "export", help="a run's checkpoint as a Hugging Face model folder (LoRA merged in, and the PEFT adapter)",
        description="Write a run's checkpoint as a folder that AutoModelForCausalLM.from_pretrained and vLLM load as "
                    "it is: LoRA (DoRA, tiny) merged into the base model in float32 plus the adapter under adapter/, "
                    "or FullFT's weights; the tokenizer with its chat template; a README.md card.")
    ex.add_argument("run_dir", metavar="RUN", help="a run folder (train.runs_dir/train.name)")
    ex.add_argument("--step", type=int, help="the checkpoint's step (default: the last checkpoint)")
    ex.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) folder for the export")

    # Hidden (no help=, so --help does not list them): compare's child processes.
    sr = commands.add_parser("shared-runs", description="Runs that differ only in their adapter, side by side in "
                             "one process on one vLLM engine (what compare --share-engine starts per seed).")
    sr.add_argument("--start", action="append", default=[], metavar="CONFIG", help="a new run from this config "
                    "(its train.runs_dir/train.name is the run folder)")
    sr.add_argument("--resume", action="append", default=[], metavar="RUN_DIR", help="resume this run folder")
    lm = commands.add_parser("learner-memory", description="The learner alone on one step-sized batch, in a fresh "
                             "process: its peak memory and step time (compare measures each arm this way).")
    lm.add_argument("run_dir", nargs="?", help="a run folder: writes its learner_memory.json")
    lm.add_argument("--config", help="a config file instead of a run folder (prints the JSON)")
    lm.add_argument("--steps", type=int, default=2, help="timed learner steps after one warm-up step")
    lm.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)  # the measuring child itself
    return parser


def _flag_overrides(args: argparse.Namespace, mapping: dict[str, str]) -> list[str]:
    return [f"{key}={getattr(args, flag)}" for flag, key in mapping.items() if getattr(args, flag, None) is not None]


def run_eval(args: argparse.Namespace) -> int:
    overrides = _flag_overrides(args, {"model": "model.name", "task": "task.name", "data": "task.path",
                                       "limit": "eval.limit", "reward": "reward.name", "out": "eval.output"})
    config: RunConfig = load_config(args.config, overrides + args.overrides)
    from rl_lora.run.eval import eval_main

    eval_main(config, adapter=args.adapter)
    return 0


def run_train(args: argparse.Namespace) -> int:
    from rl_lora.run.train import train_main

    overrides = _flag_overrides(args, {"reward": "reward.name"}) + args.overrides
    if args.resume:
        if args.config:
            raise UserError("--resume uses the run's own config.yaml; pass changes with --set")
        train_main(None, args.resume, overrides)
    else:
        train_main(load_config(args.config, overrides), None, overrides)
    return 0


def run_compare(args: argparse.Namespace) -> int:
    import shlex
    from pathlib import Path

    from rl_lora.compare.report import write_report
    from rl_lora.compare.sweep import Arm, parse_arms, parse_vary, run_compare, variants

    command = "rl-lora " + shlex.join(args.argv)
    out = Path(args.out)
    if args.report:
        print(f"report: {write_report([Path(d) for d in args.report], out, command)}")
        return 0
    if args.lr_sweep < 1 or args.seeds < 1 or args.seeds_at_best < 0 or args.lr_extend < 0 or args.best_points < 1:
        raise UserError("--lr-sweep, --seeds and --best-points must be >= 1, --seeds-at-best and --lr-extend >= 0")
    if not 0 < args.lr_step <= 2:
        raise UserError(f"--lr-step {args.lr_step:g}: a grid spacing in decades, in (0, 2] (0.5: 3.16x apart)")
    overrides = _flag_overrides(args, {"reward": "reward.name"}) + args.overrides
    base = load_config(args.config, overrides)
    if args.arms is None and args.vary:
        arms = [Arm.parse(base.arm_label)]  # varying other keys: the base config's arm, as it is
    else:
        arms = parse_arms(args.arms or "lora:1,lora:8,full")
    folders = run_compare(base, variants(arms, parse_vary(args.vary, base)), args.lr_sweep, args.seeds,
                          out, args.lr_extend, args.seeds_at_best, learner_memory=not args.no_learner_memory,
                          share_engine=args.share_engine,
                          lr_step=args.lr_step, best_points=args.best_points)
    print(f"report: {write_report(folders, out, command)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("RL_LORA_LOG", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in reports
    try:
        if args.command == "eval":
            return run_eval(args)
        if args.command == "train":
            return run_train(args)
        if args.command == "compare":
            return run_compare(args)
        if args.command == "grade":
            from rl_lora.run.grade import grade_main

            return grade_main(args.reward, args.answer, args.completion, args.file, args.question, args.explain,
                              args.timeout_s)
        if args.command == "export":
            import shlex

            from rl_lora.run.export import export_main

            export_main(args.run_dir, args.step, args.out, "rl-lora " + shlex.join(args.argv))
            return 0
        if args.command == "shared-runs":
            from rl_lora.run.shared_runs import shared_runs_main

            return shared_runs_main(args.start, args.resume)
        if args.command == "learner-memory":
            from rl_lora.compare.learner_memory import learner_memory_main

            return learner_memory_main(args.run_dir, args.config, args.steps, args.in_process)
    except USER_ERRORS as e:
        print(f"rl-lora: error: {e}", file=sys.stderr)
        return 2
    except RewardError as e:
        print(f"rl-lora: error: {e} (reward.on_error=stop; skip or zero keep the run going)", file=sys.stderr)
        return 1
    except RunStopped as e:
        print(f"rl-lora: error: {e}", file=sys.stderr)
        return 1
    except EnvironmentFault as e:  # on a Ray worker too: one line, the worker's traceback left out
        from rl_lora.cluster.remote_errors import describe

        print(f"rl-lora: error: {describe(e)}", file=sys.stderr)
        return 1
    except StoppedAfterStep as e:  # after a checkpoint: resumable, so not 0, which says "finished"
        print(e, flush=True)
        return 128 + e.signum
    except KeyboardInterrupt as e:
        print(f"rl-lora: interrupted ({e})" if str(e) else "rl-lora: interrupted", file=sys.stderr)
        return 128 + getattr(e, "signum", 2)
    return 1


if __name__ == "__main__":
    sys.exit(main())
