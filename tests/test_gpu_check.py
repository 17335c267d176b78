"""scripts/gpu_check.py on a CPU: its code path (--smoke, tiny shapes) runs end to end and writes its JSON, so the
check a GPU user runs has not rotted; without a GPU and without --smoke it refuses in one line. Its numbers come
from a GPU only (benchmarks/gpu/)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.py"


def test_the_gpu_check_runs_its_code_path_on_a_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--smoke", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["smoke"] is True and report["device"] == "cpu"
    shape = report["shapes"]["smoke"]
    assert [r["completion_tokens"] for r in shape["hf_sampler"]] == [8, 16]
    assert all(r["tokens_sampled"] > 0 and r["tokens_per_s"] > 0 for r in shape["hf_sampler"])
    assert [(r["mode"], r["completion_tokens"]) for r in shape["learner"]] == [
        ("lora", 8), ("full", 8), ("lora", 16), ("full", 16)]
    lora, full = shape["learner"][0], shape["learner"][1]
    assert 0 < lora["trainable_params"] < full["trainable_params"] == shape["parameters"]
    from rl_lora.sampling.vllm import vllm_available

    assert ("vllm" in shape) == vllm_available()


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the check runs for real")
def test_without_a_gpu_it_says_so_in_one_line():
    run = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "sees no CUDA GPU" in run.stderr
