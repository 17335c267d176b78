"""Your own data, unchanged: a generic dataset task (jsonl / json / parquet / a folder of split files), verl's and
TRL's prepared formats with rewards written the verl and TRL way, and a task built by your own code. Real files
(rows from tests/fixtures/data/gsm8k), real rewards, the 260K Llama."""
import json

import pytest

from rl_lora.cli import main
from tests.conftest import DATA, STORIES_260K

RUN = ["--set", f"model.name={STORIES_260K}", "--set", "algo.lr=0.005", "--set", "lora.rank=2",
       "--set", "train.eval_size=4", "--set", "eval.max_new_tokens=8", "--set", "train.eval_every=0",
       "--set", "train.steps=2", "--set", "rollout.prompts_per_step=4", "--set", "rollout.group_size=4",
       "--set", "task.name=dataset"]
GSM8K = [json.loads(line) for line in (DATA / "gsm8k" / "train.jsonl").read_text().splitlines()]


def _answer(row: dict) -> str:
    return row["answer"].rsplit("####", 1)[1].strip()


def _train(tmp_path, capsys, *extra) -> tuple[int, str]:
    code = main(["train", *RUN, "--set", f"train.runs_dir={tmp_path / 'runs'}", *extra])
    return code, capsys.readouterr().err


def _logged(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_verl_parquet_trains_as_is_and_compute_score_gets_the_rows_fields(tmp_path, capsys, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"data_source": "openai/gsm8k", "prompt": [{"role": "user", "content": row["question"]}],
             "ability": "math", "reward_model": {"style": "rule", "ground_truth": _answer(row)},
             "extra_info": {"split": "train", "index": index}} for index, row in enumerate(GSM8K)]
    data = tmp_path / "verl"
    data.mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:16]), data / "train.parquet")
    pq.write_table(pa.Table.from_pylist(rows[16:]), data / "test.parquet")
    log = tmp_path / "received.jsonl"
    monkeypatch.setenv("RL_LORA_TEST_REWARD_LOG", str(log))
    code, err = _train(tmp_path, capsys, "--set", f"task.path={data}", "--set", "train.name=verl",
                       "--reward", "tests.reward_fixtures:verl_compute_score")
    assert code == 0, err
    received = _logged(log)
    assert len(received) >= 2 * 4 * 4  # every sampled completion of both steps (and the evaluations)
    for call in received:
        index = call["extra_info"]["index"]
        assert call["data_source"] == "openai/gsm8k" and call["extra_info"]["split"] == "train"
        assert call["ground_truth"] == _answer(GSM8K[index])
    assert len(json.loads((tmp_path / "runs" / "verl" / "metrics.jsonl").read_text().splitlines()[-1])) > 0


def test_a_trl_jsonl_with_chat_prompts_trains_and_the_reward_sees_each_rows_solution(tmp_path, capsys, monkeypatch):
    data = tmp_path / "trl"
    data.mkdir()
    rows = [{"prompt": [{"role": "system", "content": "Solve it."}, {"role": "user", "content": row["question"]}],
             "solution": _answer(row)} for row in GSM8K]
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:16]))
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[16:]))
    log = tmp_path / "received.jsonl"
    monkeypatch.setenv("RL_LORA_TEST_REWARD_LOG", str(log))
    code, err = _train(tmp_path, capsys, "--set", f"task.path={data}", "--set", "train.name=trl",
                       "--reward", "tests.reward_fixtures:trl_accuracy_reward")
    assert code == 0, err
    solution_of = {row["question"]: _answer(row) for row in GSM8K}
    received = _logged(log)
    assert len(received) >= 2 * 4 * 4
    assert all(call["solution"] == solution_of[call["question"]] for call in received)  # row order kept


def test_one_file_without_a_test_split_holds_out_rows_the_same_way_every_time(tmp_path, capsys):
    from rl_lora.config import TaskConfig
    from rl_lora.tasks import load_task

    path = tmp_path / "all.json"
    path.write_text(json.dumps([{"question": r["question"], "answer": _answer(r)} for r in GSM8K]))
    first, second = (load_task(TaskConfig(name="dataset", path=str(path), test_size=5)) for _ in range(2))
    assert (len(first.train), len(first.test)) == (15, 5)
    assert [s.prompt for s in first.test] == [s.prompt for s in second.test]
    assert {s.answer for s in first.train} | {s.answer for s in first.test} == {_answer(r) for r in GSM8K}
    assert first.test[0].metadata["answer"] == first.test[0].answer  # every column but the prompt travels


def test_a_task_from_code_trains(tmp_path, capsys):
    code, err = _train(tmp_path, capsys, "--set", "task.name=tests.reward_fixtures:story_task",
                       "--set", "train.name=code")
    assert code == 0, err
    assert (tmp_path / "runs" / "code" / "summary.json").is_file()


@pytest.mark.parametrize("rows, extra, message", [
    ([{"text": "hi", "answer": "1"}], [], "no prompt column; looked for prompt, question, problem (columns: text, "
                                          "answer); name yours with --set task.prompt_key=COLUMN"),
    ([{"question": "hi", "label": "1"}], [], "no answer column"),
    ([{"question": "hi", "label": "1"}], ["--set", "task.answer_key=gold"], "no answer column 'gold'"),
    ([{"question": 7, "answer": "1"}], [],
     "(train split), line 1: the prompt is neither a string nor a list of chat messages"),
])
def test_bad_dataset_rows_are_one_line_and_leave_no_folder(tmp_path, capsys, rows, extra, message):
    data = tmp_path / "bad"
    data.mkdir()
    for split in ("train", "test"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, err = _train(tmp_path, capsys, "--set", f"task.path={data}", "--set", "train.name=bad", *extra)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "runs" / "bad").exists()
    code = main(["train", *RUN, "--set", "task.name=tests.reward_fixtures:exact"])
    assert code == 2 and "not an envs.task.Task" in capsys.readouterr().err


def test_the_python_api_runs_what_the_cli_runs(tmp_path, capsys):
    """train(config) returns the summary; the same config on the CLI logs the same steps."""
    from rl_lora import evaluate, load_config, train

    overrides = [arg for arg in RUN[1::2] if arg != "task.name=dataset"] + [
        "task.name=tests.reward_fixtures:story_task", f"train.runs_dir={tmp_path}"]
    summary = train(load_config(overrides=overrides + ["train.name=api"]))
    assert summary.steps == 2 and summary.final_accuracy is not None and summary.run_dir.endswith("api")
    assert main(["train", *[a for o in overrides + ["train.name=cli"] for a in ("--set", o)]]) == 0
    keys = ("reward_mean", "loss", "grad_norm")
    api, cli = ([json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
                for name in ("api", "cli"))
    assert [m[k] for m in api for k in keys] == pytest.approx([m[k] for m in cli for k in keys], rel=1e-5)
    result = evaluate(load_config(overrides=overrides + [f"eval.output={tmp_path / 'e.jsonl'}"]),
                      adapter=f"{summary.run_dir}/checkpoints/step_2/adapter")
    assert result.num_samples == 2 and (tmp_path / "e.jsonl").is_file()
    from rl_lora.errors import UserError

    with pytest.raises(UserError, match="finished step 2 of 2"):
        train(resume=summary.run_dir)


def test_weighted_rewards_sum_and_each_part_is_logged(tmp_path, capsys):
    """task.name=module:function and reward.name=[a, b] with weights: the logged reward is the weighted sum."""
    code, err = _train(tmp_path, capsys, "--set", "task.name=tests.reward_fixtures:story_task", "--set",
                       "train.name=weighted", "--set",
                       "reward.name=[tests.reward_fixtures:mentions_the, tests.reward_fixtures:always_one]",
                       "--set", "reward.weights=0.5,2")
    assert code == 0, err
    steps = [json.loads(line) for line in (tmp_path / "runs" / "weighted" / "metrics.jsonl").read_text().splitlines()]
    for m in steps:
        the, one = m["reward/tests.reward_fixtures:mentions_the"], m["reward/tests.reward_fixtures:always_one"]
        assert one == 1.0 and m["reward_mean"] == pytest.approx(0.5 * the + 2 * one)
    code = main(["train", *RUN, "--set", "task.name=tests.reward_fixtures:story_task",
                 "--set", "reward.name=gsm8k,format", "--set", "reward.weights=1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "1 reward weights for 2 rewards" in err, err


def test_wandb_offline_holds_one_history_row_per_step_with_namespaced_keys(tmp_path, capsys, monkeypatch):
    from tests.wandb_history import history

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    code, err = _train(tmp_path, capsys, "--set", "task.name=tests.reward_fixtures:story_task", "--set",
                       "train.name=wb", "--set", "log.wandb=true", "--set", "train.steps=3")
    assert code == 0, err
    files = list((tmp_path / "runs" / "wb" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    rows = history(files[0])
    steps = [row for row in rows if "reward/mean" in row]
    assert [row["_step"] for row in steps] == [1, 2, 3]
    for row in steps:
        assert {"reward/mean", "policy/loss", "policy/grad_norm", "time/step", "sync/lag",
                "sampling/tokens_per_s"} <= set(row), row
    assert steps[-1]["eval/test_accuracy"] is not None
    assert any(key.startswith("plots/curve/") for row in rows for key in row)  # the curve, as a wandb image
    assert list((files[0].parent / "files" / "media" / "images").glob("plots/curve*.png"))


def test_wandb_without_the_extra_is_one_line(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if the extra were not installed: `import wandb` fails
    code, err = _train(tmp_path, capsys, "--set", "log.wandb=true", "--set", "train.name=nowb")
    assert code == 2 and err.count("\n") == 1 and "pip install 'rl-lora[wandb]'" in err, err
    assert not (tmp_path / "runs" / "nowb").exists()
