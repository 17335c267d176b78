"""Proof that a sampler serves the learner's weights: log-probs of one fixed probe, compared after every sync.

A stale adapter (an engine that silently keeps the old weights) is the classic silent failure of RL with
separate samplers; comparing one short sequence's log-probs costs a single small forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


PROBE_PROMPT = "What is 12 + 30?"
PROBE_COMPLETION = " The answer is 42."
PROBE_TOLERANCE = 1e-3


class StaleWeightsError(RuntimeError):
    pass


@dataclass(frozen=True)
class Probe:
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]

    @classmethod
    def for_tokenizer(cls, tokenizer) -> "Probe":
        return cls(tuple(tokenizer(PROBE_PROMPT)["input_ids"]),
                   tuple(tokenizer(PROBE_COMPLETION, add_special_tokens=False)["input_ids"]))


@torch.no_grad()
def probe_logprobs(model, probe: Probe) -> list[float]:
    """One plain forward pass (at batch 1 its cost is reading the weights once: ~0.1 s for 135M fp32 on CPU)."""
    device = next(model.parameters()).device
    ids = torch.tensor([probe.prompt_ids + probe.completion_ids], device=device)
    logits = model(input_ids=ids, logits_to_keep=len(probe.completion_ids) + 1).logits[0, :-1].float()
    targets = torch.tensor(probe.completion_ids, device=device)
    return torch.log_softmax(logits, -1).gather(1, targets[:, None]).squeeze(1).tolist()


def check_probe(expected: list[float], served: list[float], who: str, version: int) -> float:
    """The largest log-prob gap; raises StaleWeightsError past PROBE_TOLERANCE."""
    gap = max(abs(a - b) for a, b in zip(expected, served))
    if gap > PROBE_TOLERANCE:
        raise StaleWeightsError(f"{who} does not serve version {version}: probe log-probs differ from the "
                                f"learner's by {gap:.2e} (> {PROBE_TOLERANCE:g})")
    return gap
