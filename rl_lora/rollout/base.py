"""The seam between the trainer and an inference engine: prompts in, completions with sampler log-probs out."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch


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


@dataclass(frozen=True)
class AdapterUpdate:
    """What the learner hands the samplers after a step."""
    version: int
    kind: Literal["lora", "full"]
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


_ALIGN = 16


def lora_parameters(model) -> dict[str, torch.Tensor]:
    """A PEFT model's LoRA weights under the key names of `get_peft_model_state_dict` (adapter name dropped),
    as the live parameters: copying into them swaps an adapter in place with no PEFT bookkeeping."""
    adapter = f".{getattr(model, 'active_adapter', 'default')}."
    return {name.replace(adapter, "."): parameter for name, parameter in model.named_parameters()
            if ".lora_A." in name or ".lora_B." in name}


class RolloutBackend(Protocol):
    version: int

    def generate(self, prompts: list[str], n: int, sampling: SamplingParams) -> list[list[Completion]]:
        """n completions for each prompt, grouped by prompt."""

    def load_update(self, update: AdapterUpdate) -> None:
        """Serve the weights of `update` from now on."""

    def probe_logprobs(self, probe) -> list[float]:
        """Log-probs of the probe completion under the weights served now (rl_lora.sync)."""
