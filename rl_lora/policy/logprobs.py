"""Log-probs of completion tokens under a causal LM: each prompt once per group, no [rows, time, vocab] tensor.

The prompt runs through the backbone once per group and its key/value cache is repeated for the group's
completions (differentiably: LoRA gradients flow through the shared prompt). The output head runs over chunks
of completion positions, each chunk checkpointed so its vocabulary-wide logits exist only while it is computed.

Gradient checkpointing (`enable_layer_checkpointing`): the completion pass keeps only each decoder layer's input
and recomputes the layer in the backward pass. Its cache is a `PromptCache`, read and never extended, so a replayed
layer sees what the first pass saw (transformers otherwise drops the cache under checkpointing). The prompt pass,
which writes the cache, is not checkpointed: it is one row per group, a small share of the activations.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch.utils.checkpoint import checkpoint
from transformers import DynamicCache

from rl_lora.errors import UserError


def _unwrap(model):
    """(backbone, output head) of a causal LM, through a PEFT wrapper; LoRA layers stay in place."""
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    return causal_lm.base_model, causal_lm.get_output_embeddings()


def _chunk(head, hidden: torch.Tensor, targets: torch.Tensor, temperature: float, entropy_grad: bool = False):
    logits = head(hidden).float()
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    normaliser = torch.logsumexp(logits, dim=-1)
    logprobs = logits.gather(-1, targets[:, None]).squeeze(-1) - normaliser
    # The entropy is a metric unless algo.entropy_coef puts it in the loss; the chunk is checkpointed either way,
    # so its gradient costs a recomputation, not memory.
    with torch.enable_grad() if entropy_grad else torch.no_grad():
        entropy = normaliser - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    return logprobs, entropy


# Elements of one logits chunk: the head's output, its softmax and their gradients live a chunk at a time. At 2M
# (8 MB in fp32) SmolLM2's 49,152-token vocabulary gives 42-token chunks; 128-token chunks (25 MB each) left the
# checkpointed LoRA step's peak 140 MB higher.
LOGITS_CHUNK_ELEMENTS = 1 << 21


class PromptCache(DynamicCache):
    """The prompts' keys and values as the completion pass reads them: a layer's update returns prompt + new keys
    and values and stores nothing (nothing after the completion pass reads them), so a layer can be replayed."""

    @classmethod
    def of(cls, cache: DynamicCache) -> "PromptCache":
        prompts = cls()
        prompts.layers = cache.layers
        return prompts

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        layer = self.layers[layer_idx]
        return torch.cat([layer.keys, key_states], dim=-2), torch.cat([layer.values, value_states], dim=-2)


def causal_lm_of(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def enable_layer_checkpointing(model) -> None:
    """Checkpoint every decoder layer of the completion pass (see the module doc)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    causal_lm = causal_lm_of(model)
    layers = [m for m in causal_lm.modules() if isinstance(m, GradientCheckpointingLayer)]
    if not getattr(causal_lm, "supports_gradient_checkpointing", False) or not layers:
        raise UserError(f"algo.gradient_checkpointing=true: {type(causal_lm).__name__} does not support gradient "
                        "checkpointing in transformers; set algo.gradient_checkpointing=false")
    causal_lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for layer in layers:
        layer._can_checkpoint_with_cache = True  # the completion pass's cache is a read-only PromptCache


def compile_layers(model, backend: str) -> int:
    """torch.compile every decoder layer's MLP, LoRA branches included: the three projections, their adapters, the
    activation and the product become a few fused kernels instead of ~20 launches a layer. Dynamic shapes, so a new
    micro-batch size or completion length does not recompile; one graph serves every layer (parameters are inputs).
    The attention stays eager: its cache update is keyed by the layer's index, which would compile once per layer.
    Returns the number of MLPs compiled."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    mlps = [layer.mlp for layer in causal_lm_of(model).modules()
            if isinstance(layer, GradientCheckpointingLayer) and isinstance(getattr(layer, "mlp", None),
                                                                             torch.nn.Module)]
    for mlp in mlps:
        mlp.compile(backend=backend, dynamic=True)
    return len(mlps)


@contextmanager
def _layers_not_checkpointed(model):
    """For the prompt pass, which writes its cache: a replay would write it twice."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in causal_lm_of(model).modules()
              if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing]
    for layer in layers:
        layer.gradient_checkpointing = False
    try:
        yield
    finally:
        for layer in layers:
            layer.gradient_checkpointing = True


def repeat_cache(cache, repeats: torch.Tensor) -> None:
    """Give row i of the cache repeats[i] copies (autograd-friendly, unlike the cache's own in-place helpers)."""
    for layer in cache.layers:
        layer.keys = layer.keys.repeat_interleave(repeats, dim=0)
        layer.values = layer.values.repeat_interleave(repeats, dim=0)


def completion_logprobs(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, repeats: torch.Tensor,
                        completion_ids: torch.Tensor, completion_mask: torch.Tensor, temperature: float = 1.0,
                        chunk_tokens: int | None = None, entropy_grad: bool = False) \
        -> tuple[torch.Tensor, torch.Tensor]:
    """log p(completion token t | prompt, tokens < t) and the entropy at t, both [rows, completion_width].

    Prompts are left-padded; row r's prompt is prompt `repeat_interleave(arange, repeats)[r]`. Positions after
    a completion's end get values too (mask them). The entropy carries a gradient only with entropy_grad (an
    entropy bonus in the loss).
    """
    backbone, head = _unwrap(model)
    prompt_positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    with _layers_not_checkpointed(model):
        prompt_hidden = backbone(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=prompt_positions,
                                 past_key_values=cache, use_cache=True).last_hidden_state[:, -1:]
    repeat_cache(cache, repeats)
    attention_mask = torch.cat([prompt_mask.repeat_interleave(repeats, dim=0), completion_mask.long()], dim=1)
    start = prompt_positions[:, -1:].repeat_interleave(repeats, dim=0) + 1
    completion_positions = start + torch.arange(completion_ids.shape[1], device=start.device)[None, :]
    # The last prompt position predicts the first completion token; completion token t predicts t + 1.
    hidden = prompt_hidden.repeat_interleave(repeats, dim=0)
    if completion_ids.shape[1] > 1:
        completion_hidden = backbone(input_ids=completion_ids[:, :-1], attention_mask=attention_mask[:, :-1],
                                     position_ids=completion_positions[:, :-1], past_key_values=PromptCache.of(cache),
                                     use_cache=True).last_hidden_state
        hidden = torch.cat([hidden, completion_hidden], dim=1)
    rows, steps = completion_ids.shape
    flat_hidden, flat_targets = hidden.reshape(rows * steps, -1), completion_ids.reshape(-1)
    logprobs, entropies = [], []
    if chunk_tokens is None:  # a vocabulary-wide fp32 logits chunk of ~8 MB, whatever the vocabulary
        chunk_tokens = max(8, LOGITS_CHUNK_ELEMENTS // head.weight.shape[0])
    for first in range(0, rows * steps, chunk_tokens):
        h, t = flat_hidden[first:first + chunk_tokens], flat_targets[first:first + chunk_tokens]
        if torch.is_grad_enabled():
            lp, ent = checkpoint(_chunk, head, h, t, temperature, entropy_grad, use_reentrant=False)
        else:
            lp, ent = _chunk(head, h, t, temperature)
        logprobs.append(lp)
        entropies.append(ent)
    return torch.cat(logprobs).view(rows, steps), torch.cat(entropies).view(rows, steps)


def batch_logprobs(model, batch, temperature: float = 1.0, chunk_tokens: int | None = None,
                   entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    return completion_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.repeats, batch.completion_ids,
                               batch.completion_mask, temperature, chunk_tokens, entropy_grad)
