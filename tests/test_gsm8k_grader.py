
import pytest

from envs.sample import Sample
from rewards.gsm8k import extract_final_number, gsm8k_reward
from tests.degenerate import COMMON_1MB, repeat_to_1mb

MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


@pytest.mark.parametrize("text, number", [
    ("so she has 9 left.\n#### 18", "18"),
    ("#### 1,234", "1234"),
    ("Thus the total is $\\boxed{42}$.", "42"),
    ("The answer is 17.", "17"),
    ("The final answer is: -3", "-3"),
    ("A: 5", "5"),
    ("**Answer:** $1,234.00", "1234"),
    ("First 3 apples, then 4 apples, then 12 pears", "12"),
    ("express the answer as a percentage: 2 / 8 * 100% = 50%\nA: 50", "50"),
])
def test_finds_the_final_number(text, number):
    assert extract_final_number(text) == extract_final_number(number)


def test_no_number_scores_zero():
    assert extract_final_number("I do not know") is None
    assert gsm8k_reward("I do not know", Sample("s", "q", "3")) == 0.0


def test_exact_comparison_not_approximate():
    sample = Sample("s", "q", "1234")
    assert gsm8k_reward("The answer is 1,234.00", sample) == 1.0
    assert gsm8k_reward("The answer is 1234.01", sample) == 0.0


def test_agrees_with_upstream_labels(shared_data):
    """5,276 real model solutions with upstream is_correct labels; the grader must agree on >= 99.9 %."""
    from scripts.check_graders import gsm8k_labels

    labels = gsm8k_labels(shared_data)
    assert labels["total"] == 5276
    assert labels["agreement"] >= 0.999, labels["disagreements"][:10]


def score(completion: str, reference: str) -> float:
    return gsm8k_reward(completion, Sample("s", "q", reference))


@pytest.mark.parametrize("completion, stated, other", [
    ("The answer is 12 + 30 = 42 cookies.", "42", "12"),
    ("The answer is: after 4 hours at 15 km/h she rode 60 km.", "60", "4"),
    ("#### 5 + 7 = 12", "12", "5"),
    ("So $\\boxed{12 + 30 = 42}$.", "42", "12"),
    ("A: 3 * 4 = 12 apples", "12", "3"),
    ("The answer is 42 (6 boxes of 7).", "42", "6"),  # an aside in parentheses is not the result
    ("The answer is 17. Check: 17 * 2 = 34", "17", "34"),  # the sentence that states it ends at its full stop
])
def test_the_answer_is_the_result_the_cue_states(completion, stated, other):
    """Class 1: after an answer cue, the result the span states (after its last `=`, else its last number), and
    not another number of the span."""
    assert score(completion, stated) == 1.0 and score(completion, other) == 0.0


@pytest.mark.parametrize("completion, reference, expected", [
    ("so x = 9/5", "9", 0.0),
    ("so x = 9/5", "1.8", 1.0),
    ("The answer is $-\\frac{3}{14}$", "3", 0.0),
    ("The answer is \u2212\\frac{3}{14}", "-3", 0.0),
    ("The answer is \u22125", "5", 0.0),
    ("The answer is \u22125", "-5", 1.0),
    ("$\\boxed{3, 5}$", "3", 0.0),  # a hedge is not an answer
    ("$\\boxed{3, 5}$", "5", 0.0),
    ("The answer is 3 or 5.", "3", 0.0),
    ("$\\boxed{3}$", "3", 1.0),
    ("The answer is 1.5e3", "1.5", 0.0),
    ("The answer is 1.5e3", "1500", 1.0),
    ("$\\boxed{1.5 \\times 10^{3}}$", "1500", 1.0),
    ("The answer is 2 500 dollars", "2", 0.0),
    ("The answer is 2 500 dollars", "2500", 1.0),
    ("The answer is 2\u2009500", "2500", 1.0),
    ("$\\boxed{1\\,000}$", "1000", 1.0),
    ("$\\boxed{10{,}000}$", "10000", 1.0),
    ("$\\boxed{\\frac{9}{5}}$", "9", 0.0),
])
def test_numbers_are_read_whole_and_compared_exactly(completion, reference, expected):
    """Class 2: fractions (plain and LaTeX), signs and the Unicode minus, scientific notation and space or thin-space
    thousands are read as one number; a listed answer scores 0."""
    assert score(completion, reference) == expected


def test_latex_fraction_is_read_as_its_value():
    assert extract_final_number("The answer is $-\\frac{3}{14}$") == extract_final_number("x = -3/14")
    assert extract_final_number("x = -3/14") * 14 == -3


DEGENERATE_1MB = {
    **COMMON_1MB,
    "newlines_then_A": repeat_to_1mb("\n")[:-4] + "A: 7",
    "boxed_nested": repeat_to_1mb("\\boxed{")[: 7 << 17] + repeat_to_1mb("}", 1 << 17),
    "the_answer_is": repeat_to_1mb("The answer is "),
    "frac_open": repeat_to_1mb("\\frac{"),
    # the answer-sentence grammar (rewards.answer_sentence): long expressions, asides, check lines, full-width text
    "sum_chain": "The answer is " + repeat_to_1mb("1 + "),
    "boxed_dollars": "\\boxed{" + repeat_to_1mb("$1 ") + "}",
    "parentheses": "The answer is " + repeat_to_1mb("(1) "),
    "check_lines": repeat_to_1mb("verify the answer: "),
    "full_width": repeat_to_1mb("\uff17 "),
    "modifiers": "The answer is: " + repeat_to_1mb("after 1 "),
    "abbreviations": "The answer is " + repeat_to_1mb("sq. "),
    # issue 37's principles: number words, labels and headings, Unicode forms, unit adjectives, compounds, clauses
    "number_words": "The answer is " + repeat_to_1mb("twenty-one and "),
    "one_words": repeat_to_1mb("one "),
    "word_hyphens": "The answer is " + repeat_to_1mb("five-"),
    "headings": repeat_to_1mb("### Final Answer\n"),
    "bold_labels": repeat_to_1mb("**Answer:** "),
    "label_lines_then_number": repeat_to_1mb("**Final Answer**\n\n")[:-2] + "7",
    "superscripts": "The answer is 7" + repeat_to_1mb("\u00b2"),
    "vulgar_fractions": "The answer is " + repeat_to_1mb("3\u00bd "),
    "unit_adjectives": "The answer is " + repeat_to_1mb("7-meter "),
    "compounds": "The answer is " + repeat_to_1mb("3 hours and 20 minutes and "),
    "subordinate_clauses": "The answer is: he made 7 " + repeat_to_1mb("if he sells "),
    "conclusions": "The answer is 7 " + repeat_to_1mb("so 1 "),
    "inner_cues": repeat_to_1mb("the answer is 7? "),
    "remarks": repeat_to_1mb("Note: the answer is based on 7. "),
    "equals_in_clause": "The answer is 1 " + repeat_to_1mb("= 1, so "),
}


def graded_within(reward, completion: str, sample: Sample, cap_s: float = 20.0) -> float:
    """Seconds the reward takes; a reward still running after cap_s is interrupted and fails the test."""
    import signal
    import time

    def overran(*_):
        raise TimeoutError(f"still grading after {cap_s:g} s")

    previous = signal.signal(signal.SIGALRM, overran)
    signal.setitimer(signal.ITIMER_REAL, cap_s)
    try:
        start = time.perf_counter()
        reward(completion, sample)
        return time.perf_counter() - start
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("reward_name", ["gsm8k", "format"])
@pytest.mark.parametrize("case", sorted(DEGENERATE_1MB))
def test_rewards_are_linear_in_the_completion_at_1mb(reward_name, case):
    """Class 3: a 1 MB degenerate completion is graded well under a second (the `A:` pattern used to backtrack
    quadratically over newlines: 64k of them took 35 s)."""
    from rewards.format import format_reward

    reward = {"gsm8k": gsm8k_reward, "format": format_reward}[reward_name]
    assert graded_within(reward, DEGENERATE_1MB[case], Sample("s", "q", "7")) < 1.0
