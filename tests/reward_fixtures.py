"""User rewards as a user would write them, imported by name (`tests.reward_fixtures:...`) in the tests."""
import time


def exact(completion, sample):
    return float(completion.strip() == sample.answer)


def says_yes(completion, sample):
    return completion == "yes"


def raises(completion, sample):
    raise RuntimeError("reward bug")


def hangs(completion, sample):
    time.sleep(60)
    return 1.0


def returns_nan(completion, sample):
    return float("nan")


def returns_text(completion, sample):
    return "1.0"


def trl_length(prompts, completions, answer, **kwargs):
    return [float(c == a) for c, a in zip(completions, answer)]


def trl_wrong_length(prompts, completions, **kwargs):
    return [1.0]


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    return {"score": float(solution_str == ground_truth), "source": data_source}


def three_args(a, b, c):
    return 0.0


def mentions_the(completion, sample):
    """The 260K story model writes "the" in about a third of 24-token continuations: room to learn fast."""
    return float("the" in completion)


def slow_exact(completion, sample):
    time.sleep(0.4)
    return float(completion.strip() == sample.answer)


def hangs_on_hang(completion, sample):
    if completion == "hang":
        time.sleep(60)
    return float(completion.strip() == sample.answer)


def dies_on_die(completion, sample):
    if completion == "die":
        import os
        import signal

        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer would
    return float(completion.strip() == sample.answer)
