import pytest

from rl_lora.errors import UserError
from rl_lora.models import load_causal_lm, resolve_model


def test_alias_materialises_a_plain_hf_folder_once(smollm2):
    model, tokenizer = smollm2
    folder = resolve_model("smollm2-135m")
    assert resolve_model("smollm2-135m") == folder
    assert (folder and __import__("pathlib").Path(folder, "model.safetensors").is_file())
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.padding_side == "left"
    assert "quantization_config" not in __import__("json").load(open(f"{folder}/config.json"))


def test_local_folder_and_errors(tiny_model_dir, tmp_path):
    assert resolve_model(str(tiny_model_dir)) == str(tiny_model_dir)
    with pytest.raises(UserError, match="model path not found"):
        resolve_model("./no/such/model")
    with pytest.raises(UserError, match="has no config.json"):
        resolve_model(str(tmp_path))
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert load_causal_lm(str(tiny_model_dir)).config.vocab_size == 512
