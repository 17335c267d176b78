"""The sampler in this process (rollout.num_workers = 0): one backend and the reward beside it. Its Ray twin is
rl_lora.cluster.pool.WorkerPool; both satisfy rl_lora.types.Sampler."""
from __future__ import annotations

import time

from envs.sample import Sample
from rewards.protocol import Scorer
from rewards.protocol import ScoredBatch
from rl_lora.sampling.episodes import ONE_TURN, EpisodeRunner
from rl_lora.sampling.probe import check_probe
from rl_lora.types import Completion, Learner, Probe, SampledStep, SamplingBackend, SamplingParams, SyncResult


def sample_and_score(backend: SamplingBackend, scorer: Scorer, prompts: list[str], samples: list[Sample],
                     n: int, sampling: SamplingParams, episodes: EpisodeRunner = ONE_TURN) -> SampledStep:
    """n episodes per prompt (one turn each, unless the run's environment goes on), scored where they were
    sampled (in this process, or in a RolloutWorker). The reward scores each episode's last assistant turn; an
    episode whose environment gave rewards is worth their sum instead."""
    start = time.perf_counter()
    groups = episodes.run(backend, prompts, samples, n, sampling)
    generated = time.perf_counter()
    completions = [c for group in groups for c in group]
    scored = scorer.score([c.text for c in completions], [s for s in samples for _ in range(n)])
    if any(c.env_reward is not None for c in completions):
        scored = ScoredBatch([r if c.env_reward is None else c.env_reward for c, r in zip(completions, scored.rewards)],
                             scored.failures, scored.parts)
    return SampledStep(groups, scored, generated - start, time.perf_counter() - generated)


class LocalSampler:
    """The backend and the reward in this process (rollout.num_workers = 0)."""

    def __init__(self, backend: SamplingBackend, scorer: Scorer, probe: Probe | None,
                 episodes: EpisodeRunner = ONE_TURN):
        self.backend, self.scorer, self.probe, self.episodes = backend, scorer, probe, episodes

    @property
    def pad_id(self) -> int:
        return self.backend.pad_id

    def submit(self, prompts: list[str], samples: list[Sample], n: int, sampling: SamplingParams) -> tuple:
        # Nothing runs beside the learner in one process: the work happens in collect, inside the step's clock.
        return prompts, samples, n, sampling

    def collect(self, handle: tuple) -> SampledStep:
        sampled = sample_and_score(self.backend, self.scorer, *handle, episodes=self.episodes)
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

    def generate(self, prompts: list[str], n: int, sampling: SamplingParams,
                 samples: list[Sample] | None = None) -> list[list[Completion]]:
        """With `samples`: whole episodes of the run's environment (evaluation with tools); else completions."""
        if samples is not None:
            return self.episodes.run(self.backend, prompts, samples, n, sampling)
        return self.backend.generate(prompts, n, sampling)

    def close(self) -> None:
        self.scorer.close()
        self.episodes.close()
