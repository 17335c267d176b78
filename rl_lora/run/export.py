"""`rl-lora export RUN [--step N] --out DIR`: a run's checkpoint as a Hugging Face model folder that
`AutoModelForCausalLM.from_pretrained(DIR)` and vLLM load as they are, with the tokenizer (and its chat template)
and a README.md card saying what it is and how it was made.

- LoRA, DoRA and tiny runs: the checkpoint's PEFT adapter merged into the base model (`merge_and_unload`), and the
  adapter itself under DIR/adapter (vLLM can serve it with `enable_lora`). The merge is computed and saved in
  float32: a small update (a rank-1 adapter after a few steps) rounded into bf16 weights can vanish.
- FullFT runs: the checkpoint's model folder, copied.

Every input is checked before anything loads or is written; the folder is built under a hidden name beside DIR and
renamed into place, so DIR appears whole or not at all."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from rl_lora.config import RunConfig
from rl_lora.errors import UserError
from rl_lora.models import load_causal_lm, resolve_model
from rl_lora.run.folder import CheckpointFolder, RunFolder


def _checkpoint(folder: RunFolder, step: int | None) -> CheckpointFolder:
    found = folder.checkpoints()
    if not found:
        raise UserError(f"{folder} has no checkpoint yet (a run writes one every train.checkpoint_every steps and "
                        "at its end)")
    if step is None:
        return found[-1]
    chosen = [c for c in found if c.step == step]
    if not chosen:
        raise UserError(f"{folder} has no checkpoint of step {step}; it has steps "
                        f"{', '.join(str(c.step) for c in found)}")
    return chosen[0]


def _check_out(out: Path) -> None:
    if out.is_file() or (out.is_dir() and any(out.iterdir())):
        raise UserError(f"--out {out} exists and is not an empty folder: name a new one")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: its parent folder {out.parent} does not exist")


def _write_model(config: RunConfig, checkpoint: CheckpointFolder, into: Path) -> None:
    if checkpoint.model.is_dir():  # FullFT: already a complete model folder with its tokenizer
        shutil.copytree(checkpoint.model, into)
        return
    from peft import PeftModel
    from transformers import AutoTokenizer

    source = resolve_model(config.model.name)
    merged = PeftModel.from_pretrained(load_causal_lm(config.model.name), str(checkpoint.adapter)).merge_and_unload()
    merged.save_pretrained(into, safe_serialization=True)
    # The tokenizer as the base ships it (rl-lora pads on the left for generation; a user's pipeline decides).
    AutoTokenizer.from_pretrained(source).save_pretrained(into)
    shutil.copytree(checkpoint.adapter, into / "adapter")


def _step_metrics(folder: RunFolder, step: int) -> dict:
    """The test metrics logged at `step` (step 0: the base model's accuracy), {} where it was not evaluated."""
    for record in folder.metric_records():
        if record.get("step") == step and record.get("test_accuracy") is not None:
            return {"test accuracy": record["test_accuracy"],
                    **{k.removeprefix("test/"): v for k, v in record.items() if k.startswith("test/")}}
    return {}


def _card(config: RunConfig, folder: RunFolder, checkpoint: CheckpointFolder, command: str) -> str:
    metrics = _step_metrics(folder, checkpoint.step)
    base = json.loads(checkpoint.trainer_state.read_text()).get("base_accuracy")
    kind = "the run's FullFT weights" if checkpoint.model.is_dir() else \
        f"the base model with the run's {config.arm_description} adapter merged in (float32); the adapter alone " \
        "(PEFT) is in adapter/"
    lines = [
        f"# {folder.name}, step {checkpoint.step}",
        "",
        f"An RL fine-tune of `{config.model.name}` made with rl-lora: {kind}.",
        "",
        f"- base model: `{config.model.name}`",
        f"- run: `{folder.path.resolve()}` ({config.arm_description}, learning rate {config.learning_rate():g}, "
        f"seed {config.train.seed}, {config.train.steps} steps)",
        f"- step: {checkpoint.step}",
        f"- task: {config.task.name}, reward {config.reward.name or 'the task default'}; prompts rendered with "
        f"task.render={config.task.render}" + (f", system prompt {config.task.system_prompt!r}"
                                                if config.task.system_prompt else ""),
    ]
    if metrics:
        shown = ", ".join(f"{name} {value:.3f}" for name, value in metrics.items())
        lines.append(f"- metrics at this step ({config.train.eval_size} test problems): {shown}")
    else:
        lines.append("- metrics at this step: not evaluated at this step")
    if base is not None:
        lines.append(f"- base model test accuracy: {base:.3f}")
    lines += ["", "Load it with `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained` on this "
              "folder, or serve it with vLLM.", "", "Made by:", "", f"    {command}", ""]
    return "\n".join(lines)


def export_main(run: str, step: int | None, out: str, command: str) -> Path:
    folder, target = RunFolder(run), Path(out)
    if not folder.is_run():
        raise UserError(f"{run} is not a run folder (it has no config.yaml)")
    checkpoint = _checkpoint(folder, step)
    _check_out(target)
    config = folder.read_config()
    staging = target.parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _write_model(config, checkpoint, staging)
        (staging / "README.md").write_text(_card(config, folder, checkpoint, command))
        if target.is_dir():
            target.rmdir()  # empty, checked above
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(f"exported {folder.name} step {checkpoint.step} to {target}: "
          + ("FullFT weights" if checkpoint.model.is_dir() else "merged model and adapter/")
          + f"; card {target / 'README.md'}")
    return target
