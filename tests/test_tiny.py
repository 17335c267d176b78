"""TinyLoRA (rl_lora/policy/tiny.py) on the real 260K Llama: exactly U trained numbers, a start at the base model,
and an export that every sampler and PEFT take as a plain rank-r LoRA."""
import copy

import pytest
import torch

from rl_lora.config import AlgoConfig, LoraConfig, load_config
from rl_lora.errors import UserError
from rl_lora.policy.learner import LocalLearner
from rl_lora.policy.tiny import TinyPlan
from rl_lora.sampling.hf import HFBackend
from tests.test_learner import PROMPTS, logits, make_batch

MODULES = 35  # the 260K model: 5 layers x 7 linear layers (attention and MLP)


@pytest.fixture
def fresh(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("RL_LORA_CACHE", str(tmp_path / "cache"))
    model, tokenizer = tiny_model
    return (lambda: copy.deepcopy(model)), tokenizer


def tiny(params=13, groups=1, rank=None) -> LoraConfig:
    return LoraConfig(adapter="tiny", tiny_params=params, tiny_groups=groups, tiny_rank=rank)


def reward(completion) -> float:
    return float(sum(completion.token_ids) % 2)


@pytest.mark.parametrize("params,groups", [(13, 1), (70, 5)])
def test_a_tiny_adapter_starts_at_the_base_model_and_trains_exactly_u_numbers(fresh, params, groups):
    new_model, tokenizer = fresh
    ids = torch.tensor([tokenizer(PROMPTS[0])["input_ids"]])
    learner = LocalLearner(new_model(), tiny(params, groups), AlgoConfig(), lr=1e-2)
    assert learner.trainable_parameters == params
    assert learner.tiny.plan.modules == MODULES and learner.tiny.plan.rank == 2
    assert torch.equal(logits(learner.model, ids), logits(new_model(), ids))  # v = 0: dW = 0
    assert learner.lora_config["r"] == 2 and learner.lora_config["lora_alpha"] == 2  # scaling 1

    batch, _ = make_batch(HFBackend(new_model(), tokenizer), tokenizer, reward)
    frozen = {n: p.clone() for n, p in learner.model.named_parameters() if not p.requires_grad}
    learner.step(batch)
    assert all(torch.equal(p, frozen[n]) for n, p in learner.model.named_parameters() if not p.requires_grad)
    assert all(v.abs().sum() > 0 for v in learner.tiny.vectors)
    assert not torch.equal(logits(learner.model, ids), logits(new_model(), ids))


def test_the_exported_rank_r_lora_reproduces_the_learner_everywhere(fresh, tmp_path):
    """A fresh hf backend, PeftModel.from_pretrained on the checkpoint's adapter folder, and the probe."""
    from peft import PeftModel

    from rl_lora.types import Probe

    new_model, tokenizer = fresh
    learner = LocalLearner(new_model(), tiny(13), AlgoConfig(), lr=5e-2)
    batch, _ = make_batch(HFBackend(new_model(), tokenizer), tokenizer, reward)
    for _ in range(2):
        learner.step(batch)
    update = learner.export_update()
    assert update.num_bytes == learner.update_bytes < 100_000  # the rank-2 LoRA is what a sync sends
    assert {t.shape[0] for k, t in update.tensors.items() if "lora_A" in k} == {2}
    backend = HFBackend(new_model(), tokenizer)
    backend.load_update(update)
    ids = torch.cat([batch.prompt_ids[:1], batch.completion_ids[:1]], dim=1)
    learner.model.eval()
    expected = logits(learner.model, ids)
    torch.testing.assert_close(logits(backend.model, ids), expected, atol=1e-5, rtol=1e-5)
    learner.save_weights(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(new_model(), tmp_path / "adapter")
    torch.testing.assert_close(logits(reloaded, ids), expected, atol=1e-5, rtol=1e-5)
    probe = Probe.for_tokenizer(tokenizer)
    diff = max(abs(a - b) for a, b in zip(backend.probe_logprobs(probe), learner.probe_logprobs(probe)))
    assert diff <= 1e-3


def test_a_resumed_tiny_learner_takes_the_same_next_step(fresh, tmp_path):
    new_model, tokenizer = fresh
    batch, _ = make_batch(HFBackend(new_model(), tokenizer), tokenizer, reward)
    learner = LocalLearner(new_model(), tiny(13), AlgoConfig(), lr=5e-2, seed=3)
    learner.step(batch)
    state = copy.deepcopy(learner.optimizer_state())
    update = learner.export_update()
    learner.step(batch)
    resumed = LocalLearner(new_model(), tiny(13), AlgoConfig(), lr=5e-2, seed=3)  # the SVD from the cache
    resumed.load_state(update, state)
    resumed.step(batch)
    for a, b in zip(learner.tiny.vectors, resumed.tiny.vectors):
        assert torch.equal(a, b)


@pytest.mark.parametrize("params,groups,rank,message", [
    (13, 2, None, "not a multiple of 2"),
    (12, 40, None, "between 1 and the 35 adapted modules"),
    (1000, 1, 2, "set lora.tiny_rank=6"),
    (5000, 1, None, "raise lora.tiny_groups or lower U"),
])
def test_a_u_the_grouping_cannot_express_is_one_line(params, groups, rank, message):
    with pytest.raises(UserError, match=message):
        TinyPlan.make(params, groups, rank, MODULES)


def test_the_rank_rises_with_u_when_unset():
    assert TinyPlan.make(13, 1, None, MODULES).rank == 2
    assert TinyPlan.make(1000, 1, None, MODULES).rank == 6  # 35 x 6^2 = 1260 >= 1000
    assert TinyPlan.make(1000, 1, None, 210).rank == 3  # SmolLM2-135M: 210 modules


def test_bad_tiny_config_is_one_line():
    with pytest.raises(UserError, match="tiny_params"):
        load_config(None, ["lora.adapter=tiny", "lora.tiny_params=0"])
    with pytest.raises(UserError, match="not a multiple"):
        load_config(None, ["lora.adapter=tiny", "lora.tiny_params=13", "lora.tiny_groups=2"]).check()
    with pytest.raises(UserError, match="lora.mode=full trains every weight"):
        load_config(None, ["lora.adapter=tiny", "lora.mode=full"]).check()


def test_an_svd_cache_that_cannot_be_written_is_one_line(tiny_model, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("RL_LORA_CACHE", str(blocker))  # a file where the cache folder should be
    with pytest.raises(UserError, match="set RL_LORA_CACHE to a writable folder"):
        LocalLearner(copy.deepcopy(tiny_model[0]), tiny(13), AlgoConfig(), lr=1e-2)
