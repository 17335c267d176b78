"""Where a step's completions come from: one in-process backend (LocalSampler) or N Ray RolloutWorker actors
(WorkerPool). Both submit a step's rollouts, collect them, and sync the learner's weights with the probe check.

With Ray, submit returns at once: the trainer can keep the workers sampling step t+1 while the learner trains
on step t (rollout.max_lag). Ray runs an actor's calls in the order they were sent, so a worker always samples a
step with the last update sent to it before that step was submitted.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from envs.sample import Sample
from rewards.protocol import ScoredBatch
from rewards.scoring import RewardScorer
from rl_lora.errors import RunStopped
from rl_lora.rollout.base import Completion, SamplingParams
from rl_lora.sync import Probe, check_probe


@dataclass(frozen=True)
class StepRollouts:
    groups: list[list[Completion]]
    scored: ScoredBatch
    generate_s: float  # the slowest worker's generation time
    score_s: float
    restarts: int = 0  # rollout workers that died during this step and were restarted (their prompts re-sampled)


def sample_and_score(backend, scorer: RewardScorer, prompts: list[str], samples: list[Sample], n: int,
                     sampling: SamplingParams) -> StepRollouts:
    """n completions per prompt, scored where they were sampled (in this process, or in a RolloutWorker)."""
    start = time.perf_counter()
    groups = backend.generate(prompts, n, sampling)
    generated = time.perf_counter()
    scored = scorer.score([c.text for group in groups for c in group], [s for s in samples for _ in range(n)])
    return StepRollouts(groups, scored, generated - start, time.perf_counter() - generated)


@dataclass(frozen=True)
class SyncResult:
    version: int
    seconds: float  # from the learner's export to every sampler serving the new version
    probe_seconds: float
    probe_gap: float | None  # largest probe log-prob gap over samplers (None: probe off)


class LocalSampler:
    """The backend and the reward in this process (rollout.num_workers = 0)."""

    def __init__(self, backend, scorer: RewardScorer, probe: Probe | None):
        self.backend, self.scorer, self.probe = backend, scorer, probe

    @property
    def pad_id(self) -> int:
        return self.backend.pad_id

    def submit(self, prompts: list[str], samples: list[Sample], n: int, sampling: SamplingParams) -> tuple:
        # Nothing runs beside the learner in one process: the work happens in collect, inside the step's clock.
        return prompts, samples, n, sampling

    def collect(self, pending: tuple) -> StepRollouts:
        return sample_and_score(self.backend, self.scorer, *pending)

    def sync(self, learner) -> SyncResult:
        start = time.perf_counter()
        self.backend.load_update(learner.export_update())
        synced = time.perf_counter()
        gap = None
        if self.probe is not None:
            gap = check_probe(learner.probe_logprobs(self.probe), self.backend.probe_logprobs(self.probe),
                              "the sampler", self.backend.version)
        return SyncResult(self.backend.version, synced - start, time.perf_counter() - synced, gap)

    def generate(self, prompts: list[str], n: int, sampling: SamplingParams) -> list[list[Completion]]:
        return self.backend.generate(prompts, n, sampling)

    def close(self) -> None:
        self.scorer.close()


@dataclass
class _Shard:
    worker: int
    prompt_slice: slice
    args: tuple
    ref: Any = None


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


RESTART_TIMEOUT_S = 600  # a restarted worker loads its model again


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class WorkerPool:
    """N RolloutWorker actors. A worker that dies is restarted by Ray (ray.max_restarts); the pool then sends it
    the current weights again and re-samples its prompts, so the step completes with nothing lost."""

    def __init__(self, workers: list, probe: Probe | None, log: Callable[[str], None] = _log):
        import ray

        self.ray, self.workers, self.probe, self.log = ray, list(workers), probe, log
        self.version = 0
        self.update_ref = None  # the last update sent, for workers that come back empty after a restart
        self.pad_id = ray.get(self.workers[0].pad_id.remote())

    # -- rollouts --------------------------------------------------------------------------------------------
    def submit(self, prompts: list[str], samples: list[Sample], n: int, sampling: SamplingParams) -> list[_Shard]:
        shards = []
        for index, part in enumerate(_shards(len(prompts), len(self.workers))):
            # Each shard draws its own random stream; a re-sampled shard draws the same one again.
            seed = None if sampling.seed is None else sampling.seed * 1_000 + index
            shard_sampling = SamplingParams(sampling.temperature, sampling.max_new_tokens, seed)
            shard = _Shard(index, part, (prompts[part], samples[part], n, shard_sampling, self.version))
            shard.ref = self.workers[index].rollout.remote(*shard.args)
            shards.append(shard)
        return shards

    def collect(self, shards: list[_Shard]) -> StepRollouts:
        results, restarts = [], 0
        for shard in shards:
            while True:
                try:
                    result = self.ray.get(shard.ref)
                    what = "was restarted by Ray and lost its weights"
                except self.ray.exceptions.RayActorError as error:
                    result, what = None, f"died during a step ({type(error).__name__}); Ray restarts it"
                if result is not None:
                    break
                restarts += 1
                self.log(f"rollout worker {shard.worker} {what}; it reloads version "
                         f"{self.version} and re-samples its {shard.prompt_slice.stop - shard.prompt_slice.start} "
                         "prompts")
                # Dead and restarted, or restarted earlier and serving stale weights: sync it, sample again.
                self._resync(shard.worker)
                shard.ref = self.workers[shard.worker].rollout.remote(*shard.args[:4], self.version)
            results.append(result)
        return StepRollouts(
            groups=[g for r in results for g in r.groups],
            scored=ScoredBatch([x for r in results for x in r.scored.rewards],
                               [f for r in results for f in r.scored.failures]),
            generate_s=max(r.generate_s for r in results), score_s=max(r.score_s for r in results),
            restarts=restarts)

    def generate(self, prompts: list[str], n: int, sampling: SamplingParams) -> list[list[Completion]]:
        """For evaluation: the prompts shared out, the groups back in order."""
        parts = _shards(len(prompts), len(self.workers))
        refs = [self.workers[i].generate.remote(prompts[p], n, sampling) for i, p in enumerate(parts)]
        groups = []
        for index, (part, ref) in enumerate(zip(parts, refs)):
            while True:
                try:
                    groups += self.ray.get(ref)
                    break
                except self.ray.exceptions.RayActorError:
                    self.log(f"rollout worker {index} died during evaluation; restarted, generating again")
                    self._resync(index)
                    ref = self.workers[index].generate.remote(prompts[part], n, sampling)
        return groups

    # -- weights ---------------------------------------------------------------------------------------------
    def sync(self, learner) -> SyncResult:
        """The update goes into the object store once (by the learner actor) and every worker reads it from
        there; the driver only passes the reference along."""
        start = time.perf_counter()
        update = learner.export_update()
        if not isinstance(update, self.ray.ObjectRef):
            update = self.ray.put(update)
        loads = [w.load_update.remote(update) for w in self.workers]
        probes = [w.probe.remote(self.probe) for w in self.workers] if self.probe is not None else []
        versions = [self._get_or_resync(i, ref, update) for i, ref in enumerate(loads)]
        synced = time.perf_counter()
        self.update_ref, self.version = update, learner.version
        if any(v != learner.version for v in versions):
            raise RuntimeError(f"workers report versions {versions} after loading version {learner.version}")
        gap = None
        if probes:
            expected = learner.probe_logprobs(self.probe)
            gaps = []
            for index, ref in enumerate(probes):
                try:
                    version, served = self.ray.get(ref)
                except self.ray.exceptions.RayActorError:  # died after loading; probe the restarted worker
                    self._resync(index)
                    version, served = self.ray.get(self.workers[index].probe.remote(self.probe))
                gaps.append(check_probe(expected, served, f"rollout worker {index}", version))
            gap = max(gaps)
        return SyncResult(self.version, synced - start, time.perf_counter() - synced, gap)

    def _get_or_resync(self, index: int, ref, update) -> int:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayActorError:
            self.log(f"rollout worker {index} died while loading an update; Ray restarts it, it loads again")
            self.update_ref = update
            self._resync(index)
            return self.ray.get(self.workers[index].version.remote())

    def _resync(self, index: int) -> None:
        """Blocks until Ray has restarted the worker and it serves the current weights; stops the run when the
        worker is gone for good (ray.max_restarts used up) or does not come back within RESTART_TIMEOUT_S."""
        worker, deadline = self.workers[index], time.monotonic() + RESTART_TIMEOUT_S
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
                                 f"{str(error).splitlines()[0]}") from None

    def close(self) -> None:
        for worker in self.workers:
            self.ray.kill(worker, no_restart=True)
