"""scripts/count_ops.py on the tiny smoke shape: it counts the learner step's and the sampler's ATen ops and writes
its JSON (benchmarks/count_ops.json holds the SmolLM2-135M-shape count)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "count_ops.py"


def test_count_ops_counts_a_learner_step_and_the_sampler(tmp_path):
    out = tmp_path / "count_ops.json"
    # Explicit micro-batches: the count does not depend on how the default sizes them on this machine. The 260K
    # fixture's 512-token vocabulary keeps the output head small.
    run = subprocess.run([sys.executable, str(SCRIPT), "--shape", "smoke", "--tokenizer",
                          str(ROOT / "tests" / "fixtures" / "models" / "stories260K" / "hf"),
                          "--variants", "micro_batch_size=8,micro_batch_size=64", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["command"].startswith("python scripts/count_ops.py")
    sampler = report["sampler"]
    assert sampler["tokens_sampled"] > 0 and sampler["ops_per_token"] > 0
    assert sampler["total"] >= sum(sampler["top"].values())
    rows = {(r["mode"], r["variant"]): r for r in report["learner"]}
    assert set(rows) == {(m, v) for m in ("lora", "full") for v in ("micro_batch_size=8", "micro_batch_size=64")}
    for mode in ("lora", "full"):
        eight, one_pass = rows[mode, "micro_batch_size=8"], rows[mode, "micro_batch_size=64"]
        assert 0 < one_pass["total"] < eight["total"]  # 8 forward/backward passes dispatch more than one
        assert len(eight["top"]) == 15 and eight["host_syncs"] > 0
        assert eight["micro_batch_size"] == 8 and one_pass["micro_batch_size"] == 64
