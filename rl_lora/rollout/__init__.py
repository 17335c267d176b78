"""Rollout backends: `hf` (transformers + PEFT, any device, the reference) and `vllm` (the production engine)."""
from __future__ import annotations


def make_backend(model, rollout, tokenizer, device: str, seed: int = 0):
    """The backend `rollout.backend` names, serving `model` (a ModelConfig) on `device`."""
    from rl_lora.models import load_causal_lm, resolve_model

    if rollout.backend == "vllm":
        from rl_lora.rollout.vllm import VLLMBackend

        return VLLMBackend(str(resolve_model(model.name)), tokenizer, dtype=model.dtype, device=device,
                           serve=rollout.vllm_serve, max_model_len=rollout.vllm_max_model_len, seed=seed)
    from rl_lora.rollout.hf import HFBackend

    return HFBackend(load_causal_lm(model.name, model.dtype, device), tokenizer, batch_size=rollout.batch_size)
