"""Log-probs of given tokens under a causal LM, without a [batch, time, vocab] fp32 tensor.

The backbone runs once; the output head runs over chunks of positions, each chunk checkpointed so its
vocabulary-wide logits exist only while that chunk is computed (again in backward). With a 49k vocabulary
this is the difference between ~1 GB and a few MB per batch of 64 × 24 tokens.
"""
from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


def _unwrap(model):
    """(backbone, output head) of a causal LM, through a PEFT wrapper; LoRA layers stay in place."""
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    return causal_lm.base_model, causal_lm.get_output_embeddings()


def _chunk(head, hidden: torch.Tensor, targets: torch.Tensor, temperature: float):
    logits = head(hidden).float()
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    normaliser = torch.logsumexp(logits, dim=-1)
    logprobs = logits.gather(-1, targets[:, None]).squeeze(-1) - normaliser
    with torch.no_grad():
        probs = torch.softmax(logits, dim=-1)
        entropy = normaliser - (probs * logits).sum(-1)
    return logprobs, entropy


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, first_target: int,
                   temperature: float = 1.0, chunk_tokens: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(input_ids[:, t] | input_ids[:, :t]) and the entropy at t, for t >= first_target.

    Rows are left-padded (positions come from the attention mask). Returns two [rows, T - first_target] tensors;
    the entropy carries no gradient.
    """
    backbone, head = _unwrap(model)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      use_cache=False).last_hidden_state
    hidden = hidden[:, first_target - 1:-1]
    targets = input_ids[:, first_target:]
    rows, steps = targets.shape
    flat_hidden, flat_targets = hidden.reshape(rows * steps, -1), targets.reshape(-1)
    logprobs, entropies = [], []
    for start in range(0, rows * steps, chunk_tokens):
        h, t = flat_hidden[start:start + chunk_tokens], flat_targets[start:start + chunk_tokens]
        if torch.is_grad_enabled():
            lp, ent = checkpoint(_chunk, head, h, t, temperature, use_reentrant=False)
        else:
            lp, ent = _chunk(head, h, t, temperature)
        logprobs.append(lp)
        entropies.append(ent)
    return torch.cat(logprobs).view(rows, steps), torch.cat(entropies).view(rows, steps)
