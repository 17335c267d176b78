import math

import pytest
import torch

from rl_lora.policy.losses import policy_loss, token_weights
from rl_lora.step.advantages import group_advantages


def test_group_mean_baseline_and_std():
    assert group_advantages([[1, 0, 0, 1], [1, 1]], "group_mean", False) == [[0.5, -0.5, -0.5, 0.5], [0.0, 0.0]]
    normalised = group_advantages([[1, 0, 0, 1]], "group_mean", True)[0]
    std = torch.tensor([1.0, 0, 0, 1]).std().item()
    assert normalised == pytest.approx([0.5 / std, -0.5 / std, -0.5 / std, 0.5 / std], rel=1e-5)
    assert group_advantages([[1.0, 0.0]], "none", False) == [[1.0, 0.0]]


def test_token_weights():
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.float32)
    assert token_weights(mask, "token").tolist() == [[0.25, 0.25, 0.25], [0.25, 0, 0]]
    assert token_weights(mask, "sequence").flatten().tolist() == pytest.approx([1 / 6, 1 / 6, 1 / 6, 0.5, 0, 0])


def _inputs():
    logprobs = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], requires_grad=True)
    sampler = torch.tensor([[-1.2, -2.0], [-0.5, -2.5]])
    advantages = torch.tensor([1.0, -0.5])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    return logprobs, sampler, advantages, mask, token_weights(mask, "token")


def test_is_pg_by_hand():
    logprobs, sampler, adv, mask, w = _inputs()
    terms = policy_loss("is_pg", logprobs, sampler, adv, mask, w)
    ratios = [math.exp(0.2), 1.0, 1.0]  # the masked token does not count
    expected = -(ratios[0] * 1 + ratios[1] * 1 + ratios[2] * -0.5) / 3
    assert terms.loss.item() == pytest.approx(expected, rel=1e-6)
    terms.loss.backward()
    # d/dlogp of -ratio*A*w is -ratio*A*w
    assert logprobs.grad[0, 0].item() == pytest.approx(-ratios[0] / 3, rel=1e-6)
    assert logprobs.grad[1, 1].item() == 0.0


def test_is_ratio_is_exactly_one_on_policy():
    logprobs = torch.tensor([[-1.3, -0.2]], requires_grad=True)
    terms = policy_loss("is_pg", logprobs, logprobs.detach().clone(), torch.tensor([2.0]),
                        torch.ones(1, 2), torch.full((1, 2), 0.5))
    assert terms.loss.item() == -2.0  # -(1 * 2) averaged over 2 tokens, exactly
    assert terms.sampler_kl_sum.item() == 0.0
    terms.loss.backward()
    reinforce = torch.tensor([[-1.3, -0.2]], requires_grad=True)
    policy_loss("reinforce", reinforce, reinforce.detach(), torch.tensor([2.0]), torch.ones(1, 2),
                torch.full((1, 2), 0.5)).loss.backward()
    assert torch.equal(logprobs.grad, reinforce.grad)  # on-policy IS gradient = REINFORCE gradient


def test_ppo_clips_by_hand():
    logprobs = torch.tensor([[0.0, 0.0]], requires_grad=True)
    sampler = torch.tensor([[-0.5, 0.5]])  # ratios e^0.5 = 1.65 and e^-0.5 = 0.61
    terms = policy_loss("ppo", logprobs, sampler, torch.tensor([1.0]), torch.ones(1, 2), torch.full((1, 2), 0.5),
                        clip_eps=0.2)
    # A > 0: min(r A, clip(r) A) -> 1.2 for the first, 0.61 for the second (unclipped side is smaller)
    assert terms.loss.item() == pytest.approx(-(1.2 + math.exp(-0.5)) / 2, rel=1e-6)
    assert terms.clipped_tokens.item() == 2


def test_base_kl_penalty_is_added():
    logprobs, sampler, adv, mask, w = _inputs()
    base = logprobs.detach() - 0.1
    plain = policy_loss("is_pg", logprobs, sampler, adv, mask, w).loss.item()
    with_kl = policy_loss("is_pg", logprobs, sampler, adv, mask, w, base_logprobs=base, kl_coef=0.5)
    k3 = math.exp(-0.1) - 1 + 0.1
    assert with_kl.loss.item() == pytest.approx(plain + 0.5 * k3, rel=1e-5)
