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


# -- issue 30: the field's variants, each against values computed by hand on the 2-group batch of _inputs() ---------
# Row 0 (A = 1): log-ratios 0.2, 0.0; row 1 (A = -0.5): log-ratios 0.0, -0.5 (the second token is masked).

def test_rloo_and_reinforce_pp_advantages_by_hand():
    # RLOO: r_i - mean of the others. Group [1, 0, 0, 1]: 1 - 1/3 = 2/3, 0 - 2/3 = -2/3.
    assert group_advantages([[1, 0, 0, 1]], "rloo", False)[0] == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3])
    assert group_advantages([[1, 1]], "rloo", False) == [[0.0, 0.0]]
    # REINFORCE++: group mean off, then whitened over the batch: [0.5, -0.5] and [0, 0] -> over all four (one token
    # each). Before issue 38 this divided by the std over completions + 1e-6; now verl's masked_whiten over tokens,
    # (A - mean) / sqrt(var + 1e-8) (test_reinforce_pp_whitens_over_tokens_by_hand covers unequal lengths).
    centred = torch.tensor([0.5, -0.5, 0.0, 0.0], dtype=torch.float64)
    expected = ((centred - centred.mean()) / (centred.var() + 1e-8).sqrt()).tolist()
    flat = [a for group in group_advantages([[1, 0], [2, 2]], "reinforce_pp", False, token_counts=[[1, 1], [1, 1]])
            for a in group]
    assert flat == pytest.approx(expected)


def test_constant_normalization_divides_by_rows_times_the_budget():
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.float32)
    assert token_weights(mask, "constant", max_new_tokens=4).tolist() == [[0.125, 0.125, 0.125], [0.125, 0, 0]]


def test_clip_higher_and_dual_clip_by_hand():
    logprobs = torch.tensor([[0.0, 0.0]], requires_grad=True)
    sampler = torch.tensor([[-0.25, 0.5]])  # ratios e^0.25 = 1.284 and e^-0.5 = 0.607
    w = torch.full((1, 2), 0.5)
    # A = 1, eps_low 0.2, eps_high 0.28: min(1.284, 1.28) = 1.28 (clipped above), min(0.607, 0.8) = 0.607.
    terms = policy_loss("ppo", logprobs, sampler, torch.tensor([1.0]), torch.ones(1, 2), w, clip_eps=0.2,
                        clip_eps_high=0.28)
    assert terms.loss.item() == pytest.approx(-(1.28 + math.exp(-0.5)) / 2, rel=1e-6)
    assert terms.clipped_tokens.item() == 2  # both ratios lie outside their clip range
    # A = -2 with a ratio of e^2 = 7.39: PPO's loss 2 * 7.39 = 14.8; dual-clip c = 3 caps it at -c A = 6.
    big = torch.tensor([[2.0]], requires_grad=True)
    dual = policy_loss("ppo", big, torch.zeros(1, 1), torch.tensor([-2.0]), torch.ones(1, 1), torch.ones(1, 1),
                       clip_ratio_c=3.0)
    assert dual.loss.item() == pytest.approx(6.0)
    plain = policy_loss("ppo", big, torch.zeros(1, 1), torch.tensor([-2.0]), torch.ones(1, 1), torch.ones(1, 1))
    assert plain.loss.item() == pytest.approx(2 * math.exp(2.0), rel=1e-6)


def test_gspo_uses_one_sequence_ratio_for_every_token():
    logprobs, sampler, adv, mask, w = _inputs()
    terms = policy_loss("gspo", logprobs, sampler, adv, mask, w, clip_eps=0.2)
    # Row 0: s = exp(mean(0.2, 0.0)) = e^0.1 for both tokens (inside [0.8, 1.2]); row 1: s = exp(0.0) = 1 (the
    # masked token is not in the mean).
    s0 = math.exp(0.1)
    assert terms.loss.item() == pytest.approx(-(s0 * 1 + s0 * 1 + 1.0 * -0.5) / 3, rel=1e-6)
    terms.loss.backward()
    # d/dlogp_t of -s A w with s = exp(mean log r): -s A w / n_tokens, the same for both tokens of row 0.
    assert logprobs.grad[0, 0].item() == pytest.approx(logprobs.grad[0, 1].item(), rel=1e-6)
    assert logprobs.grad[0, 0].item() == pytest.approx(-s0 * 1 * 2 / 3 / 2, rel=1e-6)


def test_cispo_gradient_is_the_clipped_weight_times_the_advantage():
    logprobs = torch.tensor([[0.0, 0.0]], requires_grad=True)
    sampler = torch.tensor([[-0.5, 0.1]])  # ratios 1.65 (clipped to 1.28) and 0.905 (inside)
    w = torch.full((1, 2), 0.5)
    terms = policy_loss("cispo", logprobs, sampler, torch.tensor([2.0]), torch.ones(1, 2), w, clip_eps=0.2,
                        clip_eps_high=0.28)
    terms.loss.backward()
    # -sg(w_t) A ∇log p_t * weight: every token keeps its gradient, scaled by its clipped IS weight.
    assert logprobs.grad[0].tolist() == pytest.approx([-1.28 * 2 * 0.5, -math.exp(-0.1) * 2 * 0.5], rel=1e-6)
    assert terms.clipped_tokens.item() == 1


def test_kl_estimators_by_hand():
    from rl_lora.policy.losses import kl_estimate

    log_p, log_q = torch.tensor([-1.0]), torch.tensor([-1.5])  # log r = -0.5
    assert kl_estimate(log_p, log_q, "k1").item() == pytest.approx(0.5)
    assert kl_estimate(log_p, log_q, "k2").item() == pytest.approx(0.125)
    assert kl_estimate(log_p, log_q, "k3").item() == pytest.approx(math.exp(-0.5) - 1 + 0.5)


def test_dapo_overlong_penalty_and_filtering_by_hand():
    from rl_lora.step.advantages import build_rollouts, overlong_penalty
    from rl_lora.types import Completion

    # max_new_tokens 10, buffer 4: no penalty up to 6 tokens, then -1/4 per token, -1 at 10 (eq. 13).
    assert [overlong_penalty(n, 10, 4) for n in (5, 6, 7, 8, 10)] == [0.0, 0.0, -0.25, -0.5, -1.0]
    assert overlong_penalty(10, 10, 4, factor=0.5) == -0.5 and overlong_penalty(10, 10, 0) == 0.0

    def completion(length: int, finished: bool) -> Completion:
        return Completion(0, (1,), tuple(range(length)), (-0.1,) * length, "", finished, 0)

    group = [completion(3, True), completion(8, True), completion(10, False), completion(5, True)]
    rollouts = build_rollouts(["a"], [group], [1.0, 1.0, 1.0, 0.0], "group_mean", False, max_new_tokens=10,
                              overlong_buffer=4)
    assert [r.reward for r in rollouts] == [1.0, 0.5, 0.0, 0.0]  # shaped before the baseline
    assert [r.advantage for r in rollouts] == pytest.approx([0.625, 0.125, -0.375, -0.375])
    filtered = build_rollouts(["a"], [group], [1.0, 1.0, 1.0, 0.0], "group_mean", False, mask_truncated=True)
    assert [len(r.completion_ids) for r in filtered] == [3, 8, 5]  # the cut one carries no loss
    assert [r.advantage for r in filtered] == pytest.approx([0.25, 0.25, -0.75])  # its group's mean still counts it


def test_sampler_mismatch_correction_by_hand():
    from rl_lora.policy.losses import mismatch_weight

    log_ratio = torch.tensor([[math.log(3.0), 0.0], [math.log(0.25), math.log(1.5)]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    # TIS per token, C = 2: min(ρ, 2) / ρ = 2/3, 1, 1, 1.
    assert mismatch_weight("token_truncate", log_ratio, mask, 2.0, (0.5, 2.0)).flatten().tolist() == \
        pytest.approx([2 / 3, 1, 1, 1])
    # MIS per token, [0.5, 2]: ρ = 3 and 0.25 are dropped.
    assert mismatch_weight("token_mask", log_ratio, mask, 2.0, (0.5, 2.0)).flatten().tolist() == [0, 1, 0, 1]
    # Per sequence: ρ_0 = 3 (dropped / truncated to 2), ρ_1 = 0.375 (dropped / kept whole).
    assert mismatch_weight("sequence_mask", log_ratio, mask, 2.0, (0.5, 2.0)).flatten().tolist() == [0, 0, 0, 0]
    # TIS per sequence: the factor replaces each token's r_t by min(ρ_seq, 2), so both tokens of a row weigh the same:
    # 2 (row 0) and 0.375 (row 1). (Before issue 38 this asserted min(ρ_seq, C) / ρ_seq = [2/3, 2/3, 1, 1], which
    # left r_t in the weight: not the published form.)
    factor = mismatch_weight("sequence_truncate", log_ratio, mask, 2.0, (0.5, 2.0))
    assert (factor * log_ratio.exp()).flatten().tolist() == pytest.approx([2, 2, 0.375, 0.375])
    # In the loss: is_pg weighs min(ρ, C) A, and the gradient follows (the factor carries none).
    logprobs = torch.tensor([[math.log(3.0)]], requires_grad=True)
    terms = policy_loss("is_pg", logprobs, torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1),
                        torch.ones(1, 1), is_correction="token_truncate", is_cap=2.0)
    assert terms.loss.item() == pytest.approx(-2.0) and terms.corrected_tokens.item() == 1
    terms.loss.backward()
    assert logprobs.grad.item() == pytest.approx(-2.0)  # -min(ρ, C) A ∇log π


def test_kl_in_reward_takes_the_penalty_from_each_tokens_return_by_hand():
    logprobs, sampler, adv, mask, w = _inputs()
    # k1 per token = log p - log base: row 0 -> 0.1, 0.3; row 1 -> 0.2 (its second token is masked).
    base = logprobs.detach() - torch.tensor([[0.1, 0.3], [0.2, 0.7]])
    terms = policy_loss("reinforce", logprobs, sampler, adv, mask, w, base_logprobs=base, kl_coef=0.5,
                        kl_estimator="k1", kl_in="reward")
    # A_t = A - β Σ_{s>=t} kl_s: row 0 -> 1 - 0.5 (0.4), 1 - 0.5 (0.3); row 1 -> -0.5 - 0.5 (0.2), masked.
    advantage = [[0.8, 0.85], [-0.6, None]]
    terms.loss.backward()
    # reinforce: d/dlogp = -A_t / 3 per kept token; no KL term in the loss itself (it carries no gradient).
    assert logprobs.grad[0].tolist() == pytest.approx([-a / 3 for a in advantage[0]], rel=1e-6)
    assert logprobs.grad[1, 0].item() == pytest.approx(0.6 / 3, rel=1e-6)
    assert logprobs.grad[1, 1].item() == 0.0
    # The metric still reports the KL it used: (0.1 + 0.3 + 0.2), summed over kept tokens.
    assert terms.base_kl_sum.item() == pytest.approx(0.6, rel=1e-6)


def test_entropy_bonus_adds_minus_c_h_and_its_gradient():
    from rl_lora.policy.logprobs import _chunk

    head = torch.nn.Linear(4, 5, bias=False)
    torch.manual_seed(0)
    hidden, targets = torch.randn(3, 4), torch.tensor([0, 2, 4])
    logprobs, entropy = _chunk(head, hidden, targets, 1.0, entropy_grad=True)
    assert entropy.requires_grad
    probs = torch.softmax(head(hidden), -1)
    assert entropy.tolist() == pytest.approx((-(probs * probs.log()).sum(-1)).tolist(), rel=1e-5)
    _, metric_only = _chunk(head, hidden, targets, 1.0)
    assert not metric_only.requires_grad  # the default: the entropy is a metric, no gradient kept
    mask = torch.ones(1, 3)
    w = token_weights(mask, "token")
    sampler = logprobs.detach()[None]
    plain = policy_loss("is_pg", logprobs[None], sampler, torch.tensor([0.0]), mask, w)
    bonus = policy_loss("is_pg", logprobs[None], sampler, torch.tensor([0.0]), mask, w, entropy=entropy[None],
                        entropy_coef=0.1)
    assert bonus.loss.item() == pytest.approx(plain.loss.item() - 0.1 * entropy.mean().item(), rel=1e-6)
    bonus.loss.backward()  # with A = 0 the whole gradient is the bonus's: it raises the entropy
    step = -0.01 * head.weight.grad
    with torch.no_grad():
        head.weight += step
    _, after = _chunk(head, hidden, targets, 1.0)
    assert after.mean().item() > entropy.mean().item()


# -- issue 38: the published formulas, computed by hand on a batch of unequal lengths with padding ------------------
# Row 0 (A = 1): log ρ = 0.5, -0.2, then a pad token whose log-ratio 3 must count nowhere; ρ_seq = e^0.3 = 1.35.
# Row 1 (A = -0.5): log ρ = 0.4, 0.3, 0.2; ρ_seq = e^0.9 = 2.46. Token normalisation: 1/5 per completion token.
_LOGP = [[-1.0, -2.0, -0.3], [-0.5, -1.5, -0.7]]
_LOG_RHO = [[0.5, -0.2, 3.0], [0.4, 0.3, 0.2]]
_MASK = [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
_ADV = [1.0, -0.5]


def _sequence_corrected(kind: str, correction: str):
    logprobs = torch.tensor(_LOGP, dtype=torch.float64, requires_grad=True)
    sampler = logprobs.detach() - torch.tensor(_LOG_RHO, dtype=torch.float64)
    mask = torch.tensor(_MASK, dtype=torch.float64)
    # clip_eps = 0.9: every ratio here lies inside [0.1, 1.9], so ppo's clip leaves them alone.
    terms = policy_loss(kind, logprobs, sampler, torch.tensor(_ADV, dtype=torch.float64), mask, mask / 5,
                        clip_eps=0.9, is_correction=correction, is_cap=2.0, is_bounds=(0.5, 2.0))
    terms.loss.backward()
    return terms, logprobs.grad.flatten().tolist()


@pytest.mark.parametrize("kind", ["is_pg", "ppo", "gspo", "reinforce"])
def test_sequence_truncate_weighs_every_token_min_rho_seq_c_by_hand(kind):
    """TIS per sequence (TRL's vllm_importance_sampling_mode=sequence_truncate, verl's rollout_is=sequence): every
    token of a row weighs w = min(ρ_seq, C), in the value and in the gradient -w A ∇log π / 5."""
    weight = [min(math.exp(0.5 - 0.2), 2.0), min(math.exp(0.4 + 0.3 + 0.2), 2.0)]  # 1.35, 2 (truncated)
    terms, grad = _sequence_corrected(kind, "sequence_truncate")
    tokens = [(i, t) for i in range(2) for t in range(3) if _MASK[i][t]]
    # is_pg, ppo and gspo (unclipped) carry w in place of r_t (gspo: of s): -w A per token; reinforce: -w A log π.
    value = [-weight[i] * _ADV[i] * (_LOGP[i][t] if kind == "reinforce" else 1.0) / 5 for i, t in tokens]
    assert terms.loss.item() == pytest.approx(sum(value), rel=1e-12)
    assert grad == pytest.approx([-weight[0] * _ADV[0] / 5] * 2 + [0.0] + [-weight[1] * _ADV[1] / 5] * 3, rel=1e-12)
    assert terms.corrected_tokens.item() == 3  # row 1's tokens: ρ_seq = 2.46 was truncated to 2


@pytest.mark.parametrize("kind", ["is_pg", "reinforce"])
def test_sequence_mask_keeps_rho_seq_or_drops_the_row_by_hand(kind):
    """MIS per sequence (TRL's sequence_mask): a row whose ρ_seq lies in [0.5, 2] weighs ρ_seq at every token;
    a row outside weighs 0 (row 1: ρ_seq = 2.46)."""
    rho0 = math.exp(0.3)
    terms, grad = _sequence_corrected(kind, "sequence_mask")
    logs = _LOGP[0][:2] if kind == "reinforce" else [1.0, 1.0]
    assert terms.loss.item() == pytest.approx(sum(-rho0 * _ADV[0] * x / 5 for x in logs), rel=1e-12)
    assert grad == pytest.approx([-rho0 / 5, -rho0 / 5, 0.0, 0.0, 0.0, 0.0], rel=1e-12)
    assert terms.corrected_tokens.item() == 3


def _whitened_by_hand(centred: list[list[float]], counts: list[list[int]]) -> list[list[float]]:
    """verl's masked_whiten written out: one value per trained token, unbiased variance, rsqrt(var + 1e-8)."""
    tokens = [a for group, ns in zip(centred, counts) for a, n in zip(group, ns) for _ in range(n)]
    mean = sum(tokens) / len(tokens)
    var = sum((x - mean) ** 2 for x in tokens) / (len(tokens) - 1)
    return [[(a - mean) / math.sqrt(var + 1e-8) for a in group] for group in centred]


def test_reinforce_pp_whitens_over_tokens_by_hand():
    """REINFORCE++ (and verl's reinforce_plus_plus_baseline): r - group mean, then (A - mean) / std over the batch's
    trained tokens, each completion counted once per token."""
    counts = [[2, 6, 1], [3, 3, 9]]
    centred = [[2 / 3, -1 / 3, -1 / 3], [1 / 3, 1 / 3, -2 / 3]]
    got = group_advantages([[1, 0, 0], [1, 1, 0]], "reinforce_pp", False, token_counts=counts)
    for row, expected in zip(got, _whitened_by_hand(centred, counts)):
        assert row == pytest.approx(expected, rel=1e-12)


def test_reinforce_pp_counts_the_policys_tokens_of_the_kept_completions():
    from rl_lora.step.advantages import build_rollouts
    from rl_lora.types import Completion

    def completion(length: int, loss_mask: tuple[int, ...] | None = None, finished: bool = True) -> Completion:
        return Completion(0, (1,), tuple(range(length)), (-0.1,) * length, "", finished, 0, loss_mask=loss_mask)

    # A two-turn episode of 6 tokens, 3 of them a tool's answer (trained: 3); a cut completion masked_truncated
    # drops (trained: 0, its group's mean still counts it).
    groups = [[completion(6, (1, 0, 0, 0, 1, 1)), completion(2)], [completion(4), completion(8, finished=False),
                                                                   completion(1)]]
    rollouts = build_rollouts(["a", "b"], groups, [1.0, 0.0, 1.0, 1.0, 0.0], "reinforce_pp", False,
                              mask_truncated=True)
    expected = _whitened_by_hand([[0.5, -0.5], [1 / 3, 1 / 3, -2 / 3]], [[3, 2], [4, 0, 1]])
    assert [r.advantage for r in rollouts] == pytest.approx(expected[0] + [expected[1][0], expected[1][2]],
                                                            rel=1e-12)


def test_cispo_by_default_clips_its_is_weight_from_above_only_by_hand():
    """MiniMax-M1's CISPO: -sg(min(r, 1 + ε_high)) A log π, no lower bound; algo.loss=cispo's default lower clip is
    the paper's. Row 0 (A = 1): r = e^-3 (far below 1), e^0.5 (clipped to 1.28), pad; row 1 (A = -2): r = e^-2."""
    from rl_lora.config import AlgoConfig

    logp = [[-1.0, -2.0, -0.3], [-0.5, 0.0, 0.0]]
    log_r = [[-3.0, 0.5, 2.0], [-2.0, 0.0, 0.0]]
    mask, adv = [[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]], [1.0, -2.0]
    logprobs = torch.tensor(logp, dtype=torch.float64, requires_grad=True)
    sampler = logprobs.detach() - torch.tensor(log_r, dtype=torch.float64)
    m = torch.tensor(mask, dtype=torch.float64)
    terms = policy_loss("cispo", logprobs, sampler, torch.tensor(adv, dtype=torch.float64), m, m / 3,
                        clip_eps=AlgoConfig(loss="cispo").clip_low, clip_eps_high=0.28)
    terms.loss.backward()
    tokens = [(i, t) for i in range(2) for t in range(3) if mask[i][t]]
    weight = {(i, t): min(math.exp(log_r[i][t]), 1.28) for i, t in tokens}  # e^-3 = 0.0498 stays, not 0.8
    assert terms.loss.item() == pytest.approx(sum(-weight[k] * adv[k[0]] * logp[k[0]][k[1]] / 3 for k in tokens),
                                              rel=1e-12)
    grad = [-weight[(i, t)] * adv[i] / 3 if mask[i][t] else 0.0 for i in range(2) for t in range(3)]
    assert logprobs.grad.flatten().tolist() == pytest.approx(grad, rel=1e-12)
    assert terms.clipped_tokens.item() == 1  # only e^0.5, from above


def test_ppo_with_clip_eps_low_1_has_no_lower_bound_by_hand():
    # A = -1, r = e^-3: ε_low = 0.2 takes min(r A, 0.8 A) = -0.8 (clipped, no gradient); ε_low = 1 keeps -r A.
    r = math.exp(-3.0)
    for low, value, grad in ((0.2, 0.8, 0.0), (1.0, r, r)):
        logprobs = torch.tensor([[-3.0]], dtype=torch.float64, requires_grad=True)
        terms = policy_loss("ppo", logprobs, torch.zeros(1, 1, dtype=torch.float64), torch.tensor([-1.0]),
                            torch.ones(1, 1), torch.ones(1, 1), clip_eps=low, clip_eps_high=0.2)
        terms.loss.backward()
        assert (terms.loss.item(), logprobs.grad.item()) == pytest.approx((value, grad), rel=1e-12)


def test_sequence_correction_leaves_padding_and_tool_tokens_finite():
    # Padding and an environment's tokens carry the learner's log-prob against a sampler's 0: log r = -100 there
    # (r = 0 in float32). The row's weight must not reach them as e^100 = inf: 0 x inf would make the loss NaN.
    logprobs = torch.tensor([[-0.1, -100.0]], requires_grad=True)
    for correction in ("sequence_truncate", "sequence_mask"):
        terms = policy_loss("is_pg", logprobs, torch.zeros(1, 2), torch.tensor([1.0]), torch.tensor([[1.0, 0.0]]),
                            torch.tensor([[1.0, 0.0]]), is_correction=correction, is_cap=2.0)
        assert terms.loss.item() == pytest.approx(-math.exp(-0.1), rel=1e-6)
