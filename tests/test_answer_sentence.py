"""The GSM8K grader's reading of an answer sentence, class by class, in both directions: for each class a completion
that must score 1 against what it states, and a near twin (or the same completion against the tempting wrong
number) that must score 0. The previous rounds' tables stay in tests/test_gsm8k_grader.py and hold too."""
import pytest

from envs.sample import Sample
from rewards.answer_sentence import read_statement
from rewards.gsm8k import explain, gsm8k_reward


def score(completion: str, reference: str, question: str = "q") -> float:
    return gsm8k_reward(completion, Sample("s", question, reference))


# (completion, what it states: scores 1, the tempting wrong reading: scores 0)
CLASSES = {
    "N1 a number after the stated result": [
        ("The answer is 64 pens, one for each of the 8 tables.", "64", "8"),
        ("The answer is 9 laps in 3 days.", "9", "3"),
        ("The answer is 14, not 11.", "14", "11"),
        ("The answer is 27, since each box holds 9.", "27", "9"),
        ("The answer is: after 4 hours at 15 km/h she rode 60 km.", "60", "4"),  # the statement's own number
        ("The answer is: After 3 days, he has 27 eggs.", "27", "3"),  # an opening clause is an aside
    ],
    "N2 an = inside a parenthesised aside": [
        ("The answer is 6 (since 3 x 6 = 18).", "6", "18"),
        ("The answer is 42 (6 boxes of 7 = 42 cookies).", "42", "7"),
    ],
    "N3 LaTeX \\( \\) is math, not an aside": [
        ("The answer is \\(36\\) eggs (3 trays of 12).", "36", "12"),
        ("The answer is \\(5 + 7 = 12\\).", "12", "5"),
    ],
    "N4 a later check line does not override the statement": [
        ("The answer is 20.\nVerifying the answer: 20 / 4 = 5", "20", "5"),
        ("The answer is 20.\nChecking the final answer: 20 - 15 = 5", "20", "5"),
    ],
    "N5 exponents of units are not answers": [
        ("The answer is 96 m^2.", "96", "2"),
        ("So the volume is $\\boxed{75 \\text{ cm}^3}$.", "75", "3"),
    ],
    "N6 an unevaluated expression is evaluated exactly": [
        ("The answer is 4 + 9.", "13", "9"),
        ("The answer is 3 \\times 4.", "12", "4"),
        ("The answer is 5 times 6 equals 30.", "30", "6"),
    ],
    "N7 the same value restated is not a hedge": [
        ("The answer is $2,500, that is 2500 dollars.", "2500", "2"),
        ("$\\boxed{2500 \\text{ or } 2,500}$", "2500", "2"),
    ],
    "N9 a sign followed by a space": [
        ("$\\boxed{- 12}$", "-12", "12"),
        ("The answer is \u2212 7.", "-7", "7"),
    ],
    "a chained computation goes on from the stated value": [
        ("The answer is: Janet sells 16 - 3 - 4 = 9 duck eggs, making 9 * 2 = $18 every day.", "18", "9"),
        ("The answer is 12 + 30 = 42 cookies.", "42", "12"),
    ],
    "numbers read as a reader reads them": [
        ("The answer is 3 100-page books.", "3", "3100"),
        ("The answer is \uff0d\uff17.", "-7", "7"),  # full-width minus and digit
        ("The answer is 2 1/2 hours.", "2.5", "0.5"),
        ("The answer is $2.5 million.", "2500000", "2"),
        ("The answer is 2^{10}.", "1024", "2"),
    ],
}


@pytest.mark.parametrize("completion, stated, wrong", [case for cases in CLASSES.values() for case in cases],
                         ids=[f"{name}: {case[0][:40]}" for name, cases in CLASSES.items() for case in cases])
def test_the_stated_answer_scores_1_and_the_tempting_number_0(completion, stated, wrong):
    assert score(completion, stated) == 1.0, explain(completion)
    assert score(completion, wrong) == 0.0, explain(completion)


# (completion, a reference each alternative might be: every one scores 0)
HEDGES = [
    ("The answer is 6-8 hours.", ("6", "8")),
    ("The answer is 6 to 8.", ("6", "8")),
    ("The answer is x = 3 or x = 5.", ("3", "5")),
    ("$\\boxed{3, 5}$", ("3", "5")),
    ("The answer is 3 or 5.", ("3", "5")),
    ("$\\boxed{10^{10^{10}}}$", ("10",)),  # too large to be an answer: equal to nothing
    ("The answer is 4 + x.", ("4",)),  # an expression with an unknown
]


@pytest.mark.parametrize("completion, references", HEDGES)
def test_hedges_and_unreadable_answers_score_0_against_every_alternative(completion, references):
    for reference in references:
        assert score(completion, reference) == 0.0, explain(completion)


@pytest.mark.parametrize("completion, right", [
    ("The answer is 16 - 10 = 6.", "6"),  # a subtraction that states its result is not a range
    ("The answer is 10-4.", "6"),  # a hyphen between falling numbers is a subtraction
    ("The answer is: the price went from 5 to 8 dollars.", "8"),  # from A to B is a change, not a hedge
])
def test_near_twins_of_hedges_are_answers(completion, right):
    assert score(completion, right) == 1.0, explain(completion)


# Issue 37: the principles, each in both directions, on forms written here (not the issue's own examples).
PRINCIPLES = {
    "cues: a heading or bold label opens the statement (same line or next)": [
        ("**Answer: 45 marbles**\n\nHe had 12 and bought 33 more.", "45", "33"),
        ("## Final Answer\n\n**$1,280**\n\nThe 16 boxes cost $80 each.", "1280", "80"),
        ("#### Final Answer\nShe walks 14 miles.\n\nThat is 2 miles a day for 7 days.", "14", "7"),
        ("Work: 5 + 6 = 11\n**Final Answer:** 11 pears, 2 of them ripe", "11", "2"),
    ],
    "cues: a remark or a question after the statement never re-opens it": [
        ("The answer is 48.\n\nNote: the answer is based on 6 rows of 8.", "48", "8"),
        ("The answer is 48.\nIn summary, the answer is derived from 6 rows.", "48", "6"),
        ("Is the answer 40? Let me recount: 6 x 8 = 48. The answer is 48.", "48", "40"),
        ("The answer is 48.\nThe answer is correct because 6 x 8 = 48 and not 40.", "48", "40"),
    ],
    "quantities: number words are values": [
        ("4 trays of 9.\nThe answer is thirty-six.", "36", "9"),
        ("The answer is two hundred and five.", "205", "200"),
        ("The answer is a dozen, 2 short of the 14 she wanted.", "12", "14"),
        ("The answer is Seventy (70) stamps.", "70", "7"),
    ],
    "quantities: unit adjectives and unit exponents are never values": [
        ("The answer is: the 400-meter track takes 95 seconds.", "95", "400"),
        ("The answer is 7 of the 5-gallon jugs.", "7", "5"),
        ("The answer is 81 cm\u00b2.", "81", "2"),
        ("The answer is 64 ft^{2}.", "64", "2"),
    ],
    "quantities: vulgar fractions and mixed numbers are one value": [
        ("The answer is 4\u00bd hours.", "4.5", "41"),
        ("The answer is \u00bc of the pie.", "0.25", "4"),
        ("The answer is 3 and 3/4 cups.", "3.75", "3"),
    ],
    "quantities: a compound quantity is one value, never its first part": [
        ("The answer is 2 hours and 15 minutes.", "135", "2"),
        ("The answer is 5 feet 4 inches.", "64", "5"),
    ],
    "the conclusion wins over an earlier `=` and the subject's count": [
        ("The answer is: 12 x 4 = 48 cans are packed, so the shop earns $96.", "96", "48"),
        ("The answer is: she read 30 pages on Monday, therefore 75 pages in all.", "75", "30"),
        ("The answer is: 6 crates of 10 bottles hold 60 bottles.", "60", "6"),
        ("The answer is: at $3 each, 9 tickets cost $27.", "27", "9"),
    ],
    "modifier phrases (gerunds, conditions) are not what a sentence asserts": [
        ("The answer is: they earned a profit of $250 after selling 40 cakes.", "250", "40"),
        ("The answer is: a loss of $18 if she returns 6 books.", "18", "6"),
    ],
    "restatements in another notation are not hedges": [
        ("The answer is $360 in 8 weeks, i.e. $45 per week.", "360", "45"),
        ("The answer is 1/5 or 20%.", "0.2", "5"),
        ("The answer is 2 and 1/2 cups.", "2.5", "2"),
    ],
}


@pytest.mark.parametrize("completion, stated, wrong", [case for cases in PRINCIPLES.values() for case in cases],
                         ids=[f"{name}: {case[0][:40]}" for name, cases in PRINCIPLES.items() for case in cases])
def test_each_principle_reads_the_stated_answer_and_not_the_tempting_one(completion, stated, wrong):
    assert score(completion, stated) == 1.0, explain(completion)
    assert score(completion, wrong) == 0.0, explain(completion)


def test_the_question_is_not_evidence_about_which_number_a_statement_asserts():
    """Issue 37 removed the rule that let a quantity the question gives yield to another (C4). The earlier table
    here, "3 boxes hold 36 apples" read as 3 without the question, contradicts the conclusion principle (its
    predicate asserts 36) and is replaced by this one: the reading is the same with or without the question."""
    completion = "The answer is 8 apples for each child, 32 apples in all."
    for question in ("Each child gets 8 apples and there are 4 children. How many apples does each child get?", "q"):
        assert score(completion, "8", question) == 1.0 and score(completion, "32", question) == 0.0
    completion = "The answer is: 3 boxes hold 36 apples."
    for question in ("Tom has 3 boxes with 12 apples each. How many apples?", "q"):
        assert score(completion, "36", question) == 1.0 and score(completion, "3", question) == 0.0


def test_a_restatement_in_another_notation_is_one_quantity_in_either():
    """"0.6 or 60%" states one quantity: a reference in either notation matches it when the question counts in
    percent (as "$4 million" counts in millions only then: a restatement appended to any answer must not pay)."""
    completion = "The answer is: she saved $210 / $350 = 0.60 or 60% off."
    question = "A $350 dress costs $140 on sale. What percent did she save?"
    assert score(completion, "60", question) == 1.0 and score(completion, "0.6", question) == 1.0, explain(completion)
    assert score(completion, "350", question) == 0.0 and score(completion, "6", question) == 0.0
    assert score("The answer is 18 or 1800%.", "1800", "How many apples are left?") == 0.0
    assert score("The answer is 18 or 1800%.", "18", "How many apples are left?") == 1.0
    assert score("The answer is 3 or 5.", "5") == 0.0  # different values stay a hedge


@pytest.mark.parametrize("completion, references", [
    ("The answer is 12 or 13 apples.", ("12", "13")),
    ("The answer is 30, 32.", ("30", "32")),
    ("**Answer:** 7, 9", ("7", "9")),
])
def test_what_stays_ambiguous_abstains(completion, references):
    for reference in references:
        assert score(completion, reference) == 0.0, explain(completion)
    assert "hedge" in explain(completion) or "unreadable" in explain(completion)


def test_a_reading_names_its_rule_and_every_candidate():
    reading = read_statement("64 pens, one for each of the 8 tables.")
    assert reading.value == 64 and reading.rule == "the value the statement opens with"
    assert [c.text for c in reading.candidates] == ["64", "8"]
    assert reading.candidates[0].note == "read"


def test_a_scale_word_counts_in_its_own_unit_only_when_the_question_does():
    """`$4 million` is 4,000,000; it is 4 only for a question that counts in millions (else a policy could collect
    reward by appending "million" to any answer)."""
    completion = "The answer is: There is 32 - 28 = $4 million left."
    assert score(completion, "4000000") == 1.0
    assert score(completion, "4", "A city has $32 million and spends $28 million. How many millions are left?") == 1.0
    assert score(completion, "4", "A city has 32 parks and closes 28. How many are left?") == 0.0


def test_restating_the_questions_own_arithmetic_is_not_an_answer():
    """Evaluating "4 + 9" is right for an answer that computes; for the question's own expression it would pay a
    policy for copying the question (the arithmetic task's grader is this one)."""
    assert score("The answer is 23 + 45.", "68", "What is 23 + 45?") == 0.0
    assert score("The answer is 23 + 45 = 68.", "68", "What is 23 + 45?") == 1.0
    assert score("The answer is 4 + 9.", "13", "Tom has 4 apples and buys some more. How many?") == 1.0


def test_a_reference_that_is_not_a_number_is_logged_once_per_process(caplog):
    from rewards import gsm8k

    reference = "seventeen (issue 37 test)"
    with caplog.at_level("WARNING", logger="rewards.gsm8k"):
        scores = [gsm8k.gsm8k_reward("The answer is 17.", Sample(f"s{i}", "q", reference)) for i in range(3)]
    assert scores == [0.0, 0.0, 0.0]
    assert sum(reference in record.getMessage() for record in caplog.records) == 1


def _later_forms() -> list[tuple[str, str, str]]:
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parent / "fixtures" / "later_answer_forms.json"
    return [(c["completion"], c["stated"], c["tempting"]) for c in json.loads(path.read_text())["cases"]]


@pytest.mark.parametrize("completion, stated, tempting", _later_forms())
def test_statements_written_after_the_principles_read_as_they_state(completion, stated, tempting):
    """Forms written after the principles were coded (tests/fixtures/later_answer_forms.json), both directions."""
    assert score(completion, stated) == 1.0, explain(completion)
    assert score(completion, tempting) == 0.0, explain(completion)
