"""Per-step metrics as they are written: one JSON line per step in the run folder's metrics.jsonl, the same
scalars in TensorBoard."""
from __future__ import annotations

import json
import os
from dataclasses import asdict

from rl_lora.io import atomic_write_text
from rl_lora.run.folder import RunFolder
from rl_lora.types import StepMetrics


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
        record = asdict(metrics)
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
