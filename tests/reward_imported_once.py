"""A user reward module that only test_rewards imports by name: it must be imported in the worker child alone."""
import time

time.sleep(0.5)  # a slow import (sympy, a model, ...)


def reward(completion, sample):
    return float(completion == sample.answer)
