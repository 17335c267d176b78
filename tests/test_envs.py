import json

import pytest

from envs.arithmetic import ArithmeticSpec, arithmetic_task
from envs.errors import TaskError
from envs.loading import read_jsonl
from envs.render import PromptRenderer
from rewards.gsm8k import gsm8k_reward
from rl_lora.config import TaskConfig
from rl_lora.tasks import load_task


def test_arithmetic_is_seeded_correct_and_disjoint():
    spec = ArithmeticSpec(digits=2, operators="+-*", terms=3, train_size=500, test_size=100, seed=3)
    task, again = arithmetic_task(spec), arithmetic_task(spec)
    assert task.test == again.test and task.train == again.train
    expressions = lambda split: {s.metadata["expression"] for s in split}  # noqa: E731
    assert not expressions(task.train) & expressions(task.test)
    assert len(expressions(task.train)) == 500
    for sample in task.test[:50]:
        a, op1, b, op2, c = sample.metadata["expression"].split()
        assert int(sample.answer) == eval(f"{a}{op1}{b}{op2}{c}")
        assert gsm8k_reward(f"The answer is {sample.answer}.", sample) == 1.0
    assert arithmetic_task(ArithmeticSpec(seed=4, train_size=10, test_size=10)).test != task.test


def test_arithmetic_rejects_impossible_sizes():
    with pytest.raises(TaskError, match="distinct"):
        arithmetic_task(ArithmeticSpec(digits=1, train_size=100, test_size=10))
    with pytest.raises(TaskError, match="operators"):
        arithmetic_task(ArithmeticSpec(operators="/"))


def test_malformed_jsonl_names_the_line(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text('{"question": "q", "answer": "#### 1"}\n{"question": broken}\n')
    with pytest.raises(TaskError, match=r"test.jsonl:2: malformed JSON"):
        read_jsonl(path)


def test_gsm8k_from_a_local_folder(tmp_path):
    for split in ("train", "test"):
        rows = [{"question": f"{split} q{i}", "answer": f"work\n#### 1,00{i}"} for i in range(3)]
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = load_task(TaskConfig(name="gsm8k", path=str(tmp_path)))
    assert [s.answer for s in task.test] == ["1000", "1001", "1002"]
    assert task.test[0].prompt.startswith("test q0\n")
    (tmp_path / "test.jsonl").write_text('{"question": "q"}\n')
    with pytest.raises(TaskError, match="line 1 lacks field"):
        load_task(TaskConfig(name="gsm8k", path=str(tmp_path)))


def test_real_gsm8k_and_math_rows(fixture_data):
    """The first rows of the real files (tests/fixtures); the full splits load the same way from a path."""
    gsm8k = load_task(TaskConfig(name="gsm8k", path=str(fixture_data / "gsm8k")))
    assert (len(gsm8k.train), len(gsm8k.test)) == (20, 20)
    assert gsm8k.test[0].answer == "18"
    math500 = load_task(TaskConfig(name="math500", path=str(fixture_data / "math")))
    assert len(math500.test) == 20 and len(math500.train) == 20
    assert math500.test[0].answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert math500.reward == "rewards.math:math_reward"


def test_missing_data_path_is_a_user_error(tmp_path):
    with pytest.raises(TaskError, match="does not exist"):
        load_task(TaskConfig(name="gsm8k", path=str(tmp_path / "nope")))
    with pytest.raises(TaskError, match="no train.jsonl or train.parquet"):
        load_task(TaskConfig(name="gsm8k", path=str(tmp_path)))


def test_render_chat_and_plain(smollm2_tokenizer, tiny_model):
    sample = arithmetic_task(ArithmeticSpec(train_size=1, test_size=1)).test[0]
    chat = PromptRenderer(smollm2_tokenizer, "auto")(sample)
    assert chat.startswith("<|im_start|>system") and chat.endswith("<|im_start|>assistant\n")
    assert sample.prompt in chat
    assert PromptRenderer(smollm2_tokenizer, "plain")(sample) == sample.prompt
    _, tiny_tokenizer = tiny_model
    assert PromptRenderer(tiny_tokenizer, "auto")(sample) == sample.prompt  # no chat template: plain
    with pytest.raises(TaskError, match="no chat template"):
        PromptRenderer(tiny_tokenizer, "chat")
