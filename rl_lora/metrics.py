"""Per-step metrics: one JSON line per step in metrics.jsonl, the same scalars in TensorBoard."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class StepMetrics:
    step: int
    reward_mean: float
    reward_std: float
    zero_variance_groups: float  # fraction of groups whose rewards are all equal: no learning signal there
    reward_failures: int
    loss: float
    grad_norm: float
    sampler_kl: float
    base_kl: float
    clip_fraction: float
    entropy: float
    completion_tokens_mean: float
    truncated_fraction: float
    tokens_per_s: float  # sampled tokens per second of generation
    lag: int  # learner version minus the version that sampled the batch
    time_generate: float  # the slowest sampler's generation time
    time_score: float
    time_wait: float  # the driver waiting for this step's rollouts (less than generate+score when sampled ahead)
    time_learn: float
    time_sync: float  # learner export -> every sampler serves the new version
    time_probe: float  # the post-sync check
    time_step: float
    learning_rate: float
    sampler_version: int = 0  # the oldest policy version among this step's completions
    probe_gap: float | None = None  # largest |sampler - learner| probe log-prob after the sync (None: probe off)
    worker_restarts: int = 0  # rollout workers restarted during the step (their prompts re-sampled)
    test_accuracy: float | None = None


class MetricsLog:
    def __init__(self, run_dir: Path, resume_after_step: int | None = None):
        self.path = run_dir / "metrics.jsonl"
        if resume_after_step is not None and self.path.exists():
            # Steps after the checkpoint were not kept; they will be run again.
            kept = [line for line in self.path.read_text().splitlines()
                    if line and json.loads(line)["step"] <= resume_after_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        from torch.utils.tensorboard import SummaryWriter

        self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"), purge_step=(resume_after_step or 0) + 1)

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


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []
