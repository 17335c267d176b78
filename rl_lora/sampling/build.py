"""The one place a backend is built from the config: training (in process and in Ray workers), evaluation and
the shared engine all come here, so `rollout.backend` means the same everywhere."""
from __future__ import annotations

import json
from pathlib import Path

from rl_lora.config import ModelConfig, RolloutConfig, TrainMode
from rl_lora.errors import UserError
from rl_lora.types import AdapterUpdate, SamplingBackend


def build_backend(model: ModelConfig, rollout: RolloutConfig, tokenizer, device: str, seed: int = 0, *,
                  batch_size: int | None = None, serve: str | None = None, lora_slots: int | None = None,
                  max_lora_rank: int = 8, sleep: bool = False) -> SamplingBackend:
    """The backend `rollout.backend` names, serving `model` on `device`. `batch_size`: completions per forward
    batch (hf; default rollout.batch_size). `serve`, `lora_slots`, `max_lora_rank`: vllm's adapter serving
    (default rollout.vllm_serve; a shared engine asks for serve=lora with a slot per run). `sleep`: a vllm engine
    sleeps between steps (RunConfig.engine_sleeps)."""
    from rl_lora.models import load_causal_lm, resolve_model

    if "auto" in (model.dtype, device):  # vLLM's own dtype auto means the checkpoint's dtype: not ours
        raise ValueError(f"build_backend(dtype={model.dtype!r}, device={device!r}): resolve auto first "
                         "(rl_lora.device.resolve)")
    if rollout.backend == "vllm":
        from rl_lora.sampling.vllm import VLLMBackend

        return VLLMBackend(str(resolve_model(model.name)), tokenizer, dtype=model.dtype, device=device,
                           serve=serve or rollout.vllm_serve, max_model_len=rollout.vllm_max_model_len,
                           max_lora_rank=max_lora_rank, lora_slots=lora_slots, seed=seed,
                           gpu_memory_utilization=rollout.vllm_gpu_memory_utilization,
                           tensor_parallel_size=rollout.vllm_tensor_parallel_size,
                           enforce_eager=rollout.vllm_enforce_eager, sleep=sleep)
    from rl_lora.sampling.hf import HFBackend

    return HFBackend(load_causal_lm(model.name, model.dtype, device), tokenizer,
                     batch_size=batch_size or rollout.batch_size, decode=rollout.hf_decode)


def read_adapter(folder: str | Path) -> AdapterUpdate:
    """A PEFT adapter folder (a run's checkpoints/step_N/adapter, or any `save_pretrained` output) as an update
    any backend can serve, so evaluation loads an adapter the way training syncs one."""
    import dataclasses

    from peft import LoraConfig
    from safetensors.torch import load_file

    folder = Path(folder)
    config_path, weights_path = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    if not config_path.is_file():
        raise UserError(f"adapter folder {folder} has no adapter_config.json (is it a PEFT adapter folder?)")
    if not weights_path.is_file():
        raise UserError(f"adapter folder {folder} has no adapter_model.safetensors")
    saved = json.loads(config_path.read_text())
    if saved.get("peft_type", "LORA") != "LORA":
        raise UserError(f"adapter folder {folder} holds a {saved['peft_type']} adapter; rl-lora serves LoRA adapters")
    # The fields LoraConfig takes, less the bookkeeping PEFT writes beside them.
    accepted = {f.name for f in dataclasses.fields(LoraConfig) if f.init} - {
        "peft_type", "base_model_name_or_path", "revision", "auto_mapping", "inference_mode"}
    lora_config = {k: v for k, v in saved.items() if k in accepted}
    try:
        tensors = load_file(str(weights_path))
    except Exception as error:  # safetensors' own error type: a damaged or truncated file
        raise UserError(f"{weights_path} is damaged or truncated ({error})") from None
    return AdapterUpdate(0, TrainMode.LORA, tensors, lora_config)
