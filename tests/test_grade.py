"""`rl-lora grade`: the score a run would give, what the grader read and the rule that decided; bad input is one
line with exit 2."""
import json

import pytest

from rl_lora.cli import main


def grade(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["grade", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_one_completion_prints_the_score_what_was_read_and_the_rule(capsys):
    code, out, _ = grade(capsys, "--answer", "64", "The answer is 64 pens, one for each of the 8 tables.")
    assert code == 0
    assert out.splitlines()[0] == "score 1 (gsm8k, reference '64')"
    assert "read: '64' = 64" in out and "rule: the value the statement opens with" in out
    assert "candidate" not in out  # the candidates are --explain's
    code, out, _ = grade(capsys, "--answer", "8", "--explain", "The answer is 64 pens, one for each of the 8 tables.")
    assert code == 0 and out.startswith("score 0 ")
    assert "candidate '8' = 8: after the value the statement opens with" in out


def test_a_file_is_graded_line_by_line_with_a_summary(tmp_path, capsys):
    rows = [{"completion": "The answer is 12 + 30 = 42 cookies.", "answer": "42"},
            {"completion": "The answer is 6-8 hours.", "answer": "8"},
            {"completion": "The answer is: 3 boxes hold 36 apples.", "answer": 36,
             "question": "Tom has 3 boxes of 12 apples. How many apples?"}]
    path = tmp_path / "completions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, _ = grade(capsys, "--file", str(path))
    assert code == 0
    assert "line 1: score 1" in out and "line 2: score 0" in out and "line 3: score 1" in out
    assert "hedge" in out and out.strip().endswith("3 completions: mean score 0.6667, 0 failed")


def test_a_user_reward_is_scored_in_its_worker(capsys):
    code, out, _ = grade(capsys, "--reward", "tests.reward_fixtures:mentions_the", "--answer", "x", "the cat")
    assert code == 0 and out.startswith("score 1 (tests.reward_fixtures:mentions_the")


@pytest.mark.parametrize("setup, argv, message", [
    (None, ["--reward", "nope", "--answer", "1", "x"], "reward 'nope'"),
    ("binary", ["--file", "{path}"], "not UTF-8 text"),
    ("no_columns", ["--file", "{path}"], "line 1: no 'completion' or 'answer' column"),
    ("list_completion", ["--file", "{path}"], "line 1: column 'completion' is a list, not text"),
    ("object_answer", ["--file", "{path}"], "line 1: column 'answer' is an object, not text or a number"),
    ("bad_prompt", ["--file", "{path}"], "line 1: the prompt is neither a string nor a list of chat messages"),
    (None, ["The answer is 5."], "give --answer REFERENCE and a completion"),
    (None, ["--file", "/nonexistent/c.jsonl"], "no such file"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, setup, argv, message):
    path = tmp_path / "c.jsonl"
    if setup == "binary":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(128, 256)) * 8)  # an image, say
    elif setup == "no_columns":
        path.write_text('{"text": "a"}\n')
    elif setup == "list_completion":
        path.write_text('{"completion": ["The answer is 5."], "answer": "5"}\n')
    elif setup == "object_answer":
        path.write_text('{"completion": "The answer is 5.", "answer": {"value": 5}}\n')
    elif setup == "bad_prompt":
        path.write_text('{"completion": "The answer is 5.", "answer": "5", "prompt": [{"text": "hi"}]}\n')
    code, out, err = grade(capsys, *[a.format(path=path) for a in argv])
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_a_chat_prompt_is_read_as_a_run_reads_it(tmp_path, capsys):
    """The question inside chat messages is the question: "What is 23 + 45?" restated scores 0 as in a run."""
    chat = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 23 + 45?"}]
    rows = [{"completion": "The answer is 23 + 45.", "answer": "68", "prompt": chat},
            {"completion": "The answer is 23 + 45 = 68.", "answer": "68", "prompt": chat}]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, _ = grade(capsys, "--file", str(path))
    assert code == 0 and "line 1: score 0" in out and "line 2: score 1" in out, out


def test_a_reference_that_is_not_a_number_is_named_once(tmp_path, capsys):
    rows = [{"completion": "The answer is eighteen.", "answer": "eighteen"},
            {"completion": "The answer is 18.", "answer": "eighteen"},
            {"completion": "The answer is 18.", "answer": "18"}]
    path = tmp_path / "refs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, _ = grade(capsys, "--file", str(path))
    assert code == 0
    assert out.count("reference 'eighteen' is not a number: every completion scores 0") == 1, out
    assert "line 1: score 0" in out and "line 2: score 0" in out and "line 3: score 1" in out
