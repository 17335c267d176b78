"""Proof that a sampler serves the learner's weights: log-probs of one fixed probe (rl_lora.types.Probe),
compared after every sync.

A stale adapter (an engine that silently keeps the old weights) is the classic silent failure of RL with
separate samplers; comparing one short sequence's log-probs costs a single small forward pass.
"""
from __future__ import annotations

PROBE_TOLERANCE = 1e-3


class StaleWeightsError(RuntimeError):
    pass


def check_probe(expected: list[float], served: list[float], who: str, version: int) -> float:
    """The largest log-prob gap; raises StaleWeightsError past PROBE_TOLERANCE."""
    gap = max(abs(a - b) for a, b in zip(expected, served))
    if gap > PROBE_TOLERANCE:
        raise StaleWeightsError(f"{who} does not serve version {version}: probe log-probs differ from the "
                                f"learner's by {gap:.2e} (> {PROBE_TOLERANCE:g})")
    return gap
