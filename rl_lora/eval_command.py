"""`rl-lora eval`: check every input first, then generate with a progress bar, then write the results whole."""
from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from envs.registry import load_task
from envs.render import PromptRenderer
from rewards.scoring import RewardScorer
from rl_lora.config import RunConfig
from rl_lora.errors import UserError
from rl_lora.evaluate import evaluate, write_records
from rl_lora.models import load_causal_lm, load_tokenizer, resolve_model
from rl_lora.rollout.hf import HFBackend


def _check_output(path: Path) -> None:
    if not path.parent.is_dir():
        raise UserError(f"output folder does not exist: {path.parent}")
    if path.is_dir():
        raise UserError(f"output path is a folder: {path}")


def _check_adapter(adapter: str | None) -> None:
    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        raise UserError(f"adapter folder {adapter} has no adapter_config.json (is it a PEFT adapter folder?)")


def eval_main(config: RunConfig, adapter: str | None = None) -> int:
    console = Console(stderr=True)
    output = Path(config.eval.output or f"eval-{config.task.name}.jsonl")
    # Everything a user can get wrong is checked before the model loads, and nothing is written until the end.
    _check_output(output)
    _check_adapter(adapter)
    resolve_model(config.model.name)
    task = load_task(config.task)
    scorer = RewardScorer.for_task(config.reward, task)
    samples = list(task.test[: config.eval.limit] if config.eval.limit else task.test)

    with console.status(f"loading {config.model.name}"):
        tokenizer = load_tokenizer(config.model.name)
        model = load_causal_lm(config.model.name, config.model.dtype, config.model.device)
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter)
    renderer = PromptRenderer(tokenizer, config.task.render, config.task.system_prompt)
    prompts = [renderer(s) for s in samples]

    columns = (TextColumn("eval {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task(task.name, total=len(samples))
        backend = HFBackend(model, tokenizer, batch_size=config.eval.batch_size,
                            progress=lambda rows: progress.advance(bar, rows))
        result = evaluate(backend, prompts, samples, scorer, config.eval.max_new_tokens, config.eval.batch_size)
    scorer.close()
    write_records(output, result)

    label = config.model.name + (f" + {adapter}" if adapter else "")
    print(f"{task.name} accuracy {result.accuracy:.3f} ({round(result.accuracy * result.num_samples)}/"
          f"{result.num_samples}) for {label} in {result.seconds:.1f} s; "
          f"{result.truncated_fraction:.0%} hit the {config.eval.max_new_tokens}-token limit")
    if result.num_reward_failures:
        print(f"{result.num_reward_failures} completions could not be scored (policy {config.reward.on_error})")
    print(f"per-sample results: {output}")
    print(json.dumps(result.summary()))
    return 0
