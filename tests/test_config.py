import pytest

from rl_lora.config import RunConfig, describe, load_config, to_yaml
from rl_lora.errors import UserError


def test_defaults_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task:\n  name: gsm8k\neval:\n  limit: 7\n")
    config = load_config(path, ["eval.limit=9", "reward.timeout_s=5e-1", "task.system_prompt=null"])
    assert config.task.name == "gsm8k" and config.eval.limit == 9 and config.reward.timeout_s == 0.5
    assert config.model.name == "smollm2-135m"
    assert load_config() == RunConfig()


def test_dumped_yaml_loads_back_identically(tmp_path):
    config = load_config(None, ["task.digits=3", "model.dtype=bfloat16"])
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(config))
    assert load_config(path) == config


@pytest.mark.parametrize("override, message", [
    ("task.nam=3", "unknown config key task.nam; allowed in task: name, path"),
    ("bogus.x=1", "unknown config key bogus"),
    ("task.name=chess", "'chess' is not allowed; allowed: arithmetic, gsm8k, math, math500"),
    ("eval.limit=0", "eval.limit: 0 is out of range; must be >= 1"),
    ("eval.limit=abc", "eval.limit: 'abc' is not a valid int"),
    ("reward.on_error=ignore", "allowed: stop, skip, zero"),
    ("model=3", "expected a mapping"),
    ("novalue", "expected section.key=value"),
])
def test_bad_keys_and_values_name_the_key(override, message):
    with pytest.raises(UserError) as caught:
        load_config(None, [override])
    assert message in str(caught.value)


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [unclosed\n")
    with pytest.raises(UserError, match="malformed YAML"):
        load_config(bad)


def test_help_is_generated_from_field_docs():
    text = "\n".join(describe())
    assert "task.digits (int, default 2)" in text and "arithmetic: digits per operand" in text
    assert "[stop|skip|zero]" in text
