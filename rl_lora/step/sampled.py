"""Sampled evaluation's metrics, from each problem's counts: pass@k (the unbiased estimator of Chen et al. 2021,
computed exactly), mean@N and maj@N (a majority vote over the answers the grader read).

A sample is correct when its reward is full credit (>= 1): binary graders (gsm8k, math, code_tests_all) give 0 or
1, so mean@N, the mean reward, is then pass@1."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from math import comb
from typing import Iterable, Sequence

FULL_CREDIT = 1.0


def pass_at_k(n: int, c: int, k: int) -> Fraction:
    """1 - C(n-c, k) / C(n, k): the chance that k samples drawn without replacement from n, of which c are correct,
    hold a correct one. Python integers are exact at any size, so large n neither overflows nor cancels (the
    float product form of the reference implementation loses digits when the answer is near 1)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@{k} of {c} correct out of {n}: need 0 <= c <= n and 1 <= k <= n")
    return 1 - Fraction(comb(n - c, k), comb(n, k))


def default_ks(n: int) -> tuple[int, ...]:
    """The powers of two up to n, and n itself."""
    ks = [1 << i for i in range(n.bit_length()) if 1 << i <= n]
    return tuple(ks) if ks[-1] == n else (*ks, n)


def majority_score(votes: Counter[str], right: set[str]) -> Fraction:
    """maj@N of one problem: is the most-voted answer right? Samples whose answer the grader could not read do not
    vote; with no vote at all the problem scores 0. Tie rule: when several answers share the most votes, each
    counts equally, so the problem scores the share of them that are right (a fair draw's expected score). The
    result then depends on the votes only, never on the order the samples came in."""
    if not votes:
        return Fraction(0)
    top = max(votes.values())
    leaders = [answer for answer, count in votes.items() if count == top]
    return Fraction(sum(answer in right for answer in leaders), len(leaders))


@dataclass
class ProblemTally:
    """One problem's samples, as counts: what the eval records keep instead of every completion."""
    graded: int = 0  # samples the reward scored (reward.on_error=skip leaves failed ones out)
    correct: int = 0  # ...with full credit
    reward_sum: float = 0.0
    votes: Counter[str] = field(default_factory=Counter)  # answer as the grader read it -> samples giving it
    right: set[str] = field(default_factory=set)  # the answers scored correct

    def add(self, reward: float | None, answer: str | None) -> None:
        if reward is None:
            return
        self.graded += 1
        self.reward_sum += reward
        self.correct += reward >= FULL_CREDIT
        if answer is not None:
            self.votes[answer] += 1
            if reward >= FULL_CREDIT:
                self.right.add(answer)

    @property
    def majority(self) -> Fraction:
        return majority_score(self.votes, self.right)


def mean_pass_at_k(counts: Iterable[tuple[int, int]], k: int) -> float:
    """pass@k over problems given as (graded samples, correct), counting those with at least k graded samples (all
    of them unless the reward failed on some)."""
    scored = [pass_at_k(n, c, k) for n, c in counts if n >= k]
    return float(sum(scored, Fraction(0)) / len(scored)) if scored else 0.0


def sampled_metrics(tallies: Sequence[ProblemTally], ks: Iterable[int],
                    reads_answers: bool) -> tuple[float, dict[str, float], float | None]:
    """(mean@N, {k: pass@k}, maj@N, or None when the reward does not say what answer it read)."""
    graded = sum(t.graded for t in tallies)
    mean_at_n = sum(t.reward_sum for t in tallies) / graded if graded else 0.0
    passes = {str(k): mean_pass_at_k([(t.graded, t.correct) for t in tallies], k) for k in ks}
    majority = float(sum((t.majority for t in tallies), Fraction(0)) / len(tallies)) if reads_answers and tallies \
        else None
    return mean_at_n, passes, majority
