"""The learner on a real (tiny) Llama: LoRA init, what a step changes, and what it exports."""
import copy

import pytest
import torch

from rl_lora.config import AlgoConfig, LoraConfig
from rl_lora.policy.learner import LocalLearner
from rl_lora.policy.logprobs import batch_logprobs
from rl_lora.sampling.hf import HFBackend
from rl_lora.step.advantages import build_rollouts
from rl_lora.tokens import tokenize_prompts
from rl_lora.types import SamplingParams, collate

PROMPTS = ["Once upon a time", "The cat sat"]


@pytest.fixture
def fresh(tiny_model):
    model, tokenizer = tiny_model
    return (lambda: copy.deepcopy(model)), tokenizer


def make_batch(backend, tokenizer, rewards_fn, n=4, temperature=1.0):
    groups = backend.generate(PROMPTS, n, SamplingParams(temperature, 12, seed=0))
    rewards = [rewards_fn(c) for g in groups for c in g]
    rollouts = build_rollouts(["a", "b"], groups, rewards, "group_mean", False)
    return collate(rollouts, backend.pad_id), rollouts


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_lora_starts_at_the_base_model_and_trains_only_the_adapter(fresh):
    new_model, tokenizer = fresh
    base = new_model()
    ids = torch.tensor([tokenize_prompts(tokenizer, PROMPTS[:1])[0]])
    learner = LocalLearner(new_model(), LoraConfig(rank=1), AlgoConfig(), lr=1e-2)
    assert torch.equal(logits(learner.model, ids), logits(base, ids))  # B = 0
    targets = {n.split(".")[-3] for n, p in learner.model.named_parameters() if p.requires_grad}
    assert targets == {"lora_A", "lora_B"}
    wrapped = {n.split("base_layer.")[0].split(".")[-2] for n, _ in learner.model.named_modules() if "lora_A" in n}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= wrapped  # MLP too
    frozen_before = {n: p.clone() for n, p in learner.model.named_parameters() if not p.requires_grad}

    backend = HFBackend(new_model(), tokenizer)
    batch, _ = make_batch(backend, tokenizer, lambda c: float(sum(c.token_ids) % 2))
    metrics = learner.step(batch)
    assert metrics.grad_norm > 0 and learner.version == 1
    assert metrics.sampler_kl == pytest.approx(0, abs=1e-5)  # sampler and learner held the same weights
    for name, param in learner.model.named_parameters():
        if not param.requires_grad:
            assert torch.equal(param, frozen_before[name]), name
    assert any(p.abs().sum() > 0 for n, p in learner.model.named_parameters() if "lora_B" in n)


def test_positive_advantage_sequence_gains_logprob(fresh):
    new_model, tokenizer = fresh
    learner = LocalLearner(new_model(), LoraConfig(rank=2), AlgoConfig(), lr=1e-3)  # small: first-order regime
    backend = HFBackend(new_model(), tokenizer)
    batch, rollouts = make_batch(backend, tokenizer, lambda c: float(sum(c.token_ids) % 2))
    favoured = batch.advantages > 0
    assert favoured.any() and (~favoured).any()

    def sequence_logprobs():
        with torch.no_grad():
            lp, _ = batch_logprobs(learner.model, batch)
        return (lp * batch.completion_mask).sum(1)

    before = sequence_logprobs()
    learner.step(batch)
    change = sequence_logprobs() - before
    assert change[favoured].mean() > 0 > change[~favoured].mean()


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_exported_update_reproduces_the_learner(fresh, tmp_path, mode):
    new_model, tokenizer = fresh
    learner = LocalLearner(new_model(), LoraConfig(mode=mode, rank=2), AlgoConfig(),
                           lr=1e-2 if mode == "lora" else 1e-3)
    backend = HFBackend(new_model(), tokenizer)
    batch, _ = make_batch(backend, tokenizer, lambda c: float(sum(c.token_ids) % 2))
    learner.step(batch)
    update = learner.export_update()
    backend.load_update(update)
    assert backend.version == 1 and update.kind == mode
    ids = torch.cat([batch.prompt_ids[:1], batch.completion_ids[:1]], dim=1)
    learner.model.eval()
    torch.testing.assert_close(logits(backend.model, ids), logits(learner.model, ids), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(logits(new_model(), ids), logits(learner.model, ids))
    if mode == "lora":
        from peft import PeftModel

        assert update.num_bytes < 100_000  # a rank-2 adapter on this model is kB, not the model
        learner.save_weights(tmp_path / "adapter")
        reloaded = PeftModel.from_pretrained(new_model(), tmp_path / "adapter")
        torch.testing.assert_close(logits(reloaded, ids), logits(learner.model, ids), atol=1e-5, rtol=1e-5)
