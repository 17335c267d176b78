"""Which training samples each step sees: seeded epochs of shuffled indices, resumable from a position."""
from __future__ import annotations

import random


class DataOrder:
    def __init__(self, num_samples: int, seed: int, position: int = 0):
        self.num_samples, self.seed, self.position = num_samples, seed, position

    def _epoch(self, epoch: int) -> list[int]:
        order = list(range(self.num_samples))
        random.Random(f"{self.seed}-{epoch}").shuffle(order)
        return order

    def take(self, count: int) -> list[int]:
        indices = []
        while len(indices) < count:
            epoch, offset = divmod(self.position, self.num_samples)
            order = self._epoch(epoch)
            chunk = order[offset:offset + count - len(indices)]
            indices += chunk
            self.position += len(chunk)
        return indices
