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


def _log(record: dict) -> None:
    """What a reward received, for the test that named a log file (RL_LORA_TEST_REWARD_LOG)."""
    import json
    import os

    path = os.environ.get("RL_LORA_TEST_REWARD_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")


def verl_compute_score(data_source, solution_str, ground_truth, extra_info=None):
    """verl's signature, as a verl user writes it."""
    _log({"data_source": data_source, "ground_truth": ground_truth, "extra_info": extra_info})
    return float("the" in solution_str)


def trl_accuracy_reward(completions, solution, **kwargs):
    """TRL's accuracy_reward signature: chat completions as message lists, the dataset's columns by keyword."""
    for prompt, answer in zip(kwargs["prompts"], solution):
        _log({"question": prompt[-1]["content"], "solution": answer})
    return [float("the" in completion[0]["content"]) for completion in completions]


def story_task():
    """A Task factory (task.name=tests.reward_fixtures:story_task): prompts the 260K story model can continue."""
    from envs.sample import Sample
    from envs.task import Task

    openings = ["Once upon a time", "The little dog", "Lily saw a", "One day, Tom", "The sun was", "A big red"]
    samples = [Sample(f"story-{i}", text, "the") for i, text in enumerate(openings)]
    return Task(name="stories", train=samples[:4], test=samples[4:], reward="tests.reward_fixtures:mentions_the")


def always_one(completion, sample):
    return 1.0


def constant_for_half(completion, sample):
    """1.0 for every completion of half the prompts (by a hash of the sample's id: a constant group), else
    mentions_the: for DAPO's dynamic sampling, which drops the constant groups."""
    import hashlib

    if hashlib.sha1(sample.id.encode()).digest()[0] % 2 == 0:
        return 1.0
    return mentions_the(completion, sample)


def always_one(completion, sample):
    return 1.0


def first_word(completion, sample):
    """A grader that says what it read: the completion's first word, right when it starts a story ("Once"). The 260K
    story model opens with a handful of words, so N samples of a problem vote on a few answers."""
    from rewards.protocol import Graded

    words = completion.split()
    answer = words[0].strip(".,!?\"'") if words else None
    return Graded(float(answer == "Once"), answer)
