"""Per-step metrics as they are written: one JSON line per step in the run folder's metrics.jsonl, the same
scalars in TensorBoard, and, with log.wandb, in Weights & Biases."""
from __future__ import annotations

import json
import os
from dataclasses import asdict

from rl_lora.io import atomic_write_text
from rl_lora.run.folder import RunFolder
from rl_lora.types import StepMetrics


def flat_record(metrics: StepMetrics) -> dict:
    """A step as one flat record (what metrics.jsonl holds): each weighted reward's mean as reward/<name>, so jq,
    pandas and TensorBoard read plain keys."""
    record = asdict(metrics)
    record.update({f"reward/{name}": value for name, value in (record.pop("reward_parts") or {}).items()})
    record.update({f"stop/{reason}": count for reason, count in (record.pop("stop_reasons") or {}).items()})
    record.update({f"test/{name}": value for name, value in (record.pop("test_sampled") or {}).items()})
    return record


class MetricsLog:
    def __init__(self, folder: RunFolder, resume_after_step: int | None = None):
        self.path = folder.metrics_path
        if resume_after_step is not None and self.path.exists():
            # Steps after the checkpoint were not kept (nor a torn last line); they will be run again.
            kept = [record for record in folder.metric_records() if record["step"] <= resume_after_step]
            atomic_write_text(self.path, "".join(json.dumps(record) + "\n" for record in kept))
        from torch.utils.tensorboard import SummaryWriter

        self.tensorboard = SummaryWriter(str(folder.tensorboard_dir), purge_step=(resume_after_step or 0) + 1)

    def write(self, metrics: StepMetrics) -> None:
        record = flat_record(metrics)
        line = memoryview((json.dumps(record) + "\n").encode())
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        end = os.lseek(fd, 0, os.SEEK_END)
        try:
            while line:
                line = line[os.write(fd, line):]
        except OSError:
            os.ftruncate(fd, end)  # no torn line left for the reader (the disk filled mid-line)
            raise
        finally:
            os.close(fd)
        for key, value in record.items():
            if key != "step" and value is not None:
                self.tensorboard.add_scalar(key, value, metrics.step)
        self.tensorboard.flush()

    def close(self) -> None:
        self.tensorboard.close()


# wandb groups charts by the prefix before "/".
NAMESPACES = (("reward_", "reward/"), ("zero_variance_groups", "reward/"), ("time_", "time/"),
              ("test_accuracy", "eval/"), ("loss", "policy/"), ("grad_norm", "policy/"), ("sampler_kl", "policy/"),
              ("base_kl", "policy/"), ("clip_fraction", "policy/"), ("entropy", "policy/"),
              ("is_corrected", "policy/"),
              ("learning_rate", "policy/"), ("lag", "sync/"), ("sampler_version", "sync/"), ("probe_gap", "sync/"),
              ("worker_restarts", "sync/"), ("episode_", "env/"), ("tool_", "env/"))


def namespaced(record: dict) -> dict:
    """metrics.jsonl's keys as wandb charts them: reward_mean -> reward/mean, time_learn -> time/learn, ..."""
    out = {}
    for key, value in record.items():
        if value is None or key == "step":
            continue
        prefix = next(((start, space) for start, space in NAMESPACES if key.startswith(start)), None)
        if "/" in key:
            out[key] = value
        elif prefix is None:
            out[f"sampling/{key}"] = value
        else:
            start, space = prefix
            out[space + (key[len(start):] if start.endswith("_") else key)] = value
    return out


class WandbLog:
    """One wandb run per run folder (a resume continues it); its files go to the run folder."""

    def __init__(self, config, folder: RunFolder):
        import hashlib
        import re

        import wandb

        from rl_lora.config import to_dict

        self.wandb = wandb
        stable_id = re.sub(r"[^\w-]", "-", folder.name)[:48] + "-" + hashlib.sha1(
            str(folder.path.resolve()).encode()).hexdigest()[:8]
        self.run = wandb.init(project=config.log.wandb_project, name=config.log.wandb_name or folder.name,
                              id=stable_id, resume="allow", dir=str(folder.path), config=to_dict(config))

    def write(self, metrics: StepMetrics) -> None:
        self.run.log(namespaced(flat_record(metrics)), step=metrics.step)

    def finish(self, plot=None, failed: bool = False) -> None:
        if plot is not None and plot.is_file():
            self.run.log({"plots/curve": self.wandb.Image(str(plot))})
        self.run.finish(exit_code=1 if failed else 0)
