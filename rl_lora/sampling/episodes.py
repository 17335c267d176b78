"""Episodes, token in and token out: every rollout is an episode of an environment (envs.environment), a plain
task being the one-turn case, so there is one rollout path.

A trajectory is kept as token ids and never re-rendered: the opening prompt's ids, then each assistant turn's
sampled ids (loss mask 1, with the sampler's log-probs), then each environment answer's ids (loss mask 0),
rendered on its own with the chat template (ChatDeltas) and appended; the next turn is sampled from the ids as
they are. So the learner scores exactly the tokens that were sampled, whatever a template would make of the
conversation re-rendered (re-tokenization drift, templates that rewrite earlier turns).
"""
from __future__ import annotations

import dataclasses
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from envs.environment import DONE, ENV_ERROR, MAX_TOKENS, MAX_TURNS, CheckedEnvironment, Environment, SingleTurn
from envs.errors import TaskError
from envs.sample import Sample
from rl_lora.tokens import tokenize_prompts
from rl_lora.types import Completion, SamplingBackend, SamplingParams

# Environments answering at once (their tool calls run in worker children; this bounds the threads waiting on them).
ENV_THREADS = 16

# The conversation an environment's answer is rendered after, to find the ids the template gives that answer when
# it follows an assistant turn (its own rendering minus this one's).
_BEFORE = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}]


def _render_ids(tokenizer, messages: list, add_generation_prompt: bool) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def longest_token_chars(tokenizer) -> int:
    """An upper bound on the characters one token decodes to: the longest entry of the vocabulary as written (a
    byte-level BPE entry has a character per byte, a SentencePiece one a character per character, a byte-fallback
    entry like <0x0A> more characters than it decodes to)."""
    return max(len(token) for token in tokenizer.get_vocab())


class ChatDeltas:
    """An environment's messages as the token ids that follow an assistant turn's end-of-turn token: what the chat
    template writes after that token (the separator, e.g. ChatML's newline), then the messages, then the next
    assistant turn's opening. Checked once, at start-up: the template must render a `tool` message and keep
    earlier turns as they are when one is added (prefix-preserving); otherwise a one-line TaskError."""

    def __init__(self, tokenizer, eos_ids: Sequence[int], role: str = "tool"):
        if not getattr(tokenizer, "chat_template", None):
            raise TaskError("multi-turn episodes render the environment's messages with the tokenizer's chat "
                            "template, and this tokenizer has none: use a chat model, or set one")
        self.tokenizer, self.eos_ids = tokenizer, set(eos_ids)
        self.before = _render_ids(tokenizer, _BEFORE, False)
        try:
            after = _render_ids(tokenizer, _BEFORE + [{"role": role, "content": "T"}], True)
        except Exception as error:
            raise TaskError(f"the chat template cannot render a {role!r} message ({type(error).__name__}: "
                            f"{str(error)[:200]}): use a model whose template has a {role} role") from None
        if after[:len(self.before)] != self.before:
            first = next(i for i, (a, b) in enumerate(zip(after, self.before)) if a != b)
            raise TaskError(f"the chat template is not prefix-preserving: adding a {role} message changes the "
                            f"earlier turns' tokens (first at token {first}); rl-lora keeps each trajectory's ids as "
                            "sampled, which such a template would contradict")
        ends = [i for i, token in enumerate(self.before) if token in self.eos_ids]
        if not ends:
            raise TaskError("the chat template ends an assistant turn without the model's end-of-sequence token, so "
                            "a sampled turn's end cannot be matched to it")
        self.separator = self.before[ends[-1] + 1:]
        self.end_of_turn = self.before[ends[-1]]
        self.max_token_chars = longest_token_chars(tokenizer)

    def __call__(self, messages: list) -> list[int]:
        ids = _render_ids(self.tokenizer, _BEFORE + list(messages), True)
        return self.separator + ids[len(self.before):]


def render_gap(tokenizer, messages: list, ids: Sequence[int]) -> int | None:
    """Where the conversation re-rendered as text by the chat template, and tokenized, first differs from the ids
    the episode kept (None: it does not, over the ids' length). A gap is what a trainer that re-renders would
    have trained on instead of what was sampled: a decoded turn that tokenizes differently (the model sampled a
    non-canonical split), or a template that writes a turn otherwise than it was sampled."""
    # Tokenized as a backend tokenizes a text prompt, so the opening compares like for like.
    rendered = tokenize_prompts(tokenizer, [tokenizer.apply_chat_template(list(messages), tokenize=False)])[0]
    for position, (kept, again) in enumerate(zip(ids, rendered)):
        if kept != again:
            return position
    return None if len(rendered) >= len(ids) else len(rendered)


@dataclass(frozen=True)
class EpisodeLimits:
    max_turns: int = 1  # assistant turns per episode
    max_total_tokens: int = 4096  # every token after the prompt: the policy's and the environment's
    max_tool_output: int = 256  # tokens of one environment message (longer ones are cut, and say so)


@dataclass
class Trajectory:
    sample_index: int
    env: Environment
    prompt_ids: tuple[int, ...]
    ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: str = ""  # the last assistant turn
    turns: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    env_reward: float | None = None
    stop_reason: str | None = None
    version: int = 0
    first: Completion | None = None  # the first turn as sampled (a one-turn episode is returned as it is)
    last_turn: slice = field(default_factory=lambda: slice(0, 0))  # where the last assistant turn's tokens sit in ids
    last_finished: bool = False  # it ended with an end-of-sequence token (not at the length limit)
    messages: list = field(default_factory=list)  # the conversation as text, for the re-render check
    render_gap: int | None = None  # where re-rendering the messages first differs from the ids (None: nowhere)

    def take(self, turn: Completion) -> None:
        self.first = self.first or turn
        self.last_turn = slice(len(self.ids), len(self.ids) + len(turn.token_ids))
        self.ids += turn.token_ids
        self.loss_mask += [1] * len(turn.token_ids)
        self.logprobs += turn.logprobs
        self.text, self.turns, self.version, self.last_finished = turn.text, self.turns + 1, turn.version, \
            turn.finished
        self.messages.append({"role": "assistant", "content": turn.text})

    def append_environment(self, ids: list[int]) -> None:
        """Tokens the policy did not sample: attended to by later turns, never trained on."""
        self.ids += ids
        self.loss_mask += [0] * len(ids)
        self.logprobs += [0.0] * len(ids)

    def completion(self) -> Completion:
        if self.turns == 1 and self.stop_reason is not None and all(self.loss_mask):  # the plain one-turn case
            return dataclasses.replace(self.first, stop_reason=self.stop_reason, tool_calls=self.tool_calls,
                                       tool_errors=self.tool_errors, env_reward=self.env_reward)
        return Completion(prompt_index=self.sample_index, prompt_ids=self.prompt_ids, token_ids=tuple(self.ids),
                          logprobs=tuple(self.logprobs), text=self.text, finished=self.stop_reason == DONE,
                          version=self.version, loss_mask=tuple(self.loss_mask), stop_reason=self.stop_reason,
                          turns=self.turns, tool_calls=self.tool_calls, tool_errors=self.tool_errors,
                          env_reward=self.env_reward, render_gap=self.render_gap)


class EpisodeRunner:
    """Runs a batch of episodes on a backend: the first turn of a sample's n episodes shares its prompt (n
    completions of one prompt, as a one-turn step samples them); each later turn is one completion per
    trajectory still going, sampled from its ids."""

    def __init__(self, new_env: Callable[[], Environment] = SingleTurn, deltas: ChatDeltas | None = None,
                 limits: EpisodeLimits = EpisodeLimits(), close: Callable[[], None] = lambda: None,
                 check_render: bool = True):
        """`new_env`: builds one episode's environment. `deltas`: renders environment answers (needed as soon as
        an episode can last more than one turn). A SingleTurn episode's prompt is the one the caller rendered
        (the task's renderer); any other environment's opening messages go through the chat template."""
        if deltas is None and (limits.max_turns > 1 or new_env is not SingleTurn):
            raise ValueError("multi-turn episodes need ChatDeltas to render the environment's answers")
        self.new_env, self.deltas, self.limits, self.close = new_env, deltas, limits, close
        self.check_render = check_render  # after each episode (one tokenization of its text): render_gap

    def run(self, backend: SamplingBackend, prompts: list[Any], samples: list[Sample], n: int,
            sampling: SamplingParams) -> list[list[Completion]]:
        trajectories = [[Trajectory(index, self.new_env(), ()) for _ in range(n)] for index in range(len(samples))]
        openings = []
        for index, (sample, group) in enumerate(zip(samples, trajectories)):
            for trajectory in group:
                trajectory.messages = [dict(m) for m in trajectory.env.reset(sample)]
            messages = group[0].messages
            openings.append(prompts[index] if isinstance(group[0].env, SingleTurn) else
                            self.deltas.tokenizer.apply_chat_template(list(messages), tokenize=False,
                                                                      add_generation_prompt=True))
        for group, sampled in zip(trajectories, backend.generate(openings, n, sampling)):
            for trajectory, turn in zip(group, sampled):
                trajectory.prompt_ids = turn.prompt_ids
                trajectory.take(turn)
        flat = [t for group in trajectories for t in group]
        going = self._answer(flat)
        while going:
            contexts = [t.prompt_ids + tuple(t.ids) for t in going]
            room = [self.limits.max_total_tokens - len(t.ids) for t in going]
            turn_sampling = dataclasses.replace(
                sampling, max_new_tokens=max(1, min(sampling.max_new_tokens, max(room))),
                seed=None if sampling.seed is None else sampling.seed + 7_919 * going[0].turns)
            for trajectory, sampled, left in zip(going, backend.generate(contexts, 1, turn_sampling), room):
                trajectory.take(self._cut_turn(sampled[0], left))
            going = self._answer(going)
        if self.deltas is not None and self.check_render:
            for trajectory in flat:
                trajectory.render_gap = render_gap(self.deltas.tokenizer, trajectory.messages,
                                                   trajectory.prompt_ids + tuple(trajectory.ids))
        _say_skipped(flat)
        return [[t.completion() for t in group] for group in trajectories]

    def _cut_turn(self, turn: Completion, room: int) -> Completion:
        """A turn that ran past the episode's token budget keeps its first `room` tokens (a prefix of a sample is
        a sample of that prefix): it ends there as a turn cut at the length limit."""
        if len(turn.token_ids) <= room:
            return turn
        ids = turn.token_ids[:room]
        return dataclasses.replace(turn, token_ids=ids, logprobs=turn.logprobs[:room], finished=False,
                                   text=self.deltas.tokenizer.decode(ids, skip_special_tokens=True))

    def _answer(self, trajectories: list[Trajectory]) -> list[Trajectory]:
        """Each trajectory's environment answers its last turn (side by side: a tool that hangs costs its own
        time limit, not the batch's sum of them); returns those that go on."""
        if isinstance(trajectories[0].env, SingleTurn):
            results = [t.env.step(t.text) for t in trajectories]
        else:
            with ThreadPoolExecutor(max_workers=min(len(trajectories), ENV_THREADS)) as pool:
                results = list(pool.map(lambda t: t.env.step(t.text), trajectories))
        going = []
        for trajectory, result in zip(trajectories, results):
            trajectory.tool_calls += result.tool_calls
            trajectory.tool_errors += result.tool_errors
            if result.reward is not None:
                trajectory.env_reward = (trajectory.env_reward or 0.0) + result.reward
            if result.stop_reason == ENV_ERROR:  # env.on_error=skip: an episode its environment broke is worth 0
                trajectory.env_reward = 0.0
            if result.mask_turn:  # env.on_parse_error=mask: the malformed turn teaches nothing
                turn = trajectory.last_turn
                trajectory.loss_mask[turn] = [0] * (turn.stop - turn.start)
            if result.done:  # a last turn cut at the length limit ended the episode by the limit, not by choice
                trajectory.stop_reason = MAX_TOKENS if not trajectory.last_finished and \
                    result.stop_reason in (None, DONE) else result.stop_reason or DONE
                continue
            if trajectory.turns >= self.limits.max_turns:
                trajectory.stop_reason = MAX_TURNS
                continue
            # A turn cut at the length limit is closed with the end-of-turn token the template expects (not
            # sampled: loss mask 0), so the environment's answer follows a well-formed turn.
            closing = [] if trajectory.last_finished else [self.deltas.end_of_turn]
            answered = [self._cut(m) for m in result.messages]
            trajectory.messages += answered
            answer = closing + self.deltas(answered)
            if len(trajectory.ids) + len(answer) >= self.limits.max_total_tokens:
                trajectory.stop_reason = MAX_TOKENS
                continue
            trajectory.append_environment(answer)
            going.append(trajectory)
        return going

    def _cut(self, message) -> dict:
        """An environment message cut to env.max_tool_output tokens, saying how much was cut. Characters first:
        no token decodes to more than the vocabulary's longest token, so (limit + 1) x that many characters hold
        more than `limit` tokens, and only they are tokenized (a 10 MB answer tokenized whole cost 219 s a step)."""
        tokenizer, limit, content = self.deltas.tokenizer, self.limits.max_tool_output, message["content"]
        head = content[:(limit + 1) * self.deltas.max_token_chars]
        ids = tokenizer(head, add_special_tokens=False, verbose=False)["input_ids"]
        if len(ids) <= limit and len(head) == len(content):
            return dict(message)
        kept = tokenizer.decode(ids[:limit])
        return {**message, "content": f"{kept}\n... ({max(0, len(content) - len(kept)):,} more characters cut)"}


def _say_skipped(trajectories: list[Trajectory]) -> None:
    """env.on_error=skip: one line per batch of episodes (a step's) for those whose environment failed."""
    skipped = [t for t in trajectories if t.stop_reason == ENV_ERROR]
    if skipped:
        print(f"env.on_error=skip: {len(skipped)} of {len(trajectories)} episodes scored 0, their environment "
              f"failed (first: {skipped[0].env.fault})", file=sys.stderr, flush=True)


ONE_TURN = EpisodeRunner()  # env.name=single: one prompt, one completion (stateless, shared)


def build_episodes(env, tokenizer, eos_ids: Sequence[int], tool_timeout_s: float,
                   system_prompt: str | None = None) -> EpisodeRunner:
    """The EpisodeRunner the env config names (rl_lora.config.EnvConfig): single (the default: today's one-turn
    episodes), tools (a ToolEnv per episode, its calls in worker children with `tool_timeout_s`, model-written code
    in env.sandbox), or a user's module:Class. Template problems are named here, before a model loads."""
    if env.name == "single":
        return ONE_TURN
    deltas = ChatDeltas(tokenizer, eos_ids)
    limits = EpisodeLimits(env.max_turns, env.max_total_tokens, env.max_tool_output)
    if env.name == "tools":
        from envs.sandbox import open_sandbox
        from envs.tool_env import ToolCalls, ToolEnv, read_example
        from envs.tools import resolve_tools

        tools = resolve_tools(env.tools)
        # Model-written code runs in the sandbox, which refuses to open where it cannot isolate (fail closed).
        sandbox = open_sandbox(env.sandbox, env.packages()) if any(t.runs_model_code for t in tools) else None
        calls = ToolCalls(tool_timeout_s, sandbox=sandbox)
        example = read_example(env.example) if env.example else []

        def new_env() -> ToolEnv:
            return ToolEnv(tools, calls, env.max_tool_calls, env.on_parse_error, system_prompt, example=example)

        return EpisodeRunner(new_env, deltas, limits, close=calls.close)
    from envs.environment import resolve_environment

    user_env, skip = resolve_environment(env.name), env.on_error == "skip"
    return EpisodeRunner(lambda: CheckedEnvironment(user_env, env.name, skip), deltas, limits)
