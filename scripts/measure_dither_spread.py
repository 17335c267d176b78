"""How far one bf16 FullFT learner's step-2 gradient norm moves with its dither seed alone (the noise the two-learner
FSDP test in tests/test_data_parallel.py must allow from step 1 on): the test's batches on the tiny model, one
learner per seed, two steps each.

    .venv/bin/python scripts/measure_dither_spread.py [--seeds 12]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from test_data_parallel import a_batch  # noqa: E402

from rl_lora.config import load_config  # noqa: E402
from rl_lora.models import load_causal_lm, load_tokenizer  # noqa: E402
from rl_lora.policy.learner import LocalLearner  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=12)
    args = parser.parse_args()
    model_dir = str(ROOT / "tests" / "fixtures" / "models" / "stories260K" / "hf")
    config = load_config(None, [f"model.name={model_dir}", "lora.mode=full", "model.dtype=bfloat16", "algo.lr=1e-3",
                                "algo.micro_batch_size=4"])
    tiny = (load_causal_lm(model_dir), load_tokenizer(model_dir))
    batches = [a_batch(tiny, 0), a_batch(tiny, 1)]
    norms = []
    for seed in range(args.seeds):
        learner = LocalLearner(load_causal_lm(model_dir, "bfloat16"), config.lora, config.algo, 1e-3, 0.7, seed=seed)
        learner.step(batches[0])
        norms.append(learner.step(batches[1]).grad_norm)
    mean = statistics.mean(norms)
    print(f"step-2 grad norm over {args.seeds} dither seeds: {min(norms):.3f}-{max(norms):.3f}, "
          f"sd {100 * statistics.stdev(norms) / mean:.1f} % of the mean {mean:.3f}")


if __name__ == "__main__":
    main()
