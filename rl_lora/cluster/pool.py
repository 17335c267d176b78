"""N RolloutWorker actors as one Sampler (rl_lora.types): a step's prompts shared out, the scored groups back
in order, the learner's update synced to every worker and checked by the probe.

submit returns at once: the trainer can keep the workers sampling step t+1 while the learner trains on step t
(rollout.max_lag). Ray runs an actor's calls in the order they were sent, so a worker always samples a step with
the last update sent to it before that step was submitted.

A worker that dies is restarted by Ray (ray.max_restarts). Every call to a worker goes through one recovery
path (`_get`): wait for the restart, send the current weights again, ask again. So a step completes with
nothing lost, and the run stops with a clear message only when Ray gives the worker up.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from envs.sample import Sample
from rewards.protocol import ScoredBatch
from rl_lora.cluster.remote_errors import describe
from rl_lora.errors import RunStopped
from rl_lora.sampling.probe import check_probe
from rl_lora.types import Completion, Learner, Probe, SampledStep, SamplingParams, SyncResult

RESTART_TIMEOUT_S = 600  # a restarted worker loads its model again


@dataclass
class _Shard:
    worker: int
    prompt_slice: slice
    args: tuple  # prompts, samples, n, sampling
    ref: Any = None

    @property
    def prompts(self) -> int:
        return self.prompt_slice.stop - self.prompt_slice.start


def _shards(count: int, workers: int) -> list[slice]:
    """Contiguous, as even as possible; workers without prompts get none."""
    size, extra = divmod(count, workers)
    slices, start = [], 0
    for index in range(workers):
        end = start + size + (index < extra)
        if end > start:
            slices.append(slice(start, end))
        start = end
    return slices


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class WorkerPool:
    def __init__(self, workers: list, probe: Probe | None, log: Callable[[str], None] = _log,
                 max_restarts: int | None = None):
        import ray

        self.ray, self.workers, self.probe, self.log = ray, list(workers), probe, log
        self.max_restarts = max_restarts  # ray.max_restarts, for the lines a death prints (None: not known)
        self.restarts = [0] * len(self.workers)
        self.version = 0
        self.update_ref = None  # the last update sent, for workers that come back empty after a restart
        self.recoveries = 0  # workers brought back after a restart, over the pool's life
        self.pad_id = ray.get(self.workers[0].pad_id.remote())

    # -- rollouts --------------------------------------------------------------------------------------------
    def submit(self, prompts: list[str], samples: list[Sample], n: int, sampling: SamplingParams) -> list[_Shard]:
        shards = []
        for index, part in enumerate(_shards(len(prompts), len(self.workers))):
            # Each shard draws its own random stream; a re-sampled shard draws the same one again.
            seed = None if sampling.seed is None else sampling.seed * 1_000 + index
            shard = _Shard(index, part, (prompts[part], samples[part], n,
                                         SamplingParams(sampling.temperature, sampling.max_new_tokens, seed)))
            shard.ref = self._sample(shard)
            shards.append(shard)
        return shards

    def _sample(self, shard: _Shard):
        """The worker samples the shard only if it serves the pool's version (else it answers None)."""
        return self.workers[shard.worker].sample_step.remote(*shard.args, self.version)

    def collect(self, handle: list[_Shard]) -> SampledStep:
        results, recoveries_before = [], self.recoveries
        for shard in handle:
            again = f"re-samples its {shard.prompts} prompts"
            while (result := self._get(shard.worker, shard.ref, lambda: self._sample(shard), "during a step",
                                       again)) is None:
                # Restarted earlier (between calls) and serving its base weights: sync it, sample again.
                self.log(f"rollout worker {shard.worker} was restarted by Ray and lost its weights; it reloads "
                         f"version {self.version} and {again}")
                self._resync(shard.worker)
                shard.ref = self._sample(shard)
            results.append(result)
        return SampledStep(
            groups=[g for r in results for g in r.groups],
            scored=ScoredBatch.join([r.scored for r in results]),
            generate_s=max(r.generate_s for r in results), score_s=max(r.score_s for r in results),
            restarts=self.recoveries - recoveries_before)

    def generate(self, prompts: list[str], n: int, sampling: SamplingParams,
                 samples: list[Sample] | None = None) -> list[list[Completion]]:
        """For evaluation: the prompts (and with `samples`, whole episodes) shared out, the groups back in order."""
        parts = _shards(len(prompts), len(self.workers))

        def ask(index: int):
            return self.workers[index].generate.remote(prompts[parts[index]], n, sampling,
                                                       None if samples is None else samples[parts[index]])

        refs = [ask(index) for index in range(len(parts))]
        return [group for index, ref in enumerate(refs)
                for group in self._get(index, ref, lambda: ask(index), "during evaluation", "generates again")]

    # -- weights ---------------------------------------------------------------------------------------------
    def sync(self, learner: Learner) -> SyncResult:
        """The update goes into the object store once (by the learner actor) and every worker reads it from
        there; the driver only passes the reference along."""
        start = time.perf_counter()
        update = learner.export_update()
        if not isinstance(update, self.ray.ObjectRef):
            update = self.ray.put(update)
        self.update_ref = update  # what a worker restarted from here on loads
        loads = [w.load_update.remote(update) for w in self.workers]
        probes = [w.probe.remote(self.probe) for w in self.workers] if self.probe is not None else []
        versions = [self._get(i, ref, self.workers[i].version.remote, "while loading an update", "loads it again")
                    for i, ref in enumerate(loads)]
        synced = time.perf_counter()
        self.version = learner.version
        if any(v != learner.version for v in versions):
            raise RuntimeError(f"workers report versions {versions} after loading version {learner.version}")
        gap = None
        if probes:
            expected = learner.probe_logprobs(self.probe)
            gaps = []
            for index, ref in enumerate(probes):
                version, served = self._get(index, ref, lambda: self.workers[index].probe.remote(self.probe),
                                            "after loading an update", "is probed again")
                gaps.append(check_probe(expected, served, f"rollout worker {index}", version))
            gap = max(gaps)
        return SyncResult(self.version, synced - start, time.perf_counter() - synced, gap)

    # -- faults ----------------------------------------------------------------------------------------------
    def _get(self, index: int, ref, again: Callable[[], Any], during: str, then: str) -> Any:
        """ray.get(ref) on worker `index`'s call; if the worker died, bring it back (_resync) and ask `again`."""
        while True:
            try:
                return self.ray.get(ref)
            except self.ray.exceptions.RayActorError as error:
                cause = describe(error)
                if self.max_restarts is not None and self.restarts[index] >= self.max_restarts:
                    raise RunStopped(f"rollout worker {index} died {during} ({cause}) and is not restarted "
                                     f"(ray.max_restarts={self.max_restarts}"
                                     + (", all used" if self.max_restarts else "") + ")") from None
                self.restarts[index] += 1
                budget = f" of {self.max_restarts}" if self.max_restarts is not None else ""
                self.log(f"rollout worker {index} died {during} ({cause}); Ray restarts it (restart "
                         f"{self.restarts[index]}{budget}), it reloads version {self.version} and {then}")
                self._resync(index)
                ref = again()

    def _resync(self, index: int) -> None:
        """Blocks until Ray has restarted the worker and it serves the current weights; stops the run when the
        worker is gone for good (ray.max_restarts used up) or does not come back within RESTART_TIMEOUT_S."""
        worker, deadline = self.workers[index], time.monotonic() + RESTART_TIMEOUT_S
        self.recoveries += 1
        while True:
            try:
                if self.update_ref is not None:
                    self.ray.get(worker.load_update.remote(self.update_ref))
                else:  # nothing learned yet: the restarted worker's base weights are version 0
                    self.ray.get(worker.version.remote())
                return
            except self.ray.exceptions.ActorUnavailableError:  # restarting (loading its model): ask again
                if time.monotonic() > deadline:
                    raise RunStopped(f"rollout worker {index} did not come back within {RESTART_TIMEOUT_S} s "
                                     "of a restart") from None
                time.sleep(0.2)
            except self.ray.exceptions.RayActorError as error:
                raise RunStopped(f"rollout worker {index} died and was not restarted (ray.max_restarts used up): "
                                 f"{describe(error)}") from None

    def close(self) -> None:
        for worker in self.workers:
            self.ray.kill(worker, no_restart=True)
