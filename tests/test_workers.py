"""RolloutWorker actors on a real Ray cluster with the real 260K Llama: rollouts, sync, and the stale-weights probe."""
import pytest

from rl_lora.config import AlgoConfig, LoraConfig, ModelConfig, RewardConfig
from rl_lora.learner import Learner
from rl_lora.rollout.base import SamplingParams
from rl_lora.rollouts import build_rollouts
from rl_lora.sync import Probe, StaleWeightsError, check_probe, probe_logprobs
from rl_lora.types import collate
from envs.sample import Sample

SAMPLES = [Sample("a", "Once upon a time", "x"), Sample("b", "The cat sat", "y")]


@pytest.fixture(scope="module")
def workers(ray_cluster, tiny_model_dir):
    from rl_lora.workers import RolloutWorker

    actor = ray_cluster.remote(num_cpus=0.5)(RolloutWorker)
    handles = [actor.remote(ModelConfig(name=str(tiny_model_dir)), RewardConfig(),
                            "tests.reward_fixtures:mentions_the", "stories") for _ in range(2)]
    yield handles
    for handle in handles:
        ray_cluster.kill(handle)


def test_workers_sample_score_and_serve_each_update(ray_cluster, workers, tiny_model):
    ray = ray_cluster
    model, tokenizer = tiny_model
    import copy

    learner = Learner(copy.deepcopy(model), LoraConfig(rank=2), AlgoConfig(), lr=5e-3)
    probe = Probe.for_tokenizer(tokenizer)
    prompts = [s.prompt for s in SAMPLES]
    for step in range(1, 3):
        groups, scored = ray.get(workers[0].rollout.remote(prompts, SAMPLES, 4, SamplingParams(1.0, 12, seed=step)))
        assert [len(g) for g in groups] == [4, 4] and len(scored.rewards) == 8
        assert {c.version for g in groups for c in g} == {step - 1}
        scored_rewards = list(scored.rewards)
        scored_rewards[0] = 1.0 - (scored_rewards[1] or 0.0)  # make sure the first group carries signal
        rollouts = build_rollouts([s.id for s in SAMPLES], groups, scored_rewards, "group_mean", False)
        learner.step(collate(rollouts, tokenizer.pad_token_id))
        update = ray.put(learner.export_update())  # once into the object store, read by every worker
        assert ray.get([w.load_update.remote(update) for w in workers]) == [step, step]
        expected = probe_logprobs(learner.model, probe)
        for index, (version, served) in enumerate(ray.get([w.probe.remote(probe) for w in workers])):
            assert version == step
            check_probe(expected, served, f"worker {index}", version)


def test_probe_catches_a_stale_sampler(ray_cluster, workers, tiny_model):
    ray = ray_cluster
    model, tokenizer = tiny_model
    import copy

    learner = Learner(copy.deepcopy(model), LoraConfig(rank=2), AlgoConfig(), lr=5e-3)
    for parameter in learner.model.parameters():
        if parameter.requires_grad:  # an update the workers never receive
            parameter.data.add_(0.05)
    probe = Probe.for_tokenizer(tokenizer)
    version, served = ray.get(workers[1].probe.remote(probe))
    with pytest.raises(StaleWeightsError, match="does not serve version"):
        check_probe(probe_logprobs(learner.model, probe), served, "worker 1", version)
