"""Per-step metrics as they are written: one JSON line per step in the run folder's metrics.jsonl, the same
scalars in TensorBoard."""
from __future__ import annotations

import json
from dataclasses import asdict

from rl_lora.run.folder import RunFolder
from rl_lora.types import StepMetrics


class MetricsLog:
    def __init__(self, folder: RunFolder, resume_after_step: int | None = None):
        self.path = folder.metrics_path
        if resume_after_step is not None and self.path.exists():
            # Steps after the checkpoint were not kept; they will be run again.
            kept = [line for line in self.path.read_text().splitlines()
                    if line and json.loads(line)["step"] <= resume_after_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        from torch.utils.tensorboard import SummaryWriter

        self.tensorboard = SummaryWriter(str(folder.tensorboard_dir), purge_step=(resume_after_step or 0) + 1)

    def write(self, metrics: StepMetrics) -> None:
        record = asdict(metrics)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key != "step" and value is not None:
                self.tensorboard.add_scalar(key, value, metrics.step)
        self.tensorboard.flush()

    def close(self) -> None:
        self.tensorboard.close()
