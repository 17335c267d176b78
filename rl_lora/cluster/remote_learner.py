"""The Learner protocol (rl_lora.types) over the LearnerWorker actors: one, or ray.num_learners in one
torch.distributed group (rank 0 first). A dead learner actor stops the run (at its last checkpoint, if any): its
optimizer state lives only there (and a group cannot go on with a hole), so unlike a rollout worker it is not
restarted."""
from __future__ import annotations

from pathlib import Path

from rl_lora.cluster.remote_errors import describe
from rl_lora.errors import RunStopped
from rl_lora.types import AdapterUpdate, Batch, LearnMetrics, Probe


class RemoteLearner:
    """The Learner's interface, forwarded to the LearnerWorker actors. Each step's batch goes to every rank once,
    through the object store; what the ranks hold in common (the adapter, the optimizer state) comes from rank 0.
    `export_update` returns an ObjectRef: the update goes learner -> object store -> workers, never through the
    driver."""

    def __init__(self, actors: list):
        import ray

        self.ray, self.actors = ray, list(actors)
        self.actor = self.actors[0]
        info = self._get(self.actor.describe.remote())
        self.trainable_parameters, self.lora_config = info["trainable_parameters"], info["lora_config"]
        self.update_bytes = info["update_bytes"]
        self.version, self.node = info["version"], info["node"]
        self.compute = info["compute"]  # rank 0's device and dtype, resolved on its node (rl_lora.device.Compute)
        # FullFT over N learners is sharded: gathering its weights or optimizer state, and a probe forward that
        # unshards them, are collectives every rank must join. LoRA ranks hold the same adapter: rank 0 suffices.
        self.collective = self.actors if self.lora_config is None else self.actors[:1]

    def _get(self, ref):
        return self._get_all([ref])[0]

    def _get_all(self, refs: list) -> list:
        """Every rank's answer; the first rank to die stops the run at once (the others would wait for it in the
        group's next collective until its timeout)."""
        pending, done = list(refs), {}
        while pending:
            ready, pending = self.ray.wait(pending, num_returns=1)
            try:
                done[ready[0]] = self.ray.get(ready[0])
            except self.ray.exceptions.RayActorError as error:
                # The run says what is left to resume from (rl_lora.run.train): the learner does not know.
                raise RunStopped(f"a learner actor died: {describe(error)}") from None
        return [done[ref] for ref in refs]

    def step(self, batch: Batch) -> LearnMetrics:
        shared = self.ray.put(batch) if len(self.actors) > 1 else batch
        metrics = self._get_all([actor.step.remote(shared) for actor in self.actors])[0]  # reduced over ranks
        self.version += 1
        return metrics

    def _from_rank0(self, method: str, *args):
        """Rank 0's answer; with sharded weights every rank runs it (they gather the weights together)."""
        return self._get_all([getattr(actor, method).remote(*args) for actor in self.collective])[0]

    def export_update(self):
        refs = [actor.export_update.remote() for actor in self.collective]
        return refs[0]

    def probe_logprobs(self, probe: Probe) -> list[float]:
        return self._from_rank0("probe", probe)

    def save_weights(self, folder) -> None:
        for name, data in self._from_rank0("saved_weights").items():
            path = Path(folder) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    def optimizer_state(self) -> dict:
        return self._from_rank0("optimizer_state")

    def load_state(self, update: AdapterUpdate, optimizer_state: dict) -> None:
        versions = self._get_all([actor.load_state.remote(update, optimizer_state) for actor in self.actors])
        self.version = versions[0]
