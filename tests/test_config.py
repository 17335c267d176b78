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
    ("model.device=gpu", "model.device: 'gpu' is not allowed; allowed: auto, cpu, cuda, or cuda:N"),
    ("model.device=cuda:x", "'cuda:x' is not allowed"),
    ("model.dtype=fp16", "allowed: auto, float32, bfloat16, float16"),
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


def test_device_and_dtype_default_to_auto_and_the_dumped_config_keeps_it():
    config = load_config()
    assert (config.model.device, config.model.dtype) == ("auto", "auto")
    assert "device: auto" in to_yaml(config) and "dtype: auto" in to_yaml(config)
    assert load_config(None, ["model.device=cuda:1"]).model.device == "cuda:1"


def test_auto_resolves_by_what_torch_sees_and_a_device_this_machine_lacks_says_what_it_has():
    """The pure functions, told what the machine has (no GPU needed to test the GPU branches)."""
    from rl_lora.device import resolve_device, resolve_dtype

    assert resolve_device("auto", cuda_count=0) == "cpu" and resolve_device("auto", cuda_count=2) == "cuda"
    assert resolve_device("cuda:1", cuda_count=2) == "cuda:1" and resolve_device("cpu", cuda_count=0) == "cpu"
    with pytest.raises(UserError, match=r"model.device=cuda:3: this machine has 2 CUDA GPUs \(cuda:0 to cuda:1\)$"):
        resolve_device("cuda:3", cuda_count=2)
    with pytest.raises(UserError, match=r"this machine has 1 CUDA GPU \(cuda:0\)$"):
        resolve_device("cuda:1", cuda_count=1)
    with pytest.raises(UserError, match="model.device=cuda: .*; use model.device=auto"):
        resolve_device("cuda", cuda_count=0)
    with pytest.raises(UserError, match="model.device=tpu: not a device rl-lora runs on"):
        resolve_device("tpu", cuda_count=1)

    def gpu(bf16: bool):
        return lambda dtype, device: dtype != "bfloat16" or bf16

    assert resolve_dtype("auto", "cpu", gpu(True)) == "float32"  # bf16 on a CPU is only ever asked for explicitly
    assert resolve_dtype("auto", "cuda", gpu(True)) == "bfloat16"
    assert resolve_dtype("auto", "cuda", gpu(False)) == "float32"
    assert resolve_dtype("float16", "cuda:1", gpu(False)) == "float16"
    with pytest.raises(UserError, match="model.dtype=bfloat16 on cuda:0: this GPU has no native bfloat16"):
        resolve_dtype("bfloat16", "cuda:0", gpu(False))


def test_on_ray_each_actor_resolves_its_device_and_auto_dtype_is_one_for_all():
    """The driver resolves nothing against its own hardware; a CPU actor makes auto float32 for every actor."""
    from rl_lora.cluster.placement import _check_one_dtype, plan_compute
    from rl_lora.device import Compute

    def plan(*settings: str) -> Compute:
        return plan_compute(load_config(None, ["rollout.num_workers=1", *settings]))

    assert (plan().device, plan().dtype) == ("auto", "float32")
    assert "learner on cpu (auto: no GPU asked)" in plan().line
    assert plan("ray.learner_gpus=1").dtype == "float32"  # its samplers compute on CPUs
    on_gpus = plan("ray.learner_gpus=1", "ray.worker_gpus=1")
    assert on_gpus.dtype == "auto" and "learner on the GPU Ray grants it" in on_gpus.line  # each resolves its own
    assert plan("model.dtype=bfloat16").dtype == "bfloat16"
    learner = Compute("cuda", "bfloat16", "device cuda, dtype bfloat16")
    assert "rollout workers: device cuda" in _check_one_dtype(learner, [learner])
    with pytest.raises(UserError, match="bfloat16 on the learner .* float32 on rollout worker 0"):
        _check_one_dtype(learner, [Compute("cuda", "float32", "")])


@pytest.mark.parametrize("overrides, message", [
    (["algo.clip_eps_low=1.5"], "algo.clip_eps_low=1.5: the lower clip 1 - clip_eps_low must not go below 0"),
    (["algo.clip_eps_low=-0.1"], "algo.clip_eps_low: -0.1 is out of range"),
    (["algo.clip_eps=1.5"], "algo.clip_eps=1.5: the lower clip"),
    (["algo.clip_eps_high=-0.1"], "algo.clip_eps_high: -0.1 is out of range"),
    (["algo.is_cap=0"], "algo.is_cap=0: the truncation cap must be > 0"),
    (["algo.is_mask_low=2", "algo.is_mask_high=2"], "algo.is_mask_low=2 is not below algo.is_mask_high=2"),
    (["algo.clip_ratio_c=1"], "algo.clip_ratio_c=1: dual-clip"),
    (["algo.baseline=rloo", "rollout.group_size=1"], "rollout.group_size=1 with algo.baseline=rloo"),
    (["algo.baseline=reinforce_pp", "algo.normalize_std=true"], "set normalize_std=false"),
    (["algo.kl_in=reward"], "algo.kl_in=reward puts the KL to the base model in the reward"),
    (["rollout.dynamic_sampling=true", "rollout.group_size=1", "algo.baseline=none"],
     "a group of rollout.group_size=1 always is"),
    (["rollout.dynamic_sampling=true", "rollout.max_lag=1", "rollout.num_workers=1"], "set max_lag=0"),
    (["algo.updates_per_step=9"], "into updates of 0 group(s)"),
])
def test_algorithm_keys_that_cannot_work_are_refused_in_one_line(overrides, message):
    """Issue 30's bad input: each refused by RunConfig.check, which runs before any model loads."""
    with pytest.raises(UserError) as caught:
        load_config(None, overrides).check()
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_clip_eps_low_1_means_no_lower_bound_and_is_cispos_default():
    load_config(None, ["algo.loss=ppo", "algo.clip_eps_low=1"]).check()  # 1 - 1 = 0: the ratio is positive
    assert load_config(None, ["algo.loss=cispo"]).algo.clip_low == 1.0  # MiniMax-M1 clips from above only
    assert load_config(None, ["algo.loss=cispo", "algo.clip_eps_low=0.2"]).algo.clip_low == 0.2
    assert load_config(None, ["algo.loss=ppo"]).algo.clip_low == 0.2


@pytest.mark.parametrize("value", ["-", "*", "yes", "null", "1e3", "~", "[x", "on", "0x10", "- -", "&a", "12:30"])
def test_a_text_key_keeps_its_value_as_written(value):
    """YAML would read `-` as a list ("[None] is not a valid str"), `yes` as true, `*` as an alias, `0x10` as 16:
    a text key is not YAML."""
    assert load_config(None, [f"model.name={value}"]).model.name == value
    assert load_config(None, [f"task.instruction={value}"]).task.instruction == (None if value in ("null", "~")
                                                                                 else value)


def test_text_keys_that_yaml_misreads_reach_the_task_and_typed_keys_still_parse():
    from rl_lora.tasks import load_task

    for operators in ("-", "*", "+-*"):
        config = load_config(None, [f"task.operators={operators}", "task.train_size=20", "task.test_size=5"])
        task = load_task(config.task)  # the real arithmetic task, drawn with those operators
        assert {o for s in task.train for o in s.metadata["expression"].split()[1::2]} == set(operators)
    config = load_config(None, ["algo.lr=1e-3", "train.steps=7", "rollout.vllm_sleep=yes", "task.system_prompt=null",
                                "reward.name=[format, gsm8k]", "reward.weights=[1, 0.5]", "env.tools=calculator"])
    assert config.algo.lr == 1e-3 and config.train.steps == 7 and config.rollout.vllm_sleep is True
    assert config.task.system_prompt is None and config.reward.name == "format,gsm8k"
    assert config.reward.weights == "1,0.5" and config.env.tools == "calculator"
    with pytest.raises(UserError, match="train.steps: True is not a valid int"):
        load_config(None, ["train.steps=yes"])
