import json

import pytest

from envs.sample import Sample
from rewards.gsm8k import extract_final_number, gsm8k_reward

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
    rows = [json.loads(line) for line in open(shared_data / "gsm8k" / "example_model_solutions.jsonl")]
    total, disagreements = 0, []
    for index, row in enumerate(rows):
        reference = row["ground_truth"].rsplit("A:", 1)[1].strip().replace(",", "")
        sample = Sample(f"gsm8k-test-{index}", row["question"], reference)
        for model in MODELS:
            total += 1
            graded = gsm8k_reward(row[model]["solution"], sample) == 1.0
            if graded != row[model]["is_correct"]:
                disagreements.append((index, model))
    assert total == 5276
    assert 1 - len(disagreements) / total >= 0.999, disagreements[:10]
