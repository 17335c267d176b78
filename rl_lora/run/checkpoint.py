"""Run checkpoints: the weights (a PEFT adapter folder, or a HF model folder for FullFT), the optimizer, the RNG
states and the data position, in a RunFolder's checkpoints/step_N. A checkpoint appears whole or not at all."""
from __future__ import annotations

import errno
import json
import random
import shutil
from dataclasses import asdict, dataclass

import torch

from rl_lora.config import TrainMode
from rl_lora.io import out_of_space
from rl_lora.run.folder import CheckpointFolder, RunFolder
from rl_lora.types import AdapterUpdate, Learner


@dataclass(frozen=True)
class TrainerState:
    step: int  # RL steps completed
    data_position: int
    base_accuracy: float | None


def save_checkpoint(folder: RunFolder, learner: Learner, state: TrainerState, tokenizer=None) -> CheckpointFolder:
    final = folder.checkpoint(state.step)
    staging = final.staging()
    shutil.rmtree(staging.path, ignore_errors=True)
    try:
        _write(staging, learner, state, tokenizer)
    except BaseException as error:
        full = out_of_space(error, staging.path.parent)  # asked while the partial checkpoint still takes its space
        shutil.rmtree(staging.path, ignore_errors=True)  # no partial folder left; a full disk gets its space back
        if full:
            raise OSError(errno.ENOSPC, f"no space left for checkpoint step {state.step}") from error
        raise
    if final.path.exists():
        shutil.rmtree(final.path)
    staging.path.rename(final.path)
    return final


def _write(staging: CheckpointFolder, learner: Learner, state: TrainerState, tokenizer) -> None:
    staging.path.mkdir(parents=True)
    if learner.lora_config is not None:
        learner.save_weights(staging.adapter)
    else:
        # A complete model folder: `rl-lora eval --model .../model` and from_pretrained load it as it is.
        learner.save_weights(staging.model)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging.model)
    # Through Python file objects: a full disk then raises OSError(ENOSPC), not torch's errno-less RuntimeError.
    with open(staging.optimizer, "wb") as f:
        torch.save(learner.optimizer_state(), f)
    with open(staging.rng, "wb") as f:
        torch.save({"python": random.getstate(), "torch": torch.get_rng_state()}, f)
    staging.trainer_state.write_text(json.dumps(asdict(state), indent=1))


def load_checkpoint(checkpoint: CheckpointFolder, lora_config: dict | None) -> tuple[TrainerState, AdapterUpdate,
                                                                                     dict]:
    """(trainer state, the weights as an update in the learner's own key names, optimizer state); restores the
    RNG states. `lora_config`: the learner's (None for FullFT)."""
    from safetensors.torch import load_file

    state = TrainerState(**json.loads(checkpoint.trainer_state.read_text()))
    rng = torch.load(checkpoint.rng, weights_only=False)
    random.setstate(rng["python"])
    torch.set_rng_state(rng["torch"])
    optimizer_state = torch.load(checkpoint.optimizer, weights_only=False)
    kind = TrainMode.LORA if lora_config is not None else TrainMode.FULL
    update = AdapterUpdate(state.step, kind, load_file(checkpoint.weights_file), lora_config)
    return state, update, optimizer_state
