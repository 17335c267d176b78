"""The learner alone on one step-sized batch: its step time and its peak memory, apart from any sampler.

A run's own peak RSS counts the learner and the sampler together (one process, two model copies), so the
learner's memory is measured here in a fresh process: the run's model, adapter, optimizer and micro-batching on a
batch of the run's shape (prompts_per_step real prompts x group_size completions of max_new_tokens tokens each,
the longest a step can be). Learner peak = the peak RSS from the model's loading on (the kernel's high-water
mark is reset there) less the RSS just before it (interpreter, torch, tokenizer, task), so it holds weights,
gradients, optimizer state and activations, and the load's transient (for a small adapter that can be the peak).
Step peak = the same from after the load on: what training itself holds.

    rl-lora learner-memory RUN_DIR        # writes the run folder's learner_memory.json
    rl-lora learner-memory --config CFG   # prints the JSON
"""
from __future__ import annotations

import json
import signal
import statistics
import time
from pathlib import Path
from typing import Callable

from rl_lora.compare.children import run_tied
from rl_lora.config import RunConfig, TrainMode, load_config
from rl_lora.errors import Interrupted, UserError
from rl_lora.memory import peak_rss_mb, peak_since, start_peak
from rl_lora.run.folder import RunFolder


def measure(config: RunConfig, steps: int = 2, join: Callable | None = None) -> dict:
    """Time `steps` learner steps after one warm-up step (allocators, optimizer state) and report peak memory.
    `join`: called with the learner before its first step (a rank joining its group: scripts/bench_learner_group.py);
    the memory is then this rank's."""
    import torch

    from envs.render import PromptRenderer
    from rl_lora.device import resolve
    from rl_lora.models import load_causal_lm, load_tokenizer
    from rl_lora.policy.learner import LocalLearner
    from rl_lora.tasks import load_task
    from rl_lora.tokens import tokenize_prompts
    from rl_lora.types import Rollout, collate

    rollout = config.rollout
    tokenizer = load_tokenizer(config.model.name)
    samples = load_task(config.task).train[:rollout.prompts_per_step]
    renderer = PromptRenderer(tokenizer, config.task.render, config.task.system_prompt)
    prompt_ids = tokenize_prompts(tokenizer, [renderer(s) for s in samples])
    generator = torch.Generator().manual_seed(0)
    rollouts = [Rollout(s.id, tuple(prompt_ids[i]),
                        tuple(torch.randint(100, len(tokenizer) - 1, (rollout.max_new_tokens,),
                                            generator=generator).tolist()),
                        (-1.0,) * rollout.max_new_tokens, 0.0, (j % 2) - 0.5, 0)
                for i, s in enumerate(samples) for j in range(rollout.group_size)]
    batch = collate(rollouts, tokenizer.pad_token_id)
    compute = resolve(config.model)  # the learner loads in this process, on this machine's device
    before_model_mb, reset = start_peak()
    learner = LocalLearner(load_causal_lm(config.model.name, compute.dtype, compute.device), config.lora,
                      config.algo, config.learning_rate(), rollout.temperature, seed=config.train.seed,
                      max_new_tokens=rollout.max_new_tokens)
    if join is not None:
        join(learner)
    load_peak_mb = peak_since(reset) - before_model_mb
    # From here on, what training holds: the resident weights, gradients, optimizer state and the step's
    # activations, without the load's transient (the checkpoint file's pages beside the weights being filled).
    _, steps_reset = start_peak()
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        learner.step(batch)
        times.append(time.perf_counter() - start)
    return {"state_mb": learner.state_bytes / 2**20,
            "arm": config.arm_label, "mode": config.lora.mode.value,
            # tiny:U's own rank r is the exported LoRA's (lora.tiny_rank or chosen from U), not lora.rank
            "rank": config.lora.rank if config.lora.mode == TrainMode.LORA and config.lora.adapter != "tiny" else None,
            "trainable_params": learner.trainable_parameters, "step_s_median": statistics.median(times[1:]),
            "step_s_all": times, "peak_rss_mb": peak_rss_mb(), "rss_before_model_mb": before_model_mb,
            "learner_peak_mb": peak_since(reset) - before_model_mb, "peak_reset": reset,
            "load_peak_mb": load_peak_mb, "step_peak_mb": peak_since(steps_reset) - before_model_mb,
            "micro_batch_size": config.algo.micro_batch_size,
            "batch": {"prompts": len(samples), "completions_per_prompt": rollout.group_size,
                      "completion_tokens": rollout.max_new_tokens, "prompt_tokens": [len(p) for p in prompt_ids]},
            "torch_threads": torch.get_num_threads(), "device": compute.device, "dtype": compute.dtype}


def measure_in_subprocess(config_path: Path, steps: int = 2) -> dict:
    """measure() in a fresh process, so that the peak is the learner's and not the caller's."""
    out = run_tied(["learner-memory", "--config", str(config_path), "--steps", str(steps), "--in-process"],
                   capture=True)
    if out.stopped_by is not None:
        raise Interrupted(signal.Signals(out.stopped_by).name, out.stopped_by, "during the learner measurement")
    if out.code != 0:
        raise RuntimeError(f"learner memory measurement failed (exit {out.code}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_run(folder: RunFolder, steps: int = 2) -> Path:
    """Measure a run folder's learner (its config.yaml) and keep the result beside its summary."""
    return folder.write_learner_memory(measure_in_subprocess(folder.config_path, steps))


def learner_memory_main(run_dir: str | None, config: str | None, steps: int, in_process: bool) -> int:
    if config and in_process:  # the fresh process measure_in_subprocess starts
        print(json.dumps(measure(load_config(config, []), steps)))
    elif config:
        print(json.dumps(measure_in_subprocess(Path(config), steps), indent=1))
    elif run_dir:
        print(measure_run(RunFolder.existing(run_dir), steps))
    else:
        raise UserError("learner-memory: give a run folder or --config")
    return 0
