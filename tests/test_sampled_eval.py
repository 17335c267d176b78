"""Sampled evaluation: the pass@k estimator against enumeration, the majority vote and its tie rule, the grader's
answers, and `rl-lora eval` / a run's evaluation with eval.samples=N on the real 260K model."""
import gzip
import json
from collections import Counter
from fractions import Fraction
from itertools import combinations

import pytest

from envs.sample import Sample
from rewards.gsm8k import gsm8k_grade, gsm8k_reward
from rewards.protocol import Graded, ScoredBatch
from rewards.scoring import make_scorer
from rl_lora.cli import main
from rl_lora.step.evaluate import _calls
from rl_lora.step.sampled import ProblemTally, default_ks, majority_score, pass_at_k
from tests.conftest import DATA, STORIES_260K


def brute_force_pass_at_k(n: int, c: int, k: int) -> Fraction:
    """The share of all k-subsets of n samples (the first c correct) that hold a correct one."""
    subsets = list(combinations(range(n), k))
    return Fraction(sum(any(i < c for i in subset) for subset in subsets), len(subsets))


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_equals_enumerating_every_subset(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == brute_force_pass_at_k(n, c, k), (n, c, k)


def test_pass_at_k_is_exact_where_floats_cancel_and_refuses_k_above_n():
    # 1 correct in 1000: pass@999 is 999/1000 exactly; pass@1 is c/n.
    assert pass_at_k(1000, 1, 999) == Fraction(999, 1000)
    assert pass_at_k(1000, 37, 1) == Fraction(37, 1000)
    assert pass_at_k(4000, 1, 2000) == Fraction(1, 2)  # C(3999, 2000) has ~1200 digits: no overflow
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_default_ks_are_the_powers_of_two_and_n():
    assert default_ks(1) == (1,)
    assert default_ks(64) == (1, 2, 4, 8, 16, 32, 64)
    assert default_ks(5) == (1, 2, 4, 5)


def test_majority_vote_and_its_tie_rule():
    assert majority_score(Counter(a=3, b=2), {"a"}) == 1
    assert majority_score(Counter(a=3, b=2), {"b"}) == 0
    # A tie splits evenly: the share of the tied leaders that are right, whatever order the votes came in.
    assert majority_score(Counter(a=2, b=2), {"a"}) == Fraction(1, 2)
    assert majority_score(Counter(b=2, a=2), {"a"}) == Fraction(1, 2)
    assert majority_score(Counter(a=1, b=1, c=1), {"c"}) == Fraction(1, 3)
    assert majority_score(Counter(a=1, b=1, c=2), {"a", "b"}) == 0
    assert majority_score(Counter(), set()) == 0  # no answer read: no vote


def test_a_tally_leaves_unread_answers_out_of_the_vote_and_failed_samples_out_of_the_counts():
    tally = ProblemTally()
    for reward, answer in [(1.0, "5"), (0.0, None), (0.0, None), (0.0, None), (None, "7"), (0.0, "6")]:
        tally.add(reward, answer)
    assert (tally.graded, tally.correct, dict(tally.votes)) == (5, 1, {"5": 1, "6": 1})
    assert tally.majority == Fraction(1, 2)  # "5" and "6" tie; the three unread answers do not vote for "nothing"


def test_the_gsm8k_grader_returns_what_it_read_with_the_rewards_score():
    rows = [json.loads(line) for line in gzip.open(DATA / "gsm8k" / "example_model_solutions.jsonl.gz")][:200]
    for row in rows:
        sample = Sample("q", row["question"], row["ground_truth"].split("####")[-1].strip())
        for solution in (row["6b_finetuning"], row["175b_finetuning"]):
            completion = solution["solution"]
            graded = gsm8k_grade(completion, sample)
            assert graded.score == gsm8k_reward(completion, sample)
            assert graded.score == 0.0 or graded.answer is not None
    five = Sample("a", "How many?", "5")
    assert gsm8k_grade("The answer is 5.", five).answer == gsm8k_grade("so\n#### 5.0", five).answer == "5"
    assert gsm8k_grade("no number here", five) == Graded(0.0, None)
    # Where the question counts in millions, "$4 million" matches 4 and 4,000,000 does not: two answers, not one.
    millions = Sample("m", "How many million dollars did it earn?", "4")
    assert gsm8k_grade("The answer is $4 million.", millions) == Graded(1.0, "4 million")
    assert gsm8k_grade("The answer is 4000000.", millions) == Graded(0.0, "4000000")


def test_scorers_carry_the_answers_read_and_a_float_reward_reads_none():
    samples = [Sample("a", "q", "5"), Sample("b", "q", "5")]
    scorer = make_scorer(["gsm8k", "format"], [1.0, 0.1])
    scored = scorer.score(["The answer is 5.", "I think 7"], samples)
    assert scored.rewards == [1.1, 0.0] and scored.answers == ["5", "7"]
    plain = make_scorer(["tests.reward_fixtures:exact"], workers=1)
    try:
        assert plain.score(["5", "6"], samples).answers is None
    finally:
        plain.close()
    read = make_scorer(["gsm8k"]).score(["The answer is 5.", "I think 7"], samples)
    assert ScoredBatch.join([read, ScoredBatch([0.0], [])]).answers == ["5", "7", None]


@pytest.mark.parametrize("problems, n, batch_size", [(5, 1, 2), (5, 4, 8), (3, 64, 8), (7, 10, 4), (2, 3, 32)])
def test_each_problem_gets_its_n_samples_in_calls_of_at_most_batch_size(problems, n, batch_size):
    drawn = Counter()
    for indices, take in _calls(problems, n, batch_size):
        assert len(indices) * take <= max(batch_size, take) and take <= batch_size
        drawn.update({i: take for i in indices})
    assert drawn == {i: n for i in range(problems)}


def eval_cli(capsys, tmp_path, *extra):
    code = main(["eval", "--model", str(STORIES_260K), "--task", "arithmetic", "--limit", "3",
                 "--reward", "tests.reward_fixtures:first_word", "--set", "eval.max_new_tokens=6",
                 "--out", str(tmp_path / "e.jsonl"), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_with_four_samples_reports_pass_at_k_and_maj_from_its_per_problem_counts(tmp_path, capsys):
    code, out, err = eval_cli(capsys, tmp_path, "--set", "eval.samples=4", "--set", "eval.greedy=true",
                              "--set", "eval.batch_size=3")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    records = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["samples"] == 4 and sum(r["answers"].values()) <= 4 for r in records)
    assert summary["samples_per_problem"] == 4 and summary["temperature"] == 1.0
    for k in (1, 2, 4):
        expected = sum(pass_at_k(4, r["correct"], k) for r in records) / 3
        assert summary["pass_at_k"][str(k)] == pytest.approx(float(expected))
    assert summary["mean_at_n"] == pytest.approx(sum(r["correct"] for r in records) / 12)  # a 0/1 reward
    for r in records:  # the record's vote, recounted under the tie rule ("Once" is the right answer)
        assert r["majority"] == float(majority_score(Counter(r["answers"]), {"Once"}))
    assert summary["maj_at_n"] == pytest.approx(sum(r["majority"] for r in records) / 3)
    # The greedy pass is the headline, and the records' completions are the greedy ones.
    assert summary["accuracy"] == summary["greedy_accuracy"] == sum(r["reward"] for r in records) / 3
    assert "pass@4" in out and "maj@4" in out and "greedy accuracy" in out
    # The story model does open with a few different words: the samples are not all one completion.
    assert len({answer for r in records for answer in r["answers"]}) > 1


@pytest.mark.parametrize("extra, message", [
    (["--set", "eval.samples=0"], "eval.samples: 0 is out of range; must be >= 1"),
    (["--set", "eval.samples=4", "--set", "eval.temperature=0"], "greedy decoding gives the same completion"),
    (["--set", "eval.samples=4", "--set", "eval.pass_k=1,8"], "each k must be in 1..eval.samples=4"),
    (["--set", "eval.greedy=true"], "set eval.samples > 1"),
])
def test_bad_sampled_eval_settings_are_one_line_before_the_model_loads(tmp_path, capsys, extra, message):
    code, out, err = eval_cli(capsys, tmp_path, *extra)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert "device " not in out and not (tmp_path / "e.jsonl").exists()


def test_a_runs_evaluations_are_sampled_too(tmp_path, capsys):
    code = main(["train", "--set", f"model.name={STORIES_260K}", "--reward", "tests.reward_fixtures:first_word",
                 "--set", "train.steps=1", "--set", "train.eval_size=2", "--set", "eval.max_new_tokens=6",
                 "--set", "rollout.max_new_tokens=6", "--set", "rollout.prompts_per_step=2",
                 "--set", "eval.samples=2", "--set", f"train.runs_dir={tmp_path}", "--set", "train.name=run"])
    capsys.readouterr()
    assert code == 0
    step = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"test/mean@2", "test/pass@1", "test/pass@2", "test/maj@2"} <= set(step)
    assert step["test_accuracy"] == step["test/mean@2"]  # no greedy pass asked: mean@N is the headline
    for name in ("step_0", "step_1"):
        records = [json.loads(line) for line in (tmp_path / "run" / "evals" / f"{name}.jsonl").read_text().splitlines()]
        assert len(records) == 2 and all(r["samples"] == 2 for r in records)
