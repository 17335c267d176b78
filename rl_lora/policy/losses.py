"""Policy losses. Pure tensor functions: easy to check by hand."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LossTerms:
    loss: torch.Tensor  # scalar, already divided by the full batch's normaliser
    clipped_tokens: torch.Tensor  # count of tokens whose ratio was clipped (ppo)
    sampler_kl_sum: torch.Tensor  # sum over tokens of KL(sampler || learner), k3 estimator
    base_kl_sum: torch.Tensor  # sum over tokens of KL(learner || base), k3 estimator (0 without a reference)
    corrected_tokens: torch.Tensor  # tokens whose weight the sampler-mismatch correction changed


def kl_estimate(log_p: torch.Tensor, log_q: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(p || q) from samples of p, with log r = log q - log p (Schulman, "Approximating KL
    divergence", 2020): k1 = -log r (unbiased, can be negative), k2 = (log r)^2 / 2 (biased, low variance),
    k3 = r - 1 - log r (unbiased, non-negative)."""
    log_ratio = log_q - log_p
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio ** 2
    if estimator == "k3":
        return torch.exp(log_ratio) - 1 - log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}")


def _sequence_log_ratio(log_ratio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GSPO's length-normalised sequence log-ratio, mean over a row's completion tokens, broadcast to its tokens."""
    mean = (log_ratio * mask).sum(dim=1, keepdim=True) / mask.sum(dim=1, keepdim=True).clamp(min=1)
    return mean.expand_as(log_ratio)


def kl_penalised_advantages(advantages: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor,
                            kl_coef: float) -> torch.Tensor:
    """algo.kl_in=reward: the KL to the base model as a per-token reward, -β kl_t at each completion token, so a
    token's return loses the penalty of itself and every token after it: A_t = A - β Σ_{s>=t} kl_s (the KL-in-reward
    of InstructGPT's PPO and of REINFORCE++, without discount). `kl` carries no gradient; [rows, tokens] out."""
    penalty = (kl.detach() * mask).flip(1).cumsum(1).flip(1)
    return advantages[:, None] - kl_coef * penalty


def _sampler_log_ratio(kind: str, log_ratio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log ρ at the correction's level: each token's own log ρ_t, or (sequence_*) log ρ_seq = Σ_t log ρ_t over the
    row's completion tokens, broadcast to every token of the row."""
    if kind.startswith("sequence"):
        return (log_ratio * mask).sum(dim=1, keepdim=True).expand_as(log_ratio)
    return log_ratio


def _bound_acts(kind: str, rho: torch.Tensor, cap: float, bounds: tuple[float, float]) -> torch.Tensor:
    """Where the correction's bound changes the weight: ρ above the cap (truncate) or outside [low, high] (mask)."""
    if kind.endswith("truncate"):
        return rho > cap
    if kind.endswith("mask"):
        low, high = bounds
        return (rho < low) | (rho > high)
    raise ValueError(f"unknown is_correction {kind!r}")


def mismatch_weight(kind: str, log_ratio: torch.Tensor, mask: torch.Tensor, cap: float,
                    bounds: tuple[float, float], carried_log_ratio: torch.Tensor | None = None) -> torch.Tensor:
    """The factor (no gradient) w / r that gives each token the bounded weight w of the sampler-learner mismatch
    ρ = π_θ / μ in place of the ratio r the loss already carries (unset: the token's own r_t = ρ_t; GSPO passes its
    sequence ratio, REINFORCE a log-ratio of 0). w, per token or per sequence (ρ_seq = exp(Σ_t log ρ_t)):

    - token_truncate / sequence_truncate: min(ρ, C) (truncated IS, TIS: Yao et al. 2025, "Your efficient RL
      framework secretly brings you off-policy RL training"): per sequence, every token of the row weighs
      min(ρ_seq, C), as in TRL and verl;
    - token_mask / sequence_mask: ρ if low <= ρ <= high else 0 (masked IS, MIS / IcePop: tokens or sequences the
      sampler saw too differently carry no loss, the others their IS weight; TRL's *_mask).

    Taken in log space, as ρ_seq of a long completion overflows float32 (exp(89) = inf), and 1 off the mask: a pad
    or tool token's r_t can be e^-100, and a row's w over it would reach the masked loss as 0 x inf = NaN."""
    level = _sampler_log_ratio(kind, log_ratio, mask)
    carried = log_ratio if carried_log_ratio is None else carried_log_ratio
    bounded = torch.clamp(level, max=math.log(cap)) if kind.endswith("truncate") else level
    factor = torch.exp((bounded - carried).masked_fill(mask == 0, 0.0))
    if kind.endswith("truncate"):
        return factor
    return factor.masked_fill(_bound_acts(kind, torch.exp(level), cap, bounds), 0.0)


def policy_loss(kind: str, logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, normaliser: torch.Tensor, *, clip_eps: float = 0.2,
                clip_eps_high: float | None = None, clip_ratio_c: float | None = None,
                base_logprobs: torch.Tensor | None = None, kl_coef: float = 0.0,
                kl_estimator: str = "k3", kl_in: str = "loss", is_correction: str = "none", is_cap: float = 2.0,
                is_bounds: tuple[float, float] = (0.5, 2.0), entropy: torch.Tensor | None = None,
                entropy_coef: float = 0.0) -> LossTerms:
    """The batch-normalised loss of one micro-batch. r_t = π_θ(y_t) / μ(y_t), μ the sampler; A the advantage;
    ε_low = clip_eps, ε_high = clip_eps_high (unset: clip_eps). Every clip acts on π_θ / μ, a trust region around
    the sampler (verl's "bypass mode"), not on π_θ / π_old recomputed by the learner: no second forward pass, and
    the sampler-learner mismatch is clipped with the policy's own change. ε_low = 1 puts the lower clip at 0: no
    lower bound (the ratio is positive), as CISPO's paper sets it.

    - is_pg: -r_t A (importance-sampled policy gradient; on-policy its gradient is -A ∇log π_θ).
    - ppo: -min(r_t A, clip(r_t, 1-ε_low, 1+ε_high) A) (PPO-clip, Schulman et al. 2017; ε_high > ε_low is DAPO's
      clip-higher, Yu et al. 2025); with clip_ratio_c = c > 1, dual-clip for A < 0: min(that, -c A) (Ye et al. 2020).
    - gspo: the same clip on the sequence ratio s = exp(mean_t log r_t), the same for every token of a sequence
      (GSPO, Zheng et al. 2025).
    - cispo: -sg(clip(r_t, 1-ε_low, 1+ε_high)) A log π_θ(y_t): the clipped IS weight without gradient, so every
      token keeps its gradient (CISPO, MiniMax-M1 2025).
    - reinforce: -A log π_θ(y_t), no ratio.

    `normaliser` gives each token its weight (token_weights): the micro-batch losses add up to the batch loss. A KL
    to the base model (kl_coef > 0) is added per token with the chosen estimator (kl_in=loss), or taken from each
    token's return (kl_in=reward: kl_penalised_advantages). `is_correction` bounds the weight the sampler-learner
    mismatch may take (mismatch_weight). With entropy_coef = c > 0, -c H_t is added per token (an entropy bonus:
    `entropy` must carry its gradient).
    """
    base_kl = torch.zeros_like(logprobs)
    if base_logprobs is not None:
        base_kl = kl_estimate(logprobs, base_logprobs, kl_estimator)
    if kl_in == "reward" and base_logprobs is not None:
        adv = kl_penalised_advantages(advantages, base_kl, mask, kl_coef)
    else:
        adv = advantages[:, None]
    high = clip_eps if clip_eps_high is None else clip_eps_high
    log_ratio = logprobs - sampler_logprobs
    ratio = torch.exp(log_ratio)
    clipped = torch.zeros((), device=logprobs.device)
    if kind == "is_pg":
        per_token = -ratio * adv
    elif kind in ("ppo", "gspo"):
        if kind == "gspo":
            ratio = torch.exp(_sequence_log_ratio(log_ratio, mask))
        clipped_ratio = ratio.clamp(1 - clip_eps, 1 + high)
        per_token = -torch.minimum(ratio * adv, clipped_ratio * adv)
        if clip_ratio_c is not None:
            per_token = torch.where(adv < 0, torch.minimum(per_token, -clip_ratio_c * adv), per_token)
        clipped = (((ratio - clipped_ratio).abs() > 0).float() * mask).sum()
    elif kind == "cispo":
        weight = ratio.detach().clamp(1 - clip_eps, 1 + high)
        per_token = -weight * adv * logprobs
        clipped = (((ratio.detach() - weight).abs() > 0).float() * mask).sum()
    elif kind == "reinforce":
        per_token = -logprobs * adv
    else:
        raise ValueError(f"unknown loss {kind!r}")
    corrected = torch.zeros((), device=logprobs.device)
    if is_correction != "none":
        factor, corrected = _mismatch_correction(kind, is_correction, log_ratio.detach(), mask, is_cap, is_bounds)
        per_token = per_token * factor
    if base_logprobs is not None and kl_in == "loss":
        per_token = per_token + kl_coef * base_kl
    if entropy_coef > 0:
        per_token = per_token - entropy_coef * entropy
    with torch.no_grad():
        sampler_kl = kl_estimate(sampler_logprobs, logprobs.detach())
    return LossTerms(
        loss=(per_token * mask * normaliser).sum(),
        clipped_tokens=clipped,
        sampler_kl_sum=(sampler_kl * mask).sum(),
        base_kl_sum=(base_kl.detach() * mask).sum(),
        corrected_tokens=corrected,
    )


def _carried_log_ratio(kind: str, log_ratio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
    """The log of the importance ratio a loss's value carries before any clip, which the mismatch correction
    replaces: GSPO's sequence ratio; none for REINFORCE (its value is -A log π); the token's r_t otherwise."""
    if kind == "gspo":
        return _sequence_log_ratio(log_ratio, mask)
    if kind == "reinforce":
        return torch.zeros_like(log_ratio)
    return None


def _mismatch_correction(kind: str, is_correction: str, log_ratio: torch.Tensor, mask: torch.Tensor, cap: float,
                         bounds: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The factor mismatch_weight gives loss `kind`, and the count of completion tokens whose weight the bound
    changed (truncated or masked: the is_corrected_fraction metric)."""
    factor = mismatch_weight(is_correction, log_ratio, mask, cap, bounds, _carried_log_ratio(kind, log_ratio, mask))
    rho = torch.exp(_sampler_log_ratio(is_correction, log_ratio, mask))
    return factor, (_bound_acts(is_correction, rho, cap, bounds).float() * mask).sum()


def token_weights(completion_mask: torch.Tensor, normalization: str, max_new_tokens: int | None = None) -> torch.Tensor:
    """Each token's weight in the batch loss (see policy_loss); computed once for the whole batch.

    token: 1 / (completion tokens in the batch) (DAPO); sequence: 1 / (rows × the row's tokens) (GRPO); constant:
    1 / (rows × max_new_tokens), the same for every token whatever the lengths (Dr. GRPO, Liu et al. 2025)."""
    if normalization == "token":
        return completion_mask / completion_mask.sum().clamp(min=1)
    if normalization == "constant":
        width = max_new_tokens or completion_mask.shape[1]
        return completion_mask / (completion_mask.shape[0] * width)
    per_row = completion_mask.sum(dim=1, keepdim=True).clamp(min=1)
    return completion_mask / per_row / completion_mask.shape[0]
