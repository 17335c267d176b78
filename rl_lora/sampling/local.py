"""The sampler in this process (rollout.num_workers = 0): one backend and the reward beside it. Its Ray twin is
rl_lora.cluster.pool.WorkerPool; both satisfy rl_lora.types.Sampler."""
from __future__ import annotations

import time

from envs.sample import Sample
from rewards.protocol import Scorer
from rl_lora.sampling.probe import check_probe
from rl_lora.types import Completion, Learner, Probe, SampledStep, SamplingBackend, SamplingParams, SyncResult


def sample_and_score(backend: SamplingBackend, scorer: Scorer, prompts: list[str], samples: list[Sample],
                     n: int, sampling: SamplingParams) -> SampledStep:
    """n completions per prompt, scored where they were sampled (in this process, or in a RolloutWorker)."""
    start = time.perf_counter()
    groups = backend.generate(prompts, n, sampling)
    generated = time.perf_counter()
    scored = scorer.score([c.text for group in groups for c in group], [s for s in samples for _ in range(n)])
    return SampledStep(groups, scored, generated - start, time.perf_counter() - generated)


class LocalSampler:
    """The backend and the reward in this process (rollout.num_workers = 0)."""

    def __init__(self, backend: SamplingBackend, scorer: Scorer, probe: Probe | None):
        self.backend, self.scorer, self.probe = backend, scorer, probe

    @property
    def pad_id(self) -> int:
        return self.backend.pad_id

    def submit(self, prompts: list[str], samples: list[Sample], n: int, sampling: SamplingParams) -> tuple:
        # Nothing runs beside the learner in one process: the work happens in collect, inside the step's clock.
        return prompts, samples, n, sampling

    def collect(self, handle: tuple) -> SampledStep:
        sampled = sample_and_score(self.backend, self.scorer, *handle)
        self.backend.sleep()  # the learner trains next; sync() wakes the engine
        return sampled

    def sync(self, learner: Learner) -> SyncResult:
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
