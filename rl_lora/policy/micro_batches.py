"""Micro-batches sized by memory: as many tokens per forward/backward pass as the activation budget holds.

A pass's memory beyond the resident weights, gradients and optimizer state is its activations: the tensors
autograd saves for the backward pass, which grow with the tokens in the pass. Their cost per token is measured on
each step's first pass (the saved tensors are counted as autograd saves them, so it is the same on a CPU and a GPU;
the count costs a detach per saved tensor, ~2,200 ops a pass on SmolLM2, so not every pass), and the next step's
micro-batches are cut from the largest cost seen so far. Before the first measurement an estimate from
the model's shape stands in; it is set above what SmolLM2 and the fixture Llama measure (see ESTIMATE_*).

The budget: on CUDA, 80 % of what the device has free once this step's gradients and optimizer state (allocated
lazily, on the first step) are counted; launches, not FLOPs, bound small passes on a GPU, so the fewer the better.
On a CPU a pass is compute-bound already at a few hundred tokens: a bigger pass buys no speed and costs RSS (the
default step as one 64-completion pass: learner peak 6.4 GB against 1.1 GB in 8-completion passes, and not faster;
benchmarks/README.md, "On a GPU: fewer launches"), so the budget there is the weights' own size (at least 256 MB), at
most a quarter of the RAM available, and groups share a pass only up to CPU_PASS_TOKENS: the default step keeps its
eight passes of one group each. (The weights' size alone, ~370 tokens, can let two groups share a pass once a step's
answers are at most 17 tokens wide: a pass 1.5x one group's 238. Issue 39; its effect on the default run's peak was
not isolated.)
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from rl_lora.errors import UserError

# Saved bytes per token per decoder layer, in units of (hidden_size, intermediate_size) elements of the activation
# dtype: an upper bound for the first step, before a pass has been measured. Measured (count_saved below) on
# SmolLM2-135M fp32 LoRA at the default step: 12.7 x hidden + 3.9 x intermediate (RMSNorm's fp32 temporaries, q/k/v
# and rotary, attention, the MLP's gate, up, activation and product).
ESTIMATE_HIDDEN, ESTIMATE_INTERMEDIATE = 16, 5
CUDA_FREE_SHARE = 0.8  # the allocator's fragmentation and the backward pass's transient gradients take the rest
CPU_AVAILABLE_SHARE = 0.25
# The vocabulary-wide fp32 logits of one chunk (with their softmax and its gradient, ~4 such tensors): 1/64 of the
# budget. On a CPU that is the ~8 MB chunk it always was (at 4x that, 171-token chunks, the default step's peak RSS
# rose by ~230 MB); on a GPU's budget of tens of GB, one chunk for a small pass.
LOGITS_SHARE = 1 / 64
CPU_MIN_BUDGET = 256 << 20  # a small model's weights (the 260K fixture's 1 MB) would hold almost nothing
# On a CPU (the automatic budget), a group joins another's pass only while the two stay within this many tokens: one
# default group (46 prompt + 8 x 24 completion tokens) is 238. A group alone is bounded by the memory budget only.
CPU_PASS_TOKENS = 256
LOGITS_MIN_ELEMENTS = 1 << 21  # 8 MB: what a chunk always had (42 tokens of SmolLM2's 49,152-word vocabulary)


@dataclass(frozen=True)
class MemoryBudget:
    bytes: int
    source: str  # where it came from, for the one line a too-small budget gets


def _available_ram_bytes() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def memory_budget(configured_mb: float | None, device: torch.device, weight_bytes: int,
                  pending_bytes: int) -> MemoryBudget:
    """The activation budget of one pass. `pending_bytes`: what this step will still allocate besides activations
    (gradients; AdamW's two moments before its first step)."""
    if configured_mb is not None:
        return MemoryBudget(int(configured_mb * 2**20), f"algo.learner_memory_mb={configured_mb:g}")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        usable = int(CUDA_FREE_SHARE * (free + cached)) - pending_bytes
        return MemoryBudget(max(usable, 0), f"{max(usable, 0) / 2**20:,.0f} MB: 80 % of {device}'s free "
                                            f"{(free + cached) / 2**20:,.0f} MB less {pending_bytes / 2**20:,.0f} "
                                            "MB of gradients and optimizer state to come")
    quarter = int(CPU_AVAILABLE_SHARE * _available_ram_bytes())
    budget = min(max(weight_bytes, CPU_MIN_BUDGET), quarter)
    return MemoryBudget(budget, f"{budget / 2**20:,.0f} MB: on a CPU the weights' size (at least 256 MB), at most "
                                "a quarter of the RAM available")


@contextmanager
def count_saved(model, counter: list[int]):
    """Add to counter[0] the bytes of the tensors autograd saves for backward while inside, each storage once and
    the model's parameters not at all (what the pass adds to memory, not what it reads)."""
    parameters = {_pointer(p) for p in model.parameters()}
    seen: set[int | None] = {None}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        # A trainable leaf is a weight (FSDP's gathered ones are not among model.parameters()); a storage FSDP has
        # freed has no pointer.
        pointer = _pointer(tensor)
        if pointer not in parameters and pointer not in seen and not (tensor.is_leaf and tensor.requires_grad):
            seen.add(pointer)
            counter[0] += tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield


def _pointer(tensor: torch.Tensor) -> int | None:
    try:
        return tensor.untyped_storage().data_ptr()
    except RuntimeError:  # FSDP2 frees a gathered weight's storage after use
        return None


class MicroBatchSizer:
    """Tokens per pass from a memory budget and the activation cost per token (estimated, then measured)."""

    def __init__(self, model, configured_mb: float | None):
        config = model.config
        self.configured_mb = configured_mb
        activation_bytes = torch.finfo(next(model.parameters()).dtype).bits // 8
        layers = config.num_hidden_layers
        self.estimated_per_token = activation_bytes * layers * (
            ESTIMATE_HIDDEN * config.hidden_size + ESTIMATE_INTERMEDIATE * getattr(config, "intermediate_size",
                                                                                   4 * config.hidden_size))
        # Gradient checkpointing keeps each layer's input only, which the saved-tensor count does not see.
        self.floor_per_token = activation_bytes * layers * config.hidden_size
        self.measured_per_token: float | None = None
        self.weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        self.budget: MemoryBudget | None = None

    @property
    def per_token(self) -> float:
        measured = self.measured_per_token
        return max(measured, self.floor_per_token) if measured is not None else self.estimated_per_token

    def token_budget(self, device: torch.device, pending_bytes: int, smallest_tokens: int) -> int:
        """Tokens one pass may hold. `smallest_tokens`: one prompt and its longest completion, which must fit."""
        self.budget = memory_budget(self.configured_mb, device, self.weight_bytes, pending_bytes)
        tokens = int(self.budget.bytes // self.per_token)
        if tokens < smallest_tokens:
            raise UserError(f"the learner's memory budget ({self.budget.source}) "
                            f"holds {tokens} tokens at {self.per_token / 2**20:.3g} MB of activations per token, less "
                            f"than one completion with its prompt ({smallest_tokens} tokens): raise "
                            "algo.learner_memory_mb, lower rollout.max_new_tokens, or set "
                            "algo.gradient_checkpointing=true")
        return tokens

    def pack_tokens(self, device: torch.device) -> int | None:
        """How many tokens groups may fill together in one pass (None: as many as the budget holds). A configured
        budget is filled as configured."""
        return CPU_PASS_TOKENS if device.type == "cpu" and self.configured_mb is None else None

    def observe(self, saved_bytes: int, tokens: int) -> None:
        """One pass's measured activations: later passes are cut from the largest cost per token seen."""
        if tokens > 0 and saved_bytes > 0:
            self.measured_per_token = max(self.measured_per_token or 0.0, saved_bytes / tokens)

    def logits_chunk_tokens(self, vocabulary: int) -> int:
        """Positions per output-head chunk: a share of the budget (one chunk for a small pass)."""
        budget = self.budget.bytes if self.budget else 0
        elements = max(LOGITS_MIN_ELEMENTS, int(budget * LOGITS_SHARE) // 4)
        return max(8, elements // vocabulary)
