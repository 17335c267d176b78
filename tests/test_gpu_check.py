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
    assert report["smoke"] is True and report["device"] == "cpu" and report["skipped"] == []
    assert report["peak"]["bf16_dense_tflops"] is None  # a CPU has no entry: no MFU
    shape = report["shapes"]["smoke"]
    assert [r["completion_tokens"] for r in shape["hf_sampler"]] == [8, 16]
    assert all(r["tokens_sampled"] > 0 and r["tokens_per_s"] > 0 for r in shape["hf_sampler"])
    # transformers generate beside it, held to the length: every one of the 64 completions has exactly L tokens
    generate = shape["transformers_generate"]
    assert [(r["completion_tokens"], r["tokens_generated"]) for r in generate] == [(8, 64 * 8), (16, 64 * 16)]
    assert all(r["tokens_per_s"] > 0 and r["hf_over_generate"] > 0 for r in generate)
    assert [(r["mode"], r["completion_tokens"]) for r in shape["learner"]] == [
        ("lora", 8), ("full", 8), ("lora", 16), ("full", 16)]
    lora, full = shape["learner"][0], shape["learner"][1]
    assert 0 < lora["trainable_params"] < full["trainable_params"] == shape["parameters"]
    for row in shape["learner"]:
        tokens = row["tokens"]
        assert tokens["prompt_once_per_group"] > 0 and tokens["completion"] <= 64 * row["completion_tokens"]
        assert tokens["total"] == tokens["prompt_once_per_group"] + tokens["completion"]
        per_token = 6 if row["mode"] == "full" else 4
        assert row["flops_per_step"] == per_token * shape["parameters"] * tokens["total"]
        assert row["tflops_per_s"] > 0 and row["mfu"] is None
    assert [r["completion_tokens"] for r in shape["lora_over_full"]] == [8, 16]
    assert all(r["step_time_ratio"] > 0 for r in shape["lora_over_full"])
    from rl_lora.sampling.vllm import vllm_available

    assert ("vllm" in shape) == vllm_available()

    train = report["train_run"]
    assert train["exit_code"] == 0 and train["steps"] == 5, train
    assert train["s_per_step"] > 0 and 0 <= train["outside_share_median"] < 1
    assert [row["step"] for row in train["per_step"]] == [1, 2, 3, 4, 5]

    targets = report["targets"]
    assert {t["target"] for t in targets} >= {
        "LoRA / FullFT step time <= 0.7", "LoRA / FullFT step time <= 1.0", "FullFT MFU >= 40 %", "LoRA MFU >= 30 %",
        "LoRA learner step <= 0.15 s", "hf sampler >= 3x transformers generate (tokens/s)",
        "hf sampler >= 10,000 tokens/s", "5-step rl-lora train <= 1.0 s/step (median time_step)"}
    assert all(t["pass"] is None for t in targets)  # nothing is judged off a GPU
    measured = {(t["target"], t["where"]): t["measured"] for t in targets}
    assert measured[("LoRA / FullFT step time <= 1.0", "smoke, 16 tokens")] == shape["lora_over_full"][1][
        "step_time_ratio"]
    assert measured[("FullFT MFU >= 40 %", "llama-3.2-1b, 512 tokens")] is None  # that shape did not run


def test_a_spent_budget_skips_every_part_and_still_writes_the_report(tmp_path):
    out = tmp_path / "gpu_check.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--smoke", "--budget-s", "0",
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["skipped"] == ["smoke: everything", "rl-lora train run"] and report["shapes"] == {}
    assert "train_run" not in report and all(t["measured"] is None for t in report["targets"])


def test_the_peak_table_names_the_device():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(SCRIPT.parent))
    assert gpu_check.bf16_peak("NVIDIA H200")["bf16_dense_tflops"] == 989
    assert gpu_check.bf16_peak("NVIDIA H100 80GB HBM3")["bf16_dense_tflops"] == 989  # SXM
    assert gpu_check.bf16_peak("NVIDIA H100 PCIe")["bf16_dense_tflops"] == 756
    assert gpu_check.bf16_peak("NVIDIA A100-SXM4-80GB")["bf16_dense_tflops"] == 312
    assert gpu_check.bf16_peak("NVIDIA L40S")["bf16_dense_tflops"] == 362
    for unknown in ("NVIDIA H100 NVL", "NVIDIA GeForce RTX 4090", "cpu"):
        assert gpu_check.bf16_peak(unknown) == {"device": unknown, "table_key": None, "bf16_dense_tflops": None}


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the check runs for real")
def test_without_a_gpu_it_says_so_in_one_line():
    run = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "sees no CUDA GPU" in run.stderr
