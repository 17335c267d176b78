"""Token-level helpers every part shares: prompts to ids, left padding, the end-of-sequence and pad ids."""
from __future__ import annotations

from typing import Sequence

import torch


def tokenize_prompts(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids of each prompt; a BOS the chat template already wrote is not added twice."""
    encoded = tokenizer(list(prompts), add_special_tokens=True, verbose=False)["input_ids"]  # length: our checks
    bos = tokenizer.bos_token_id
    return [ids[1:] if bos is not None and ids[:2] == [bos, bos] else ids for ids in encoded]


def prompt_token_ids(tokenizer, prompts: Sequence) -> list[tuple[int, ...]]:
    """Each prompt's token ids: text is tokenized (tokenize_prompts); token ids are kept as they are (a multi-turn
    episode's context is never re-tokenized: rl_lora.sampling.episodes)."""
    texts = [p for p in prompts if isinstance(p, str)]
    encoded = iter(tokenize_prompts(tokenizer, texts) if texts else [])
    return [tuple(next(encoded)) if isinstance(p, str) else tuple(p) for p in prompts]


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), each [rows, longest row]; shorter rows are padded on the left."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row):] = torch.tensor(row)
            mask[i, width - len(row):] = 1
    return ids, mask


def eos_token_ids(tokenizer, generation_config=None) -> list[int]:
    """The tokenizer's EOS and every EOS the model's generation config names (chat models often add one)."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(generation_config, "eos_token_id", None)
    ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
    return sorted(i for i in ids if i is not None)


def pad_token_id(tokenizer, eos_ids: list[int]) -> int:
    """The tokenizer's pad id, or the first EOS id when it has none (padding is masked out either way)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
