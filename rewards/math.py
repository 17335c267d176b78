"""MATH grader: the model's final answer is symbolically equivalent to the reference (math-verify).

math-verify's own timeout uses SIGALRM, which raises outside a main thread (inside Ray actors and thread pools
it would fail on every answer). Here its timeout is off, and the comparison runs in a sandbox child process
that is killed when it overruns: a pathological answer scores 0 after at most `MATH_TIMEOUT_S`, from any thread.
"""
from __future__ import annotations

import threading

from envs.sample import Sample
from rewards.sandbox import Sandbox, SandboxTimeout

MATH_TIMEOUT_S = 5.0
_sandbox: Sandbox | None = None
_sandbox_lock = threading.Lock()


def answers_equivalent(reference: str, completion: str) -> bool:
    """Runs in the sandbox child. True when the completion's final answer equals the reference."""
    import logging

    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    # It warns that its timeout is off: that is deliberate, the sandbox owns the timeout.
    logging.getLogger("math_verify").setLevel(logging.ERROR)

    gold = parse(f"$\\boxed{{{reference}}}$", extraction_config=[LatexExtractionConfig()], parsing_timeout=None)
    if not gold:  # a plain-text reference such as "12" or "(1, 2)"
        gold = parse(reference, parsing_timeout=None)
    predicted = parse(completion, extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
                      parsing_timeout=None)
    if not (gold and predicted and verify(gold, predicted, timeout_seconds=None)):
        return False
    return not _distinct_exact_numbers(gold[0], predicted[0])


def _distinct_exact_numbers(gold, predicted) -> bool:
    """math-verify compares exact expressions numerically with chop=True, so distinct tiny numbers such as
    1/2004! and 1/2006! compare equal. Two exact (float-free, symbol-free) numbers must be equal exactly."""
    import sympy

    exact = [isinstance(x, sympy.Expr) and not x.free_symbols and not x.atoms(sympy.Float) for x in (gold, predicted)]
    if not all(exact):
        return False
    gold_value, predicted_value = gold.doit(), predicted.doit()
    return bool(gold_value.is_Rational and predicted_value.is_Rational and gold_value != predicted_value)


def _shared_sandbox() -> Sandbox:
    global _sandbox
    with _sandbox_lock:
        if _sandbox is None:
            _sandbox = Sandbox()
        return _sandbox


def math_reward(completion: str, sample: Sample, timeout: float = MATH_TIMEOUT_S) -> float:
    try:
        equal = _shared_sandbox().call("rewards.math:answers_equivalent", (sample.answer, completion), timeout)
    except SandboxTimeout:
        # A comparison that does not finish is not a proof of equality: 0, by the grader's own rule.
        return 0.0
    return float(equal)
