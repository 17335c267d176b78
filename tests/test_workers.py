"""RolloutWorker actors on a real Ray cluster with the real 260K Llama: rollouts, sync, and the stale-weights probe."""
import pytest

from envs.sample import Sample
from rl_lora.config import AlgoConfig, LoraConfig, ModelConfig, RewardConfig
from rl_lora.models import probe_logprobs
from rl_lora.policy.learner import LocalLearner
from rl_lora.sampling.probe import StaleWeightsError, check_probe
from rl_lora.step.advantages import build_rollouts
from rl_lora.types import Probe, SamplingParams, collate

SAMPLES = [Sample("a", "Once upon a time", "x"), Sample("b", "The cat sat", "y")]


@pytest.fixture(scope="module")
def workers(ray_cluster, tiny_model_dir):
    from rl_lora.cluster.actors import RolloutWorker

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

    learner = LocalLearner(copy.deepcopy(model), LoraConfig(rank=2), AlgoConfig(), lr=5e-3)
    probe = Probe.for_tokenizer(tokenizer)
    prompts = [s.prompt for s in SAMPLES]
    for step in range(1, 3):
        shard = ray.get(workers[0].sample_step.remote(prompts, SAMPLES, 4, SamplingParams(1.0, 12, seed=step),
                                                      step - 1))
        groups, scored = shard.groups, shard.scored
        assert [len(g) for g in groups] == [4, 4] and len(scored.rewards) == 8
        assert {c.version for g in groups for c in g} == {step - 1}
        scored_rewards = list(scored.rewards)
        scored_rewards[0] = 1.0 - (scored_rewards[1] or 0.0)  # make sure the first group carries signal
        rollouts = build_rollouts([s.id for s in SAMPLES], groups, scored_rewards, "group_mean", False)
        learner.step(collate(rollouts, tokenizer.pad_token_id))
        update = ray.put(learner.export_update())  # once into the object store, read by every worker
        assert ray.get([w.load_update.remote(update) for w in workers]) == [step, step]
        # A worker asked for a version it does not serve (restarted, weights lost) declines rather than sample.
        assert ray.get(workers[1].sample_step.remote(prompts, SAMPLES, 2, SamplingParams(1.0, 4), step - 1)) is None
        expected = probe_logprobs(learner.model, probe)
        for index, (version, served) in enumerate(ray.get([w.probe.remote(probe) for w in workers])):
            assert version == step
            check_probe(expected, served, f"worker {index}", version)


def test_probe_catches_a_stale_sampler(ray_cluster, workers, tiny_model):
    ray = ray_cluster
    model, tokenizer = tiny_model
    import copy

    learner = LocalLearner(copy.deepcopy(model), LoraConfig(rank=2), AlgoConfig(), lr=5e-3)
    for parameter in learner.model.parameters():
        if parameter.requires_grad:  # an update the workers never receive
            parameter.data.add_(0.05)
    probe = Probe.for_tokenizer(tokenizer)
    version, served = ray.get(workers[1].probe.remote(probe))
    with pytest.raises(StaleWeightsError, match="does not serve version"):
        check_probe(probe_logprobs(learner.model, probe), served, "worker 1", version)


def test_an_update_travels_as_one_buffer_and_lands_in_the_live_weights(tiny_model):
    """The packed pickle (what Ray's object store holds) round-trips every dtype, and the sampler's in-place copy
    gives the same adapter PEFT's own loader would."""
    import copy
    import pickle

    import torch
    from peft import get_peft_model_state_dict

    from rl_lora.models import lora_parameters
    from rl_lora.sampling.hf import HFBackend
    from rl_lora.types import AdapterUpdate

    model, tokenizer = tiny_model
    learner = LocalLearner(copy.deepcopy(model), LoraConfig(rank=2), AlgoConfig(), lr=5e-3)
    assert set(lora_parameters(learner.model)) == set(get_peft_model_state_dict(learner.model))
    with torch.no_grad():
        for parameter in learner.params:
            parameter.add_(torch.randn_like(parameter))
    learner.version = 7
    update = learner.export_update()
    received = pickle.loads(pickle.dumps(update, protocol=5))
    assert received.version == 7 and received.lora_config == update.lora_config
    assert all(torch.equal(received.tensors[k], update.tensors[k]) for k in update.tensors)
    mixed = AdapterUpdate(1, "full", {"a": torch.randn(3, dtype=torch.bfloat16), "b": torch.randn(2, 5),
                                      "c": torch.arange(3)})
    back = pickle.loads(pickle.dumps(mixed, protocol=5))
    assert all(torch.equal(back.tensors[k], mixed.tensors[k]) and back.tensors[k].dtype == mixed.tensors[k].dtype
               for k in mixed.tensors)

    backend = HFBackend(copy.deepcopy(model), tokenizer)
    backend.load_update(received)
    served = get_peft_model_state_dict(backend.model)
    assert backend.version == 7 and all(torch.equal(served[k], update.tensors[k]) for k in update.tensors)
    wrong = AdapterUpdate(8, "lora", {"not.a.lora_A.weight": torch.zeros(1)}, update.lora_config)
    with pytest.raises(ValueError, match="does not match"):
        backend.load_update(wrong)
