"""The resumable prompt order of an RL run: an endless seeded stream of prompt indices, the same on every
process, of which each process takes its own share per step."""
from __future__ import annotations

from typing import List

from rlhf_cli.data.packing import epoch_order


class PromptStream:
    """Endless seeded order over the prompts; ``take(n)`` returns the next n global indices."""

    def __init__(self, n: int, seed: int, shuffle: bool, cursor: int = 0):
        self.n, self.seed, self.shuffle, self.cursor = n, seed, shuffle, cursor
        self._epoch, self._order = -1, []

    def take(self, count: int) -> List[int]:
        out = []
        for _ in range(count):
            epoch, k = divmod(self.cursor, self.n)
            if epoch != self._epoch:
                self._epoch, self._order = epoch, epoch_order(self.n, self.seed, epoch, self.shuffle)
            out.append(self._order[k])
            self.cursor += 1
        return out

    def draw(self, per_process: int, rank: int, world_size: int) -> List[int]:
        """This process's ``per_process`` prompts of the next step; every process advances the cursor by the
        whole step's count, so all of them stay at the same position (and resume there)."""
        idx = self.take(per_process * world_size)
        return idx[rank * per_process:(rank + 1) * per_process]
