"""`rl-lora eval`: check every input first, then generate with a progress bar, then write the results whole.
The backend is the one `rollout.backend` names (built as training builds it); an adapter is loaded into it the
way training syncs one."""
from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from envs.render import PromptRenderer
from rl_lora.config import RunConfig
from rl_lora.errors import UserError
from rl_lora.io import atomic_write_text
from rl_lora.models import check_model, load_tokenizer
from rl_lora.run.train import check_environment
from rl_lora.sampling.build import build_backend, read_adapter
from rl_lora.sampling.episodes import build_episodes
from rl_lora.sampling.local import LocalSampler
from rl_lora.sampling.shared_engine import engine_lora_rank
from rl_lora.step.evaluate import EvalResult, evaluate, sampled_eval
from rl_lora.tasks import load_fitted_task, reward_scorer
from rl_lora.tokens import eos_token_ids


def _check_output(path: Path) -> None:
    if not path.parent.is_dir():
        raise UserError(f"output folder does not exist: {path.parent}")
    if path.is_dir():
        raise UserError(f"output path is a folder: {path}")


def _sampled_line(task: str, result: EvalResult, label: str) -> str:
    n = result.samples_per_problem
    passes = ", ".join(f"pass@{k} {value:.3f}" for k, value in result.pass_at_k.items())
    majority = f", maj@{n} {result.maj_at_n:.3f}" if result.maj_at_n is not None else \
        f" (no maj@{n}: the reward does not say what answer it read)"
    return (f"{task} sampled, {n} per problem at temperature {result.temperature:g}, for {label}: "
            f"mean@{n} {result.mean_at_n:.3f}, {passes}{majority}")


def eval_main(config: RunConfig, adapter: str | None = None) -> EvalResult:
    """Greedy accuracy on the test split, or eval.samples=N sampled (mean@N, pass@k, maj@N); writes the
    per-problem records to eval.output. Errors a user can fix raise UserError."""
    console = Console(stderr=True)
    output = Path(config.eval.output or f"eval-{config.task.name}.jsonl")
    # Everything a user can get wrong is checked before the model loads, and nothing is written until the end.
    _check_output(output)
    config.eval.check()
    sampled = sampled_eval(config.eval, config.train.seed)
    update = read_adapter(adapter) if adapter is not None else None
    compute = check_environment(config, in_process=True)  # eval loads the model here, with or without Ray workers
    check_model(config.model.name)
    tokenizer = load_tokenizer(config.model.name)
    renderer = PromptRenderer(tokenizer, config.task.render, config.task.system_prompt)
    task = load_fitted_task(config, renderer, tokenizer, config.eval.max_new_tokens, ("test",))
    scorer = reward_scorer(config.reward, task.name, task.reward, config.env)
    # env.name=tools (or a user environment): each problem is a whole episode, tool calls included.
    episodes = build_episodes(config.env, tokenizer, eos_token_ids(tokenizer), config.reward.timeout_s,
                              config.task.system_prompt)
    samples = list(task.test[: config.eval.limit] if config.eval.limit else task.test)
    prompts = [renderer(s) for s in samples]

    with console.status(f"loading {config.model.name} ({config.rollout.backend} backend)"):
        backend = build_backend(compute.apply(config.model), config.rollout, tokenizer, compute.device,
                                config.train.seed, batch_size=config.eval.batch_size,
                                max_lora_rank=engine_lora_rank([update.lora_config["r"] if update else 1]))
        if update is not None:
            try:
                backend.load_update(update)
            except (ValueError, KeyError, RuntimeError) as error:
                made_for = json.loads((Path(adapter) / "adapter_config.json").read_text()).get(
                    "base_model_name_or_path") or "another model"
                raise UserError(f"adapter {adapter} does not fit {config.model.name}: it was trained on {made_for} "
                                f"({str(error).splitlines()[0][:200]})") from None

    columns = (TextColumn("eval {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        # The bar counts completions: N per problem, and one more with a greedy pass.
        per_problem = 1 if sampled is None else sampled.samples + sampled.greedy
        bar = progress.add_task(task.name, total=len(samples) * per_problem)
        sampler = backend if config.env.name == "single" else LocalSampler(backend, scorer, None, episodes)
        result = evaluate(sampler, prompts, samples, scorer, config.eval.max_new_tokens, config.eval.batch_size,
                          progress=lambda done: progress.advance(bar, done), sampled=sampled)
    scorer.close()
    episodes.close()
    atomic_write_text(output, result.records_jsonl())

    label = config.model.name + (f" + {adapter}" if adapter else "")
    if sampled is None or sampled.greedy:
        accuracy = result.greedy_accuracy if sampled else result.accuracy
        print(f"{task.name} {'greedy ' if sampled else ''}accuracy {accuracy:.3f} ({round(accuracy * result.num_samples)}/"
              f"{result.num_samples}) for {label} on the {config.rollout.backend} backend")
    if sampled is not None:
        print(_sampled_line(task.name, result, label))
    print(f"{result.seconds:.1f} s; {result.truncated_fraction:.0%} of the "
          f"{'greedy ' if sampled is None or sampled.greedy else 'sampled '}completions hit the "
          f"{config.eval.max_new_tokens}-token limit")
    if result.tool_call_fraction:
        print(f"tools: {result.tool_call_fraction:.0%} of the episodes called one, {result.tool_ok_fraction:.0%} "
              f"with every call answered without an error; {result.mean_turns:.2f} turns per episode")
    if result.num_reward_failures:
        print(f"{result.num_reward_failures} completions could not be scored (policy {config.reward.on_error})")
    print(f"per-sample results: {output}")
    print(json.dumps(result.summary()))
    return result
