"""`rl-lora export`: a trained 260K run as a Hugging Face folder that transformers loads as it is and that answers
the test problems exactly as the run's own evaluation did; bad input as one line with nothing written."""
import json
import shutil

import pytest

from rl_lora.cli import main
from tests.conftest import STORIES_260K
from tests.test_train import train


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("arm", [[], ["--set", "lora.adapter=dora"], ["--set", "lora.mode=full",
                                                                     "--set", "algo.lr=3e-3"]],
                         ids=["lora", "dora", "full"])
def test_the_export_loads_in_transformers_and_answers_as_the_runs_evaluation(tmp_path, capsys, arm):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    code, _, err = train(tmp_path, capsys, "--set", "train.steps=2", "--set", "train.name=run", *arm)
    assert code == 0, err
    run, out = tmp_path / "run", tmp_path / "export"
    assert main(["export", str(run), "--out", str(out)]) == 0
    capsys.readouterr()

    model = AutoModelForCausalLM.from_pretrained(out)  # as it is: no PEFT, no rl-lora
    assert not [name for name, _ in model.named_parameters() if "lora" in name]
    exported, shipped = AutoTokenizer.from_pretrained(out), AutoTokenizer.from_pretrained(STORIES_260K)
    assert exported.chat_template == shipped.chat_template and exported.padding_side == shipped.padding_side
    assert exported("12 + 30 =").input_ids == shipped("12 + 30 =").input_ids
    assert (out / "adapter" / "adapter_config.json").is_file() != ("lora.mode=full" in arm)
    card = (out / "README.md").read_text()
    assert "step 2" in card and f"rl-lora export {run} --out {out}" in card and "test accuracy" in card

    # The exported folder, evaluated as a plain model on the run's own test problems, answers as the run did.
    trained, base = records(run / "evals" / "step_2.jsonl"), records(run / "evals" / "step_0.jsonl")
    assert [r["completion"] for r in trained] != [r["completion"] for r in base]  # training changed the answers
    assert main(["eval", str(run / "config.yaml"), "--set", f"model.name={out}", "--set", "eval.limit=8",
                 "--out", str(tmp_path / "exported.jsonl")]) == 0
    assert [r["completion"] for r in records(tmp_path / "exported.jsonl")] == [r["completion"] for r in trained]


@pytest.fixture(scope="module")
def one_step_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    assert main(["train", "--set", f"train.runs_dir={folder}", "--set", "train.name=run", "--set", "train.steps=1",
                 "--set", f"model.name={STORIES_260K}", "--set", "train.eval_size=2",
                 "--set", "eval.max_new_tokens=4", "--set", "rollout.max_new_tokens=4"]) == 0
    return folder / "run"


@pytest.mark.parametrize("case, message", [
    ("not a run", "is not a run folder (it has no config.yaml)"),
    ("no checkpoint", "has no checkpoint yet"),
    ("missing step", "has no checkpoint of step 7; it has steps 1"),
    ("out not empty", "exists and is not an empty folder"),
])
def test_bad_input_is_one_line_and_nothing_is_written(one_step_run, tmp_path, capsys, case, message):
    run, out, step = one_step_run, tmp_path / "export", []
    if case == "not a run":
        run = tmp_path
    elif case == "no checkpoint":
        run = tmp_path / "fresh"
        run.mkdir()
        shutil.copy(one_step_run / "config.yaml", run / "config.yaml")
    elif case == "missing step":
        step = ["--step", "7"]
    else:
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["export", str(run), *step, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no export, no staging folder
