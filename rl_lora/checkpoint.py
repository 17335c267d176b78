"""Run checkpoints: `checkpoints/step_N/` holds the weights (a PEFT adapter folder, or a HF model folder for
FullFT), the optimizer, the RNG states and the data position. A checkpoint appears whole or not at all."""
from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from rl_lora.errors import UserError


@dataclass(frozen=True)
class TrainerState:
    step: int  # RL steps completed
    data_position: int
    base_accuracy: float | None


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step}"


def save_checkpoint(run_dir: Path, learner, state: TrainerState, tokenizer=None) -> Path:
    final = checkpoint_dir(run_dir, state.step)
    staging = final.with_name(f".{final.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    if learner.lora_config is not None:
        learner.save_weights(staging / "adapter")
    else:
        # A complete model folder: `rl-lora eval --model .../model` and from_pretrained load it as it is.
        learner.save_weights(staging / "model")
        if tokenizer is not None:
            tokenizer.save_pretrained(staging / "model")
    torch.save(learner.optimizer_state(), staging / "optimizer.pt")
    torch.save({"python": random.getstate(), "torch": torch.get_rng_state()}, staging / "rng.pt")
    (staging / "trainer_state.json").write_text(json.dumps(asdict(state), indent=1))
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    return final


def latest_checkpoint(run_dir: Path) -> Path:
    found = sorted((p for p in (run_dir / "checkpoints").glob("step_*") if (p / "trainer_state.json").is_file()),
                   key=lambda p: int(p.name.split("_")[1]))
    if not found:
        raise UserError(f"{run_dir} has no checkpoint to resume from (checkpoints/step_N/)")
    return found[-1]


def load_checkpoint(folder: Path) -> tuple[TrainerState, dict[str, torch.Tensor], dict]:
    """(trainer state, weight tensors in the learner's own key names, optimizer state)."""
    state = TrainerState(**json.loads((folder / "trainer_state.json").read_text()))
    rng = torch.load(folder / "rng.pt", weights_only=False)
    random.setstate(rng["python"])
    torch.set_rng_state(rng["torch"])
    optimizer_state = torch.load(folder / "optimizer.pt", weights_only=False)
    from safetensors.torch import load_file

    if (folder / "adapter").is_dir():
        tensors = load_file(folder / "adapter" / "adapter_model.safetensors")
    else:
        tensors = load_file(folder / "model" / "model.safetensors")
    return state, tensors, optimizer_state
