"""Multi-turn episodes, token in and token out, on the real 260K Llama: the loss mask covers exactly the sampled
tokens, the environment's tokens carry no gradient, and a trajectory's ids never change between turns."""
import json

import pytest
import torch

from envs.errors import TaskError
from envs.sample import Sample
from rl_lora.cli import main
from rl_lora.policy.logprobs import batch_logprobs
from rl_lora.policy.losses import policy_loss, token_weights
from rl_lora.sampling.episodes import ChatDeltas, EpisodeLimits, EpisodeRunner
from rl_lora.sampling.hf import HFBackend
from rl_lora.step.advantages import build_rollouts
from rl_lora.types import SamplingParams, collate
from tests.env_fixtures import TEMPLATE, ThreeTurns

SAMPLES = [Sample("a", "Once upon a time", "x"), Sample("b", "The cat sat", "y")]


class Recording:
    """The real backend, with every call's prompts and results kept (to check what each turn was sampled from)."""

    def __init__(self, backend):
        self.backend, self.calls = backend, []

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def generate(self, prompts, n, sampling):
        groups = self.backend.generate(prompts, n, sampling)
        self.calls.append((prompts, groups))
        return groups


@pytest.fixture
def chat_tokenizer(tiny_model):
    _, tokenizer = tiny_model
    tokenizer = __import__("copy").deepcopy(tokenizer)
    tokenizer.chat_template = TEMPLATE
    return tokenizer


def test_three_turns_keep_their_ids_and_the_mask_covers_exactly_the_sampled_tokens(tiny_model, chat_tokenizer):
    model, _ = tiny_model
    backend = Recording(HFBackend(model, chat_tokenizer))
    runner = EpisodeRunner(ThreeTurns, ChatDeltas(chat_tokenizer, backend.eos_ids), EpisodeLimits(5, 400, 64))
    prompts = [chat_tokenizer.apply_chat_template([{"role": "user", "content": s.prompt}], tokenize=False,
                                                   add_generation_prompt=True) for s in SAMPLES]
    groups = runner.run(backend, prompts, SAMPLES, 2, SamplingParams(1.0, 6, seed=3))
    assert len(backend.calls) == 3  # turn 1: n per prompt; turns 2 and 3: one per trajectory
    trajectories = [c for group in groups for c in group]
    for index, completion in enumerate(trajectories):
        assert completion.turns == 3 and completion.stop_reason in ("done", "max_tokens")
        turns = [backend.calls[0][1][index // 2][index % 2]] + [backend.calls[t][1][index][0] for t in (1, 2)]
        full = completion.prompt_ids + completion.token_ids
        # Each turn was sampled from the trajectory's ids as they stood, and those ids are still its start.
        for t, (contexts, _) in enumerate(backend.calls[1:], 1):
            context = tuple(contexts[index])
            assert full[:len(context)] == context
            assert full[len(context):len(context) + len(turns[t].token_ids)] == turns[t].token_ids
        # Token by token: mask 1 exactly where a sampled turn sits, with the sampler's log-probs there.
        expected_mask, position = [0] * len(completion.token_ids), 0
        for t, turn in enumerate(turns):
            start = 0 if t == 0 else len(backend.calls[t][0][index]) - len(completion.prompt_ids)
            expected_mask[start:start + len(turn.token_ids)] = [1] * len(turn.token_ids)
            assert completion.logprobs[start:start + len(turn.token_ids)] == turn.logprobs
        assert list(completion.loss_mask) == expected_mask
        assert all(lp == 0.0 for lp, m in zip(completion.logprobs, completion.loss_mask) if m == 0)
        assert completion.text == turns[-1].text
        assert completion.env_reward == 0.5 * sum("the" in turn.text for turn in turns)


def test_the_learner_scores_the_sampled_tokens_and_tool_tokens_carry_no_gradient(tiny_model, chat_tokenizer):
    model, _ = tiny_model
    backend = HFBackend(model, chat_tokenizer)
    runner = EpisodeRunner(ThreeTurns, ChatDeltas(chat_tokenizer, backend.eos_ids), EpisodeLimits(5, 400, 64))
    prompts = [chat_tokenizer.apply_chat_template([{"role": "user", "content": s.prompt}], tokenize=False,
                                                   add_generation_prompt=True) for s in SAMPLES]
    groups = runner.run(backend, prompts, SAMPLES, 2, SamplingParams(1.0, 6, seed=4))
    rollouts = build_rollouts([s.id for s in SAMPLES], groups, [1.0, 0.0, 0.0, 1.0], "group_mean", False)
    batch = collate(rollouts, backend.pad_id)
    assert batch.loss_mask is not None and 0 < batch.trained_mask.sum() < batch.completion_mask.sum()
    model.train()
    logprobs, _ = batch_logprobs(model, batch)
    logprobs.retain_grad()
    mask = batch.trained_mask
    # The learner's log-probs of the sampled tokens are the sampler's: the same ids, scored in the same context.
    assert torch.allclose(logprobs * mask, batch.sampler_logprobs * mask, atol=1e-4)
    policy_loss("is_pg", logprobs, batch.sampler_logprobs, batch.advantages, mask,
                token_weights(mask, "token")).loss.backward()
    environment = (batch.completion_mask == 1) & (mask == 0)
    assert environment.any() and torch.all(logprobs.grad[environment] == 0)
    assert logprobs.grad[mask == 1].abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_templates_that_cannot_serve_episodes_are_named_in_one_line(tiny_model):
    _, tokenizer = tiny_model
    plain = __import__("copy").deepcopy(tokenizer)
    with pytest.raises(TaskError, match="has none"):
        ChatDeltas(plain, [2])
    plain.chat_template = ("{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('no tools') }}"
                           "{% endif %}{{ m['content'] }}</s>{% endfor %}")
    with pytest.raises(TaskError, match="cannot render a 'tool' message"):
        ChatDeltas(plain, [2])
    # A template that drops earlier turns once the conversation goes on (as reasoning templates drop old thoughts)
    plain.chat_template = ("{% for m in messages %}{% if loop.last or m['role'] != 'assistant' or "
                           "messages|length < 4 %}{{ m['content'] }}</s>{% endif %}{% endfor %}")
    with pytest.raises(TaskError, match="not prefix-preserving"):
        ChatDeltas(plain, [2])


RUN = ["--reward", "tests.reward_fixtures:mentions_the", "--set", "algo.lr=0.005", "--set", "lora.rank=2",
       "--set", "train.eval_size=4", "--set", "eval.max_new_tokens=6", "--set", "train.eval_every=0",
       "--set", "rollout.prompts_per_step=2", "--set", "rollout.group_size=2", "--set", "rollout.max_new_tokens=6",
       "--set", "env.name=tests.env_fixtures:ThreeTurns", "--set", "env.max_turns=5"]


def test_a_multi_turn_run_trains_logs_its_episodes_and_resumes_exactly(chat_model_dir, tmp_path, capsys):
    def train(name, *extra):
        code = main(["train", "--set", f"model.name={chat_model_dir}", *RUN, "--set", f"train.runs_dir={tmp_path}",
                     "--set", f"train.name={name}", *extra])
        assert code == 0, capsys.readouterr().err
        return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    straight = train("straight", "--set", "train.steps=2")
    assert all(m["episode_turns"] == 3 for m in straight)
    assert all(sum(v for k, v in m.items() if k.startswith("stop/")) == 4 for m in straight)
    assert main(["train", "--set", f"model.name={chat_model_dir}", *RUN, "--set", f"train.runs_dir={tmp_path}",
                 "--set", "train.name=resumed", "--set", "train.steps=1", "--set", "train.checkpoint_every=1"]) == 0
    assert main(["train", "--resume", str(tmp_path / "resumed"), "--set", "train.steps=2"]) == 0
    resumed = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    for key in ("reward_mean", "loss", "episode_turns", "completion_tokens_mean"):
        assert [m[key] for m in resumed] == pytest.approx([m[key] for m in straight], abs=1e-6), key


@pytest.mark.parametrize("settings, message", [
    (["env.name=tools"], "env.name=tools needs env.tools"),
    (["env.name=tools", "env.tools=calculater"], "unknown tool 'calculater'"),
    (["env.name=tools", "env.tools=tests.tool_fixtures:untyped"], "has no type hint"),
    (["env.name=tests.env_fixtures:NotAnEnvironment"], "is not an environment (it has no step method)"),
    (["env.max_turns=0"], "env.max_turns: 0 is out of range"),
    (["env.tools=calculator"], "set env.name=tools"),
    (["env.name=tools", "env.tools=calculator", "env.example=/nonexistent.json"], "env.example: cannot read"),
])
def test_bad_environments_are_one_line_before_the_model_loads(tmp_path, capsys, settings, message):
    flags = [arg for s in settings for arg in ("--set", s)]
    assert main(["train", "--set", "model.name=/nonexistent", *flags, "--set", f"train.runs_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_the_rerender_check_finds_where_a_non_canonical_split_would_drift(chat_tokenizer):
    from rl_lora.sampling.episodes import render_gap
    from rl_lora.tokens import tokenize_prompts

    messages = [{"role": "user", "content": "Once upon a time"}, {"role": "assistant", "content": "there was a dog"}]
    ids = tokenize_prompts(chat_tokenizer, [chat_tokenizer.apply_chat_template(messages, tokenize=False)])[0]
    assert render_gap(chat_tokenizer, messages, ids) is None
    # The same text, one token sampled as two pieces (a split the tokenizer would never make): a re-rendering
    # trainer would score other tokens from that position on.
    tokens = chat_tokenizer.convert_ids_to_tokens(ids)
    position = next(i for i, t in enumerate(tokens) if len(t) > 2 and t[:2] in chat_tokenizer.get_vocab()
                    and t[2:] in chat_tokenizer.get_vocab() and i > 10)
    split = ids[:position] + chat_tokenizer.convert_tokens_to_ids([tokens[position][:2], tokens[position][2:]]) + \
        ids[position + 1:]
    assert chat_tokenizer.decode(split) == chat_tokenizer.decode(ids)
    assert render_gap(chat_tokenizer, messages, split) == position


def test_a_tool_run_plots_tool_use_per_step(tmp_path):
    from rl_lora.run.plots import plot_run
    from rl_lora.types import StepMetrics

    fields = {f: 0.0 for f in ("reward_mean", "reward_std", "zero_variance_groups", "loss", "grad_norm", "sampler_kl",
                               "base_kl", "clip_fraction", "entropy", "completion_tokens_mean", "truncated_fraction",
                               "tokens_per_s", "time_generate", "time_score", "time_wait", "time_learn", "time_sync",
                               "time_probe", "time_step", "learning_rate")}
    metrics = [StepMetrics(step=s, reward_failures=0, lag=0, episode_turns=2.0, tool_call_fraction=0.1 * s,
                           tool_ok_fraction=0.05 * s, **fields) for s in range(1, 6)]
    assert plot_run(metrics, 0.2, tmp_path / "curve.png", "tools").stat().st_size > 20_000


def test_the_documented_user_environment_runs_as_written(tmp_path, monkeypatch):
    """docs/environments.md's GuessTheNumber, taken from the page, through the protocol and env.name's check."""
    from pathlib import Path

    from envs.environment import resolve_environment

    page = (Path(__file__).parents[1] / "docs" / "environments.md").read_text()
    code = next(block.split("```", 1)[0] for block in page.split("```python\n")[1:] if "class GuessTheNumber" in block)
    (tmp_path / "my_envs.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    env = resolve_environment("my_envs:GuessTheNumber")()
    assert env.reset(Sample("g", "Guess my number between 1 and 10.", "7")) == \
        [{"role": "user", "content": "Guess my number between 1 and 10."}]
    assert env.step("Maybe five?").messages == [{"role": "user", "content": "Answer with a number."}]
    lower = env.step("9")
    assert not lower.done and "go lower" in lower.messages[0]["content"]
    found = env.step("It is 7.")
    assert found.done and found.reward == 1.0


def test_a_model_without_a_chat_template_is_refused_for_tools_before_it_loads(tiny_model_dir, tmp_path, capsys):
    code = main(["train", "--set", f"model.name={tiny_model_dir}", "--set", "env.name=tools",
                 "--set", "env.tools=calculator", "--set", f"train.runs_dir={tmp_path}", "--set", "train.name=t"])
    err = capsys.readouterr().err
    assert code == 2 and "has none" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "t").exists()


def test_hung_tools_cost_one_time_limit_not_one_per_episode(chat_tokenizer):
    """verl #2445: one tool that hangs must not stall the batch. Four episodes each call a tool that hangs; the
    environments answer side by side, each call ending at its 1 s limit."""
    import time

    from envs.tool_env import ToolCalls, ToolEnv
    from envs.tools import resolve_tools
    from rl_lora.sampling.episodes import Trajectory

    calls = ToolCalls(timeout_s=1.0, size=4)
    try:
        tools = resolve_tools("tests.tool_fixtures:hangs")
        runner = EpisodeRunner(lambda: ToolEnv(tools, calls), ChatDeltas(chat_tokenizer, [2]), EpisodeLimits(3))
        hang = '<tool_call>{"name": "hangs", "arguments": {"seconds": 30}}</tool_call>'
        trajectories = [Trajectory(i, runner.new_env(), (1,), text=hang, turns=1, last_finished=True)
                        for i in range(4)]
        for t in trajectories:  # the children start (and import the tool) before the clock does
            calls.pool.call("tests.tool_fixtures:hangs", (0,), 10.0)
        started = time.perf_counter()
        going = runner._answer(trajectories)
        elapsed = time.perf_counter() - started
    finally:
        calls.close()
    assert len(going) == 4 and all(t.tool_errors == 1 for t in trajectories)
    assert elapsed < 3.5, elapsed  # serially: 4 s and more


def test_a_hostile_call_and_a_10_mb_answer_cost_an_error_line_and_milliseconds(chat_tokenizer):
    """Through the runner as a run calls it, on the 260K chat fixture: 1,000 nested `[` are the tool's `error:`
    answer (it raised RecursionError out of step), and a 10 MB answer is cut by characters before it is tokenized
    (tokenized whole it cost 219 s a step), to env.max_tool_output tokens."""
    import time

    from envs.tool_env import ToolEnv
    from envs.tools import resolve_tools
    from rl_lora.sampling.episodes import Trajectory

    tools = resolve_tools("calculator,tests.tool_fixtures:huge")
    runner = EpisodeRunner(lambda: ToolEnv(tools), ChatDeltas(chat_tokenizer, [2]), EpisodeLimits(3, 4096, 64))
    texts = ["<tool_call>" + "[" * 1_000 + "]" * 1_000 + "</tool_call>",
             '<tool_call>{"name": "huge", "arguments": {"megabytes": 10}}</tool_call>']
    trajectories = [Trajectory(i, runner.new_env(), (1,), text=text, turns=1, last_finished=True)
                    for i, text in enumerate(texts)]
    started = time.perf_counter()
    going = runner._answer(trajectories)
    elapsed = time.perf_counter() - started
    assert len(going) == 2 and elapsed < 1.0, elapsed
    deep, huge = (t.messages[-1]["content"] for t in trajectories)
    assert deep == "error: the tool call nests objects and arrays more than 32 levels deep"
    kept, note = huge.rsplit("\n", 1)
    assert len(chat_tokenizer(kept, add_special_tokens=False)["input_ids"]) == 64
    assert note.startswith("... (") and note.endswith("more characters cut)")
    assert 9_990_000 < int(note[5:].split()[0].replace(",", "")) < 10_000_000


@pytest.mark.parametrize("name, line", [
    ("ResetRaises", "reset() on sample 'a' raised KeyError: 'no such level'"),
    ("StepRaises", "step() on sample 'a' raised ZeroDivisionError: division by zero in the scorer"),
    ("ResetReturnsText", "reset() on sample 'a' returned str, not a list of messages"),
    ("StepReturnsDict", "step() on sample 'a' returned dict, not an envs.environment.StepResult"),
    ("IntContent", "step() on sample 'a' message 0's content is int, not text"),
    ("NaNReward", "step() on sample 'a' returned a reward of nan, not a finite number"),
])
def test_a_user_environments_faults_are_one_line_naming_it_the_method_and_the_sample(tiny_model, chat_tokenizer,
                                                                                      name, line):
    from envs.environment import CheckedEnvironment, EnvironmentFault
    from tests import env_fixtures

    model, _ = tiny_model
    spec = f"tests.env_fixtures:{name}"
    runner = EpisodeRunner(lambda: CheckedEnvironment(getattr(env_fixtures, name), spec),
                           ChatDeltas(chat_tokenizer, [2]), EpisodeLimits(5, 400, 64))
    with pytest.raises(EnvironmentFault) as caught:
        runner.run(HFBackend(model, chat_tokenizer), [], SAMPLES, 2, SamplingParams(1.0, 6, seed=3))
    assert str(caught.value).startswith(f"environment {spec}: {line} (env.on_error=stop;"), caught.value
    assert "\n" not in str(caught.value)


def test_env_on_error_stop_ends_the_run_in_one_line_and_skip_scores_0_said_once_per_step(chat_model_dir, tmp_path,
                                                                                         capsys):
    base = ["train", "--set", f"model.name={chat_model_dir}", *RUN, "--set", f"train.runs_dir={tmp_path}",
            "--set", "env.name=tests.env_fixtures:FailsOnOdd", "--set", "train.steps=2", "--set", "task.train_size=2",
            "--set", "task.test_size=4"]
    assert main([*base, "--set", "train.name=stop"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (
        "rl-lora: error: environment tests.env_fixtures:FailsOnOdd: step() on sample 'arith-test-1' raised "
        "RuntimeError: an odd sample (env.on_error=stop; env.on_error=skip scores such episodes 0 and goes on)"), err
    assert "Traceback" not in err and not (tmp_path / "stop").exists()

    assert main([*base, "--set", "train.name=skip", "--set", "env.on_error=skip"]) == 0
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if line.startswith("env.on_error=skip")]
    # Once per step (arith-train-1's 2 episodes of 4), and once for each evaluation (2 of its 4 samples are odd).
    line = ("env.on_error=skip: 2 of 4 episodes scored 0, their environment failed (first: environment "
            "tests.env_fixtures:FailsOnOdd: step() on sample 'arith-{}-1' raised RuntimeError: an odd sample)")
    assert said == [line.format("test")] + [line.format("train")] * 2 + [line.format("test")], err
    assert "Traceback" not in err
    logged = [json.loads(line) for line in (tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()]
    assert [m["stop/env_error"] for m in logged] == [2, 2]
    evaluated = [json.loads(line) for line in (tmp_path / "skip" / "evals" / "step_0.jsonl").read_text().splitlines()]
    assert [(r["sample_id"][-1], r["stop_reason"]) for r in evaluated if r["stop_reason"] == "env_error"] == \
        [("1", "env_error"), ("3", "env_error")]
    assert all(r["reward"] == 0.0 for r in evaluated if r["stop_reason"] == "env_error")
