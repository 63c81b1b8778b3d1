"""Training data for the loop: a map-style dataset over a ShowerSet and a resumable,
rank-aware batch order.

The batch order is a pure function of ``(seed, step, rank, world_size)``: each epoch's
per-rank indices come from :class:`torch.utils.data.distributed.DistributedSampler`
(shuffled with its ``set_epoch``), cut into consecutive batches. A resumed run therefore
sees exactly the batches the uninterrupted run would have seen, with no sampler state to
save, and the same holds for any number of DataLoader workers.

Because the sampler deals the epoch's permutation out round-robin (rank ``r`` takes
positions ``r, r + W, r + 2W, ...``), the union of the ``W`` ranks' batches at a step is
exactly the batch a single process with ``W`` times the batch size takes at that step.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from caloforge.data.showers import ShowerSet
from caloforge.errors import CaloforgeError

__all__ = ["ShowerDataset", "StepBatchSampler", "collate_batch"]


class ShowerDataset(Dataset):
    """Showers as a map-style torch dataset; a batch is a dict of tensors.

    Items: ``voxels`` ``(n_voxels,)`` MeV and ``conditions`` ``(n_conditions,)`` (energy
    MeV, angle degrees). :meth:`__getitems__` returns a whole batch at once.
    """

    def __init__(self, showers: ShowerSet):
        self.showers = showers
        self.voxels = torch.from_numpy(np.ascontiguousarray(showers.voxels, np.float32))
        self.conditions = torch.from_numpy(np.ascontiguousarray(showers.conditions()))

    def __len__(self) -> int:
        return len(self.voxels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"voxels": self.voxels[index], "conditions": self.conditions[index]}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return {"voxels": self.voxels[idx], "conditions": self.conditions[idx]}


def collate_batch(batch):
    """Collate for :class:`ShowerDataset`: batches come whole from ``__getitems__``."""
    if isinstance(batch, dict):
        return batch
    return torch.utils.data.default_collate(batch)


class StepBatchSampler(Sampler[list[int]]):
    """Yield the index lists of steps ``start_step + 1, ..., max_steps``.

    Args:
        n: number of showers.
        batch_size: showers per step and rank.
        seed: base seed of the epoch permutations.
        max_steps: last step.
        start_step: steps already done (resume point).
        rank, world_size: this process's share under torchrun.

    DistributedSampler seeds epoch ``e`` with ``seed' + e``; ``seed'`` is ``seed`` times a
    large prime so that runs with neighbouring seeds do not share epochs.

    Raises:
        CaloforgeError: fewer showers than one step takes from all processes.
    """

    def __init__(self, n: int, batch_size: int, seed: int, max_steps: int, start_step: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.per_epoch = n // (batch_size * world_size)
        if self.per_epoch < 1:
            raise CaloforgeError(
                f"batch size {batch_size} x {world_size} process(es) is larger than the "
                f"{n} training showers; use a smaller --batch-size"
            )
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.max_steps, self.start_step = max_steps, start_step
        self.rank, self.world_size = rank, world_size
        self._epoch, self._perm = -1, None

    def _rank_indices(self, epoch: int) -> np.ndarray:
        """This rank's indices of ``epoch`` in order (DistributedSampler, drop_last)."""
        if epoch != self._epoch:
            sampler = DistributedSampler(range(self.n), num_replicas=self.world_size,
                                         rank=self.rank, shuffle=True,
                                         seed=(self.seed * 1_000_003) % 2**62, drop_last=True)
            sampler.set_epoch(epoch)
            self._perm = np.fromiter(iter(sampler), dtype=np.int64)
            self._epoch = epoch
        return self._perm

    def indices(self, step: int) -> list[int]:
        """Indices of (1-based) ``step`` for this rank."""
        epoch, k = divmod(step - 1, self.per_epoch)
        mine = self._rank_indices(epoch)
        return mine[k * self.batch_size:(k + 1) * self.batch_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step + 1, self.max_steps + 1):
            yield self.indices(step)

    def __len__(self) -> int:
        return max(self.max_steps - self.start_step, 0)
