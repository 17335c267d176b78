"""The records passed between the parts of a run, and the protocols each part is used through.

The step (rl_lora.step) knows a `Sampler` and a `Learner`, never a concrete class: in process they are a
LocalSampler and a LocalLearner, on Ray a WorkerPool of actors and a RemoteLearner. A sampler serves a
`SamplingBackend` (hf, vllm, a shared engine's slot).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from envs.sample import Sample
from rewards.protocol import ScoredBatch
from rl_lora.config import TrainMode
from rl_lora.tokens import left_pad

# -- sampling -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0  # 0 means greedy; log-probs are then those of the untempered policy
    max_new_tokens: int = 256
    seed: int | None = None


@dataclass(frozen=True)
class Completion:
    prompt_index: int
    prompt_ids: tuple[int, ...]  # the prompt exactly as the sampler tokenized it (the learner scores the same ids)
    token_ids: tuple[int, ...]  # up to and including the first end-of-sequence token, if one was sampled
    logprobs: tuple[float, ...]  # the sampler's log-prob of each token, from the distribution it sampled
    text: str
    finished: bool  # ended with an end-of-sequence token rather than the length limit
    version: int  # the policy version (learner step) that sampled it
    # Multi-turn episodes (envs.environment): token_ids hold every turn after the prompt, the policy's sampled
    # tokens (loss_mask 1, with their log-probs) and the environment's answers between them (loss_mask 0, log-prob
    # 0); text is the last assistant turn's. None / the defaults: one turn, every token the policy's.
    loss_mask: tuple[int, ...] | None = None
    stop_reason: str | None = None  # why the episode ended (envs.environment.STOP_REASONS)
    turns: int = 1
    tool_calls: int = 0
    tool_errors: int = 0
    env_reward: float | None = None  # the sum of the environment's per-turn rewards, when it gives any
    render_gap: int | None = None  # where re-rendering the episode's messages differs from its ids (None: nowhere)


@dataclass(frozen=True)
class AdapterUpdate:
    """What the learner hands the samplers after a step: a LoRA adapter's tensors, or (FullFT) every weight."""
    version: int
    kind: TrainMode
    tensors: dict[str, torch.Tensor] = field(repr=False)  # PEFT key names for LoRA; the state dict for full
    lora_config: dict | None = None  # peft.LoraConfig fields, so a sampler can build the same adapter

    @property
    def num_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    # Pickled (Ray's object store, a file) as ONE byte buffer plus a layout, not a pickle per tensor: a rank-1
    # adapter is ~200 tiny tensors, and pickle protocol 5 hands a numpy buffer to Ray out of band (zero-copy
    # reads from shared memory on the same node).
    def __getstate__(self) -> dict:
        layout, chunks, offset = [], [], 0
        for key, tensor in self.tensors.items():
            raw = tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8)
            padding = -offset % _ALIGN
            if padding:
                chunks.append(torch.zeros(padding, dtype=torch.uint8))
                offset += padding
            layout.append((key, tuple(tensor.shape), str(tensor.dtype).removeprefix("torch."), offset))
            chunks.append(raw)
            offset += raw.numel()
        flat = torch.cat(chunks) if chunks else torch.zeros(0, dtype=torch.uint8)
        return {"version": self.version, "kind": self.kind, "lora_config": self.lora_config, "layout": layout,
                "buffer": flat.numpy()}

    def __setstate__(self, state: dict) -> None:
        import warnings

        with warnings.catch_warnings():  # a zero-copy read-only buffer: receivers only copy out of it
            warnings.simplefilter("ignore", UserWarning)
            flat = torch.from_numpy(state["buffer"])
        tensors = {}
        for key, shape, dtype, offset in state["layout"]:
            dtype = getattr(torch, dtype)
            size = torch.Size(shape).numel() * torch.empty(0, dtype=dtype).element_size()
            tensors[key] = flat[offset:offset + size].view(dtype).reshape(shape)
        object.__setattr__(self, "tensors", tensors)
        for name in ("version", "kind", "lora_config"):
            object.__setattr__(self, name, state[name])
        object.__setattr__(self, "kind", TrainMode(state["kind"]))


_ALIGN = 16


@dataclass(frozen=True)
class Probe:
    """A fixed prompt and completion whose log-probs every sampler must reproduce after a sync
    (rl_lora.sampling.probe)."""
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]

    @classmethod
    def for_tokenizer(cls, tokenizer, prompt: str = "What is 12 + 30?", completion: str = " The answer is 42.") \
            -> "Probe":
        return cls(tuple(tokenizer(prompt)["input_ids"]),
                   tuple(tokenizer(completion, add_special_tokens=False)["input_ids"]))


@dataclass(frozen=True)
class SampledStep:
    """One step's completions, grouped by prompt, and their rewards (flat, group after group)."""
    groups: list[list[Completion]]
    scored: ScoredBatch
    generate_s: float  # the slowest worker's generation time
    score_s: float
    restarts: int = 0  # rollout workers that died during this step and were restarted (their prompts re-sampled)


@dataclass(frozen=True)
class SyncResult:
    version: int
    seconds: float  # from the learner's export to every sampler serving the new version
    probe_seconds: float
    probe_gap: float | None  # largest probe log-prob gap over samplers (None: probe off)


# -- learning -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rollout:
    """One scored completion, ready for the learner."""
    sample_id: str
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    sampler_logprobs: tuple[float, ...]
    reward: float
    advantage: float
    version: int  # the policy version that sampled it
    loss_mask: tuple[int, ...] | None = None  # per completion token: 1 sampled by the policy, 0 an environment's


@dataclass(frozen=True)
class Batch:
    """Rollouts as tensors, grouped by prompt: each distinct prompt once (left-padded), then the completions
    sampled from it (right-padded), `repeats[i]` rows for prompt i. The learner runs each prompt through the
    model once per group, not once per completion."""
    prompt_ids: torch.Tensor  # [prompts, prompt_width]
    prompt_mask: torch.Tensor  # [prompts, prompt_width]
    repeats: torch.Tensor  # [prompts], rows per prompt, summing to rows
    completion_ids: torch.Tensor  # [rows, completion_width]
    completion_mask: torch.Tensor  # [rows, completion_width], 1 on completion tokens (EOS included)
    sampler_logprobs: torch.Tensor  # [rows, completion_width]
    advantages: torch.Tensor  # [rows]
    # [rows, completion_width], 1 on the tokens the policy sampled, 0 on an environment's tokens between turns
    # (tool output: attended to, never trained on). None: every completion token is the policy's (one turn).
    loss_mask: torch.Tensor | None = None

    @property
    def rows(self) -> int:
        return self.completion_ids.shape[0]

    @property
    def trained_mask(self) -> torch.Tensor:
        """1 on the tokens the loss counts: the policy's own (loss_mask), within the completion."""
        return self.completion_mask if self.loss_mask is None else self.completion_mask * self.loss_mask

    def to(self, device) -> "Batch":
        """This batch on `device`: batches are collated on the CPU, and the learner's model may sit on a GPU."""
        return Batch(*(None if (value := getattr(self, f.name)) is None else value.to(device)
                       for f in dataclasses.fields(self)))

    def split(self, max_rows: int | None = None, max_tokens: int | None = None,
              whole_groups: bool | None = None, pack_tokens: int | None = None) -> list[tuple[slice, "Batch"]]:
        """Micro-batches, as (row slice into this batch, micro-batch) pairs, each trimmed to the columns it uses.
        A micro-batch holds up to `max_rows` rows and `max_tokens` padded tokens (each prompt once, plus every
        completion at the widest completion's width). `whole_groups` (the default without `max_tokens`): it takes
        whole groups, and a group alone larger than the limits goes alone, or, over `max_tokens`, is cut by rows.
        Otherwise it takes consecutive rows, splitting a group where it must (its advantages are already taken; the
        split group's prompt runs once in each part). A row larger than the budget goes alone. `pack_tokens` (with
        whole groups): a group joins the pass before it only while the two stay within that many tokens; a group
        alone is bounded by `max_tokens` only."""
        if whole_groups is None:
            whole_groups = max_tokens is None
        prompt_of = torch.repeat_interleave(torch.arange(len(self.repeats)), self.repeats).tolist()
        group_end = torch.repeat_interleave(self.repeats.cumsum(0), self.repeats).tolist()
        prompt_lengths = self.prompt_mask.sum(1).tolist()
        completion_lengths = self.completion_mask.sum(1).tolist()

        def fits(first: int, last: int, limit: int | None = max_tokens) -> bool:
            if max_rows is not None and last - first > max_rows:
                return False
            if limit is None:
                return True
            prompts = range(prompt_of[first], prompt_of[last - 1] + 1)
            tokens = len(prompts) * max(prompt_lengths[p] for p in prompts) + \
                (last - first) * max(completion_lengths[first:last])
            return tokens <= limit

        # What a pass may grow to by taking one more group (or row): the tighter of the two limits.
        join_limit = min((t for t in (max_tokens, pack_tokens) if t is not None), default=None)
        cuts, first = [], 0
        while first < self.rows:
            last = first
            while last < self.rows:
                end = group_end[last] if whole_groups else last + 1
                if last > first and not fits(first, end, join_limit):
                    break
                last = end
            if whole_groups and max_tokens is not None and not fits(first, last):  # one group, over the budget
                last = first + 1
                while last < group_end[first] and fits(first, last + 1):
                    last += 1
            cuts.append((first, last))
            first = last
        return [(slice(a, b), self._rows(a, b, prompt_of)) for a, b in cuts]

    def tokens(self) -> int:
        """Padded tokens one pass over this batch computes: each prompt once, plus every completion."""
        return self.prompt_ids.numel() + self.completion_ids.numel()

    def select(self, first: int, last: int) -> "Batch":
        """Rows first..last-1 with their prompts (a data-parallel rank's share of the groups)."""
        return self._rows(first, last, torch.repeat_interleave(torch.arange(len(self.repeats)), self.repeats).tolist())

    def _rows(self, first: int, last: int, prompt_of: list[int]) -> "Batch":
        r = slice(first, last)
        p = slice(prompt_of[first], prompt_of[last - 1] + 1)
        repeats = torch.bincount(torch.tensor(prompt_of[first:last]) - prompt_of[first], minlength=p.stop - p.start)
        # Padding columns this micro-batch does not use would only cost compute.
        width = max(int(self.completion_mask[r].sum(1).max()), 1)
        prompt_start = int((self.prompt_mask[p].sum(0) == 0).sum())  # left-padding columns no prompt uses
        return Batch(self.prompt_ids[p, prompt_start:], self.prompt_mask[p, prompt_start:], repeats,
                     self.completion_ids[r, :width], self.completion_mask[r, :width],
                     self.sampler_logprobs[r, :width], self.advantages[r],
                     None if self.loss_mask is None else self.loss_mask[r, :width])


def collate(rollouts: list[Rollout], pad_id: int) -> Batch:
    """Consecutive rollouts with the same sample and prompt form one group."""
    prompts: list[tuple[int, ...]] = []
    repeats: list[int] = []
    previous = None
    for r in rollouts:
        key = (r.sample_id, r.prompt_ids)
        if key != previous:
            prompts.append(r.prompt_ids)
            repeats.append(0)
            previous = key
        repeats[-1] += 1
    prompt_ids, prompt_mask = left_pad(prompts, pad_id)
    rows, completion_width = len(rollouts), max(len(r.completion_ids) for r in rollouts)
    completion_ids = torch.full((rows, completion_width), pad_id, dtype=torch.long)
    completion_mask = torch.zeros((rows, completion_width), dtype=torch.float32)
    sampler_logprobs = torch.zeros((rows, completion_width), dtype=torch.float32)
    multi_turn = any(r.loss_mask is not None for r in rollouts)
    loss_mask = torch.zeros((rows, completion_width), dtype=torch.float32) if multi_turn else None
    for i, r in enumerate(rollouts):
        length = len(r.completion_ids)
        completion_ids[i, :length] = torch.tensor(r.completion_ids, dtype=torch.long)
        completion_mask[i, :length] = 1
        sampler_logprobs[i, :length] = torch.tensor(r.sampler_logprobs)
        if loss_mask is not None:
            loss_mask[i, :length] = torch.tensor(r.loss_mask) if r.loss_mask is not None else 1
    advantages = torch.tensor([r.advantage for r in rollouts], dtype=torch.float32)
    return Batch(prompt_ids, prompt_mask, torch.tensor(repeats), completion_ids, completion_mask, sampler_logprobs,
                 advantages, loss_mask)


@dataclass(frozen=True)
class LearnMetrics:
    loss: float
    grad_norm: float
    sampler_kl: float  # mean over tokens of KL(sampler || learner): 0 when the sampler serves the learner's weights
    base_kl: float
    clip_fraction: float
    entropy: float
    tokens: int
    seconds: float
    learning_rate: float
    micro_batches: int = 1  # forward/backward passes the step took (this learner's, with N learners)
    is_corrected_fraction: float = 0.0  # tokens whose weight algo.is_correction truncated or masked


@dataclass(frozen=True)
class StepMetrics:
    """One RL step, as metrics.jsonl records it (one JSON line per step) and TensorBoard plots it."""
    step: int
    reward_mean: float
    reward_std: float
    zero_variance_groups: float  # fraction of groups whose rewards are all equal: no learning signal there
    reward_failures: int
    loss: float
    grad_norm: float
    sampler_kl: float
    base_kl: float
    clip_fraction: float
    entropy: float
    completion_tokens_mean: float
    truncated_fraction: float
    tokens_per_s: float  # sampled tokens per second of generation
    lag: int  # learner version minus the version that sampled the batch
    time_generate: float  # the slowest sampler's generation time
    time_score: float
    time_wait: float  # the driver waiting for this step's rollouts (less than generate+score when sampled ahead)
    time_learn: float
    time_sync: float  # learner export -> every sampler serves the new version
    time_probe: float  # the post-sync check
    time_step: float
    learning_rate: float
    sampler_version: int = 0  # the oldest policy version among this step's completions
    probe_gap: float | None = None  # largest |sampler - learner| probe log-prob after the sync (None: probe off)
    worker_restarts: int = 0  # rollout workers restarted during the step (their prompts re-sampled)
    is_corrected_fraction: float = 0.0  # completion tokens algo.is_correction truncated or masked
    learner_passes: int = 1  # forward/backward passes the learner took (rl_lora.policy.micro_batches)
    sample_batches: int = 1  # sampling rounds of the step (rollout.dynamic_sampling draws more while groups are constant)
    groups_drawn: int = 0  # groups sampled in all those rounds
    groups_dropped: int = 0  # constant groups rollout.dynamic_sampling left out
    episode_turns: float = 1.0  # assistant turns per episode, mean (env.name=tools or a user environment)
    tool_call_fraction: float = 0.0  # episodes that called a tool
    tool_ok_fraction: float = 0.0  # episodes that called a tool, every call answered without an error
    stop_reasons: dict[str, int] | None = None  # episodes per stop reason (envs.environment.STOP_REASONS)
    render_mismatch_fraction: float = 0.0  # multi-turn episodes whose re-rendered text tokenizes otherwise
    test_accuracy: float | None = None  # greedy, or with eval.samples > 1 (and no eval.greedy) mean@N
    # A sampled evaluation's mean@N, pass@k, maj@N (and greedy) by name (metrics.jsonl: test/pass@8, ...).
    test_sampled: dict[str, float] | None = None
    # With several weighted rewards: each one's mean over the completions it scored (metrics.jsonl: reward/<name>).
    reward_parts: dict[str, float] | None = None


# -- protocols ------------------------------------------------------------------------------------------------

@runtime_checkable
class SamplingBackend(Protocol):
    """One inference engine serving one policy: hf, vllm, or a slot of a shared vllm engine."""
    version: int
    pad_id: int

    def generate(self, prompts: list[str | tuple[int, ...]], n: int, sampling: SamplingParams) \
            -> list[list[Completion]]:
        """n completions for each prompt (text, or token ids taken as they are), grouped by prompt."""

    def load_update(self, update: AdapterUpdate) -> None:
        """Serve the weights of `update` from now on."""

    def probe_logprobs(self, probe: Probe) -> list[float]:
        """Log-probs of the probe completion under the weights served now."""

    def sleep(self) -> None:
        """Sampling is done until the next sync: give back the device memory the learner needs (vLLM sleep mode,
        where configured); the next call wakes the engine. A no-op for backends that hold nothing between steps."""


@runtime_checkable
class Learner(Protocol):
    """The trainable policy, in this process (LocalLearner) or in an actor (RemoteLearner)."""
    version: int  # optimizer steps taken
    trainable_parameters: int
    update_bytes: int  # what one sync sends (a tiny adapter: its rank-r LoRA, not its U numbers)
    lora_config: dict | None  # peft.LoraConfig fields; None for FullFT

    def step(self, batch: Batch) -> LearnMetrics: ...

    def export_update(self) -> Any:
        """The update for the samplers: an AdapterUpdate, or a Ray ObjectRef to one (it then never passes
        through the driver)."""

    def probe_logprobs(self, probe: Probe) -> list[float]: ...

    def save_weights(self, folder) -> None: ...

    def optimizer_state(self) -> dict: ...

    def load_state(self, update: AdapterUpdate, optimizer_state: dict) -> None: ...


@runtime_checkable
class Sampler(Protocol):
    """Where a step's completions come from, scored: one backend in process, or N Ray workers."""
    pad_id: int

    def submit(self, prompts: list[str], samples: list[Sample], n: int, sampling: SamplingParams) -> Any:
        """Start sampling a step; returns a handle for collect (Ray: at once, while the learner trains)."""

    def collect(self, handle: Any) -> SampledStep: ...

    def sync(self, learner: Learner) -> SyncResult:
        """Serve the learner's current weights, checked by the probe."""

    def generate(self, prompts: list[str], n: int, sampling: SamplingParams,
                 samples: list[Sample] | None = None) -> list[list[Completion]]:
        """For evaluation, no rewards: with `samples`, whole episodes of the run's environment; else completions."""

    def close(self) -> None: ...
