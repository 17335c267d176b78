"""completion_logprobs (shared prompt cache, chunked head) against a plain forward pass, values and gradients."""
import copy

import torch

from rl_lora.policy.logprobs import completion_logprobs
from rl_lora.tokens import tokenize_prompts
from rl_lora.types import Rollout, collate

PROMPTS = ["Once upon a time", "The little dog ran to the park and saw a big"]


def rollouts(tokenizer):
    prompt_ids = tokenize_prompts(tokenizer, PROMPTS)
    completions = [[(260, 300, 2), (270,)], [(280, 281, 282, 283), (290, 2), (301, 302, 303)]]
    return [Rollout(f"s{i}", tuple(prompt_ids[i]), c, (0.0,) * len(c), 0.0, 1.0, 0)
            for i, group in enumerate(completions) for c in group]


def reference(model, rollout_list, temperature):
    """Each row alone, unpadded, full log-softmax: no cache, no chunking, no sharing."""
    values = []
    for r in rollout_list:
        ids = torch.tensor([r.prompt_ids + r.completion_ids])
        logits = model(input_ids=ids).logits[0, len(r.prompt_ids) - 1:-1].float() / temperature
        values.append(torch.log_softmax(logits, -1).gather(1, torch.tensor(r.completion_ids)[:, None]).squeeze(1))
    return values


def test_shared_prompt_matches_per_row_forward(tiny_model):
    model, tokenizer = tiny_model
    batch = collate(rollouts(tokenizer), pad_id=tokenizer.pad_token_id)
    assert batch.repeats.tolist() == [2, 3] and batch.prompt_ids.shape[0] == 2
    with torch.no_grad():
        shared, _ = completion_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.repeats,
                                        batch.completion_ids, batch.completion_mask, 0.7, chunk_tokens=3)
        expected = reference(model, rollouts(tokenizer), 0.7)
    for row, values in enumerate(expected):
        torch.testing.assert_close(shared[row, :len(values)], values, atol=1e-5, rtol=1e-5)


def test_gradients_through_the_shared_prompt(tiny_model):
    model, tokenizer = tiny_model
    shared_model, plain_model = copy.deepcopy(model), copy.deepcopy(model)
    batch = collate(rollouts(tokenizer), pad_id=tokenizer.pad_token_id)
    lp, _ = completion_logprobs(shared_model, batch.prompt_ids, batch.prompt_mask, batch.repeats,
                                batch.completion_ids, batch.completion_mask)
    (lp * batch.completion_mask).sum().backward()
    sum(values.sum() for values in reference(plain_model, rollouts(tokenizer), 1.0)).backward()
    for (name, a), b in zip(shared_model.named_parameters(), plain_model.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-3, msg=name)


def test_split_keeps_groups_whole(tiny_model):
    _, tokenizer = tiny_model
    batch = collate(rollouts(tokenizer), pad_id=tokenizer.pad_token_id)
    parts = batch.split(2)
    assert [p.repeats.tolist() for _, p in parts] == [[2], [3]]
    assert [(r.start, r.stop) for r, _ in parts] == [(0, 2), (2, 5)]
    assert [p.completion_ids.shape[1] for _, p in parts] == [3, 4]  # each trimmed to its own longest completion
    assert parts[0][1].prompt_ids.shape[1] == len(tokenize_prompts(tokenizer, PROMPTS[:1])[0])  # and its prompt
    assert [p.repeats.tolist() for _, p in batch.split(64)] == [[2, 3]]


def test_split_by_tokens_may_split_a_group_and_counts_each_prompt_once(tiny_model):
    _, tokenizer = tiny_model
    batch = collate(rollouts(tokenizer), pad_id=tokenizer.pad_token_id)
    prompt_lengths = [len(p) for p in tokenize_prompts(tokenizer, PROMPTS)]
    # Room for the first prompt and 2 rows of 3 tokens, not for a third row: the second group is split.
    budget = prompt_lengths[1] + 2 * 4
    parts = batch.split(8, max_tokens=budget)
    assert [(r.start, r.stop) for r, _ in parts] == [(0, 2), (2, 4), (4, 5)]
    assert [p.repeats.tolist() for _, p in parts] == [[2], [2], [1]]
    for _, part in parts:
        assert part.prompt_ids.shape[0] * part.prompt_ids.shape[1] + part.completion_ids.numel() <= budget
    assert len(batch.split(8, max_tokens=1)) == 5  # a row larger than the budget goes alone


def _gradients(model, batch, algo_settings: dict) -> dict:
    from rl_lora.config import AlgoConfig, LoraConfig, TrainMode
    from rl_lora.policy.learner import LocalLearner

    # LR 0: the weights stay, so every variant is differentiated at one and the same point.
    learner = LocalLearner(copy.deepcopy(model), LoraConfig(mode=TrainMode.FULL), AlgoConfig(**algo_settings), lr=0.0)
    layer_calls = []
    learner.model.model.layers[0].register_forward_pre_hook(lambda *_: layer_calls.append(1))
    micro_batches = learner.step(batch).micro_batches
    # A prompt pass and a completion pass per micro-batch, and a replay of the completion pass when checkpointed.
    assert len(layer_calls) == micro_batches * (3 if algo_settings.get("gradient_checkpointing") else 2)
    return {name: p.grad.clone() for name, p in learner.model.named_parameters()}


def test_checkpointing_and_token_micro_batches_leave_the_gradients_unchanged(tiny_model):
    """The same step's gradients: whole-group micro-batches (by count or by memory), micro-batches by tokens that
    split groups, either with every decoder layer of the completion pass checkpointed, and the compiled MLPs."""
    model, tokenizer = tiny_model
    batch = collate([Rollout(r.sample_id, r.prompt_ids, r.completion_ids, (-1.0,) * len(r.completion_ids), 0.0,
                             advantage, 0) for r, advantage in zip(rollouts(tokenizer), (1.0, -1.0, 0.5, -0.5, 0.0))],
                    pad_id=tokenizer.pad_token_id)
    reference_grads = _gradients(model, batch, {"micro_batch_size": 8, "max_grad_norm": 0.0})
    assert any(g.abs().sum() > 0 for g in reference_grads.values())
    # {}: the default, micro-batches sized by memory (one pass here); 1 MB: a budget that holds one group a pass;
    # aot_eager: the compiled MLPs' graphs (what inductor generates code from on a GPU), run on the CPU.
    for settings in ({}, {"learner_memory_mb": 1.0}, {"compile": "aot_eager"}, {"gradient_checkpointing": True}, {"micro_batch_tokens": 16},
                     {"micro_batch_tokens": 16, "gradient_checkpointing": True}):
        grads = _gradients(model, batch, {"max_grad_norm": 0.0, **settings})
        for name, grad in reference_grads.items():
            torch.testing.assert_close(grads[name], grad, atol=1e-6, rtol=1e-4, msg=f"{settings} {name}")


def test_split_by_tokens_with_whole_groups_cuts_only_a_group_over_the_budget(tiny_model):
    _, tokenizer = tiny_model
    batch = collate(rollouts(tokenizer), pad_id=tokenizer.pad_token_id)
    first_prompt, second_prompt = (len(p) for p in tokenize_prompts(tokenizer, PROMPTS))
    assert [(r.start, r.stop) for r, _ in batch.split(max_tokens=10_000, whole_groups=True)] == [(0, 5)]
    # Room for either group alone (a prompt and its rows at their widest) but not both: one pass per group.
    budget = max(first_prompt + 2 * 3, second_prompt + 3 * 4)
    assert 2 * max(first_prompt, second_prompt) + 5 * 4 > budget
    assert [(r.start, r.stop) for r, _ in batch.split(max_tokens=budget, whole_groups=True)] == [(0, 2), (2, 5)]
    # The second group (3 rows of up to 4 tokens) alone over the budget: cut by rows, the first group whole.
    tight = max(first_prompt + 2 * 3, second_prompt + 2 * 4)
    parts = batch.split(max_tokens=tight, whole_groups=True)
    assert [(r.start, r.stop) for r, _ in parts] == [(0, 2), (2, 4), (4, 5)]
    assert all(part.tokens() <= tight for _, part in parts)


def test_passes_sized_by_memory_stay_within_a_tight_budget_and_a_budget_below_one_completion_is_one_line(
        tiny_model):
    import pytest

    from rl_lora.config import AlgoConfig, LoraConfig
    from rl_lora.errors import UserError
    from rl_lora.policy.learner import LocalLearner

    model, tokenizer = tiny_model
    batch = collate(rollouts(tokenizer) * 4, pad_id=tokenizer.pad_token_id)  # 8 groups
    budget_mb = 1.0
    learner = LocalLearner(copy.deepcopy(model), LoraConfig(rank=1), AlgoConfig(learner_memory_mb=budget_mb), lr=0.0)
    saved_per_pass = []
    observe = learner.sizer.observe
    learner.sizer.observe = lambda saved, tokens: (saved_per_pass.append(saved), observe(saved, tokens))
    passes = [learner.step(batch).micro_batches for _ in range(2)]  # the first from the estimate, then measured
    assert min(passes) > 1 and len(saved_per_pass) == 2  # each step's first pass is measured
    # What autograd really kept for a pass's backward, parameters aside, never over the budget.
    assert 0 < max(saved_per_pass) <= budget_mb * 2**20
    small = LocalLearner(copy.deepcopy(model), LoraConfig(rank=1), AlgoConfig(learner_memory_mb=0.001), lr=0.0)
    with pytest.raises(UserError, match=r"memory budget \(algo.learner_memory_mb=0.001\) holds \d+ tokens.*"
                                        r"less than one completion with its prompt \(\d+ tokens\)"):
        small.step(batch)


def test_groups_share_a_pass_only_within_pack_tokens_and_a_group_alone_is_never_cut_for_it(tiny_model):
    _, tokenizer = tiny_model
    batch = collate(rollouts(tokenizer), pad_id=tokenizer.pad_token_id)
    first_prompt, second_prompt = (len(p) for p in tokenize_prompts(tokenizer, PROMPTS))
    both = 2 * max(first_prompt, second_prompt) + 5 * 4  # both groups in one pass, at their widest
    assert [(r.start, r.stop) for r, _ in batch.split(max_tokens=10_000, whole_groups=True,
                                                      pack_tokens=both)] == [(0, 5)]
    assert [(r.start, r.stop) for r, _ in batch.split(max_tokens=10_000, whole_groups=True,
                                                      pack_tokens=both - 1)] == [(0, 2), (2, 5)]
    # A cap below one group alone: each group still goes whole (only the memory budget cuts a group).
    assert [(r.start, r.stop) for r, _ in batch.split(max_tokens=10_000, whole_groups=True,
                                                      pack_tokens=1)] == [(0, 2), (2, 5)]


def test_on_a_cpu_the_automatic_budget_packs_groups_up_to_cpu_pass_tokens_and_a_configured_one_fills(tiny_model):
    from rl_lora.policy.micro_batches import CPU_PASS_TOKENS, MicroBatchSizer

    model, _ = tiny_model
    automatic, configured = MicroBatchSizer(model, None), MicroBatchSizer(model, 64.0)
    assert automatic.pack_tokens(torch.device("cpu")) == CPU_PASS_TOKENS
    assert automatic.pack_tokens(torch.device("cuda")) is None  # a GPU's pass is as large as its budget
    assert configured.pack_tokens(torch.device("cpu")) is None
