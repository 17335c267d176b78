"""The two kinds of Ray actor: RolloutWorker (one inference backend and the reward next to it) and LearnerWorker
(the trainable model). Plain classes: `ray.remote(...)` wraps them in rl_lora.cluster.placement, and tests can too.

New weights reach a RolloutWorker as an AdapterUpdate through the object store (kB for LoRA) and are copied
into the live tensors; no files, no engine restart.
"""
from __future__ import annotations

import dataclasses

from envs.sample import Sample
from rl_lora.config import EnvConfig, ModelConfig, RewardConfig, RolloutConfig, RunConfig
from rl_lora.device import Compute, resolve
from rl_lora.sampling.episodes import build_episodes
from rl_lora.sampling.local import sample_and_score
from rl_lora.tasks import reward_scorer
from rl_lora.types import AdapterUpdate, Batch, Completion, LearnMetrics, Probe, SampledStep, SamplingParams


def node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _compute(model: ModelConfig) -> Compute:
    """model.device and model.dtype resolved here, on the actor's node, where its model loads (the driver may have
    no GPU): a GPU Ray granted this actor, else for auto the CPU (rl_lora.device). Outside Ray (tests build actors
    as plain classes too), as any process resolves them."""
    import ray

    return resolve(model, len(ray.get_gpu_ids()) if ray.is_initialized() else None)


class RolloutWorker:
    def __init__(self, model: ModelConfig, reward: RewardConfig, default_reward: str, task_name: str,
                 rollout: RolloutConfig | None = None, torch_threads: int = 1, seed: int = 0, sleep: bool = False,
                 env: EnvConfig | None = None, system_prompt: str | None = None):
        import torch

        from rl_lora.models import load_tokenizer
        from rl_lora.sampling.build import build_backend

        # Several workers share the machine's cores; each takes its share, not all of them.
        torch.set_num_threads(torch_threads)
        self.compute = _compute(model)
        tokenizer = load_tokenizer(model.name)
        self.backend = build_backend(self.compute.apply(model), rollout or RolloutConfig(), tokenizer,
                                     self.compute.device, seed, sleep=sleep)
        # The run's environment beside its sampler: episodes (tool calls included) run where they are sampled.
        self.episodes = build_episodes(env or EnvConfig(), tokenizer, self.backend.eos_ids, reward.timeout_s,
                                       system_prompt)
        # reward.name's rewards (weighted), or the task's own grader, scored where the completions are sampled.
        self.scorer = reward_scorer(reward, task_name, default_reward, env)

    def sample_step(self, prompts: list[str], samples: list[Sample], n: int, sampling: SamplingParams,
                    expected_version: int | None = None) -> SampledStep | None:
        """None when this worker does not serve `expected_version` (it was restarted and lost its weights): the
        caller syncs it again rather than train on samples from the wrong policy."""
        if expected_version is not None and self.backend.version != expected_version:
            return None
        sampled = sample_and_score(self.backend, self.scorer, prompts, samples, n, sampling, self.episodes)
        self.backend.sleep()  # the learner trains next (sleep mode: on its GPU); the sync wakes the engine
        return sampled

    def generate(self, prompts: list[str], n: int, sampling: SamplingParams,
                 samples: list[Sample] | None = None) -> list[list[Completion]]:
        if samples is not None:
            return self.episodes.run(self.backend, prompts, samples, n, sampling)
        return self.backend.generate(prompts, n, sampling)

    def load_update(self, update: AdapterUpdate) -> int:
        self.backend.load_update(update)
        return self.backend.version

    def probe(self, probe: Probe) -> tuple[int, list[float]]:
        return self.backend.version, self.backend.probe_logprobs(probe)

    def version(self) -> int:
        return self.backend.version

    def pad_id(self) -> int:
        return self.backend.pad_id

    def node(self) -> str:
        return node_id()

    def describe_compute(self) -> Compute:
        return self.compute


class LearnerWorker:
    """The LocalLearner in its own process (and on its own GPU when the placement gives it one)."""

    def __init__(self, config: RunConfig, torch_threads: int = 1):
        import torch

        from rl_lora.models import load_causal_lm
        from rl_lora.policy.learner import LocalLearner

        torch.set_num_threads(torch_threads)
        self.compute = _compute(config.model)
        config = dataclasses.replace(config, model=self.compute.apply(config.model))
        model = load_causal_lm(config.model.name, config.model.dtype, config.model.device)
        self.learner = LocalLearner(model, config.lora, config.algo, config.learning_rate(), config.rollout.temperature,
                                    seed=config.train.seed, max_new_tokens=config.rollout.max_new_tokens)
        # An engine sleeping on this GPU wakes after the step: leave it the memory torch's cache would keep.
        self.free_cache = config.engine_sleeps and self.compute.device.startswith("cuda")

    def rendezvous(self) -> tuple[str, int]:
        """Rank 0's address and a free port, for the group's other ranks."""
        from rl_lora.policy.data_parallel import rendezvous_address

        return rendezvous_address()

    def join_group(self, address: str, port: int, rank: int, world_size: int) -> None:
        """One of ray.num_learners: the torch.distributed group, then DDP (LoRA) or FSDP2 (FullFT)."""
        from rl_lora.policy.data_parallel import join_group

        join_group(address, port, rank, world_size, self.learner.params[0].device)
        self.learner.join_data_parallel(rank, world_size)

    def describe(self) -> dict:
        return {"trainable_parameters": self.learner.trainable_parameters, "lora_config": self.learner.lora_config,
                "update_bytes": self.learner.update_bytes,
                "version": self.learner.version, "node": node_id(), "state_bytes": self.learner.state_bytes,
                "compute": self.compute}

    def step(self, batch: Batch) -> LearnMetrics:
        metrics = self.learner.step(batch)
        if self.free_cache:
            import torch

            torch.cuda.empty_cache()
        return metrics

    def export_update(self) -> AdapterUpdate:
        import dataclasses

        update = self.learner.export_update()
        # Into the object store from the CPU: a CUDA tensor would unpickle only on a worker with that GPU.
        return dataclasses.replace(update, tensors={k: v.cpu() for k, v in update.tensors.items()})

    def probe(self, probe: Probe) -> list[float]:
        return self.learner.probe_logprobs(probe)

    def saved_weights(self) -> dict[str, bytes]:
        """The files of `Learner.save_weights`, as bytes: the driver writes them into the run folder, so
        checkpoints land on the driver's node even when the learner runs on another one (no shared disk needed)."""
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as folder:
            self.learner.save_weights(folder)
            return {str(p.relative_to(folder)): p.read_bytes() for p in Path(folder).rglob("*") if p.is_file()}

    def optimizer_state(self) -> dict:
        return self.learner.optimizer_state()

    def load_state(self, update: AdapterUpdate, optimizer_state: dict) -> int:
        self.learner.load_state(update, optimizer_state)
        return self.learner.version
