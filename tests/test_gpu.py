"""The learner and the hf sampler on a CUDA GPU (marked gpu: skipped where torch sees none, never faked). CPU
machines check the same code on the CPU everywhere else; these are the paths only a GPU takes: batches collated on
the CPU reaching a model on the GPU, bf16 weights, updates crossing devices."""
import pytest
import torch

from rl_lora.config import AlgoConfig, LoraConfig
from rl_lora.policy.learner import LocalLearner
from rl_lora.sampling.hf import HFBackend
from rl_lora.step.advantages import build_rollouts
from rl_lora.types import Probe, SamplingParams, collate
from tests.test_hf_backend import decoded_both_ways

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
PROMPTS = ["Once upon a time", "The little dog ran to the park and saw"]


def on_gpu(folder, dtype=torch.float32):
    from rl_lora.models import load_causal_lm

    return load_causal_lm(str(folder), {torch.float32: "float32", torch.bfloat16: "bfloat16"}[dtype], "cuda")


@pytest.mark.parametrize("mode", ["lora", "full"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_step_on_the_gpu_is_served_by_a_gpu_sampler(llama_dir, mode, dtype):
    from rl_lora.models import load_tokenizer

    tokenizer = load_tokenizer(str(llama_dir))
    sampler = HFBackend(on_gpu(llama_dir, dtype), tokenizer, batch_size=8)
    learner = LocalLearner(on_gpu(llama_dir, dtype), LoraConfig(mode=mode, rank=1), AlgoConfig(),
                           lr=1e-2 if mode == "lora" else 1e-3, temperature=0.7)
    groups = sampler.generate(PROMPTS, 4, SamplingParams(0.7, 16, seed=0))
    rewards = [float(i % 2) for i in range(8)]
    metrics = learner.step(collate(build_rollouts(["a", "b"], groups, rewards, "group_mean", False),
                                   sampler.pad_id))
    assert torch.isfinite(torch.tensor(metrics.loss)) and metrics.grad_norm > 0
    update = learner.export_update()
    if mode == "lora":  # kB: crosses processes and devices as a CPU copy
        assert all(t.device.type == "cpu" for t in update.tensors.values())
    sampler.load_update(update)
    probe = Probe.for_tokenizer(tokenizer)
    gap = max(abs(a - b) for a, b in zip(learner.probe_logprobs(probe), sampler.probe_logprobs(probe)))
    assert gap <= (1e-3 if dtype == torch.float32 else 5e-2)


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_the_captured_decode_loop_samples_what_the_eager_loop_samples(tiny_model_dir, temperature):
    """The CUDA-graph loop (decode="graph": a chunk run eagerly, then captured and replayed) against the eager
    loop and its own uncaptured twin: same tokens, log-probs and generator state for one seed, float32."""
    from rl_lora.models import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    (eager, static, graph), ends = decoded_both_ways(on_gpu(tiny_model_dir), tokenizer, temperature, 40,
                                                     ("eager", "static", "graph"))
    assert len(set(ends.tolist())) > 1
    for other in (static, graph):
        assert torch.equal(eager[0], other[0])
        torch.testing.assert_close(eager[1], other[1], atol=1e-4, rtol=1e-4)
        assert torch.equal(eager[2], other[2])
    torch.testing.assert_close(static[1], graph[1], atol=1e-6, rtol=1e-6)  # the graph replays the twin's kernels


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_the_compiled_learner_steps_as_the_eager_one_in_one_pass(llama_dir, mode):
    """On CUDA `algo.compile=auto` is inductor (each layer's MLP compiled) and the default step is one pass (the
    memory budget is the device's): the same gradient norm and loss as the eager learner, float32."""
    from rl_lora.models import load_tokenizer

    tokenizer = load_tokenizer(str(llama_dir))
    sampler = HFBackend(on_gpu(llama_dir), tokenizer, batch_size=8)
    groups = sampler.generate(PROMPTS, 4, SamplingParams(0.7, 16, seed=0))
    batch = collate(build_rollouts(["a", "b"], groups, [float(i % 2) for i in range(8)], "group_mean", False),
                    sampler.pad_id)
    results = []
    for compile in ("auto", "off"):
        torch.manual_seed(0)
        learner = LocalLearner(on_gpu(llama_dir), LoraConfig(mode=mode, rank=1), AlgoConfig(compile=compile),
                               lr=1e-3, temperature=0.7)
        assert learner.compiled > 0 if compile == "auto" else learner.compiled == 0
        results.append(learner.step(batch))
    compiled, eager = results
    assert compiled.micro_batches == 1
    assert compiled.loss == pytest.approx(eager.loss, rel=1e-3, abs=1e-5)
    assert compiled.grad_norm == pytest.approx(eager.grad_norm, rel=1e-3)
