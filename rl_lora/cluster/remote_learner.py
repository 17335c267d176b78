"""The Learner protocol (rl_lora.types) over the LearnerWorker actor. A dead learner actor stops the run at its
last checkpoint: its optimizer state lives only there, so unlike a rollout worker it is not restarted."""
from __future__ import annotations

from pathlib import Path

from rl_lora.errors import RunStopped
from rl_lora.types import AdapterUpdate, Batch, LearnMetrics, Probe


class RemoteLearner:
    """The Learner's interface, forwarded to the LearnerWorker actor. `export_update` returns an ObjectRef: the
    update goes learner -> object store -> workers, never through the driver."""

    def __init__(self, actor):
        import ray

        self.ray, self.actor = ray, actor
        info = self._get(actor.describe.remote())
        self.trainable_parameters, self.lora_config = info["trainable_parameters"], info["lora_config"]
        self.version, self.node = info["version"], info["node"]

    def _get(self, ref):
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayActorError as error:
            raise RunStopped(f"the learner actor died ({type(error).__name__}: {str(error).splitlines()[0]}); "
                             "the run stops at its last checkpoint") from None

    def step(self, batch: Batch) -> LearnMetrics:
        metrics = self._get(self.actor.step.remote(batch))
        self.version += 1
        return metrics

    def export_update(self):
        return self.actor.export_update.remote()

    def probe_logprobs(self, probe: Probe) -> list[float]:
        return self._get(self.actor.probe.remote(probe))

    def save_weights(self, folder) -> None:
        for name, data in self._get(self.actor.saved_weights.remote()).items():
            path = Path(folder) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    def optimizer_state(self) -> dict:
        return self._get(self.actor.optimizer_state.remote())

    def load_state(self, update: AdapterUpdate, optimizer_state: dict) -> None:
        self.version = self._get(self.actor.load_state.remote(update, optimizer_state))
