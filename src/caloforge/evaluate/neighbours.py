"""Nearest neighbours of generated showers in a reference set (memorisation check).

A generator that memorised its training showers produces showers closer to training showers
than two independent showers are to each other. :func:`nearest_neighbours` finds the
closest reference showers, streaming the reference in chunks so that any file size fits in
memory; :func:`memorisation_ratio` compares the typical distance of generated showers to
the reference with that of held-out reference showers to the rest of it.

References:
    C. Krause, D. Shih, "CaloFlow: fast and accurate generation of calorimeter showers
    with normalizing flows", Phys. Rev. D 107 (2023) 113003, arXiv:2106.05285
    (nearest-neighbour figures).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from caloforge.errors import CaloforgeError

__all__ = ["NeighbourSearch", "nearest_neighbours", "memorisation_ratio"]


class NeighbourSearch:
    """Running ``k``-nearest-neighbour search over reference rows that arrive in chunks.

    Args:
        queries: ``(Q, d)`` showers (flat voxels, MeV, or any features).
        k: neighbours per query.
        exclude: ``(Q,)`` reference row to skip for each query (-1 for none), e.g. the
            query's own row when the queries are taken from the reference.
    """

    def __init__(self, queries: np.ndarray, k: int = 1, exclude: np.ndarray | None = None):
        self.queries = np.asarray(queries, dtype=np.float64)
        if self.queries.ndim != 2:
            raise CaloforgeError(f"queries must be (Q, d), got {self.queries.shape}")
        self.k = k
        self.exclude = None if exclude is None else np.asarray(exclude, dtype=np.int64)
        self._q_norm = np.einsum("ij,ij->i", self.queries, self.queries)
        self._best_d = np.full((len(self.queries), k), np.inf)
        self._best_i = np.full((len(self.queries), k), -1, dtype=np.int64)
        self.n_seen = 0

    def update(self, chunk: np.ndarray) -> None:
        """Add the next ``(n, d)`` reference rows (numbered after the previous ones)."""
        chunk = np.asarray(chunk, dtype=np.float64)
        if chunk.ndim != 2 or chunk.shape[1] != self.queries.shape[1]:
            raise CaloforgeError(f"reference rows have shape {chunk.shape[1:]}, queries "
                                 f"{self.queries.shape[1:]}")
        offset = self.n_seen
        d2 = (self._q_norm[:, None] + np.einsum("ij,ij->i", chunk, chunk)[None, :]
              - 2.0 * self.queries @ chunk.T)
        if self.exclude is not None:
            local = self.exclude - offset
            rows = np.nonzero((local >= 0) & (local < len(chunk)))[0]
            d2[rows, local[rows]] = np.inf
        index = np.broadcast_to(np.arange(offset, offset + len(chunk)), d2.shape)
        all_d = np.concatenate([self._best_d, d2], axis=1)
        all_i = np.concatenate([self._best_i, index], axis=1)
        take = np.argsort(all_d, axis=1, kind="stable")[:, :self.k]
        self._best_d = np.take_along_axis(all_d, take, axis=1)
        self._best_i = np.take_along_axis(all_i, take, axis=1)
        self.n_seen += len(chunk)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, distances)``, each ``(Q, k)``, closest first."""
        needed = self.k + (0 if self.exclude is None else 1)
        if self.n_seen < needed:
            raise CaloforgeError(f"need at least {needed} reference showers for the "
                                 f"nearest-neighbour search, got {self.n_seen}")
        return self._best_i.copy(), np.sqrt(np.clip(self._best_d, 0.0, None))


def nearest_neighbours(queries: np.ndarray, reference: np.ndarray | Iterable[np.ndarray],
                       k: int = 1, exclude: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` reference rows closest (Euclidean) to each query row.

    Args:
        queries: ``(Q, d)`` showers (flat voxels, MeV, or any features).
        reference: ``(N, d)`` array, or an iterable of ``(n_j, d)`` chunks (rows are
            numbered across chunks in order).
        k: neighbours per query.
        exclude: ``(Q,)`` reference row to skip for each query (-1 for none).

    Returns:
        ``(indices, distances)``, each ``(Q, k)``, closest first; distances in the units of
        the rows (MeV for voxels).
    """
    search = NeighbourSearch(queries, k, exclude)
    for chunk in ([reference] if isinstance(reference, np.ndarray) else reference):
        search.update(chunk)
    return search.result()


def memorisation_ratio(generated_distances: np.ndarray, reference_distances: np.ndarray
                       ) -> float:
    """Median nearest-neighbour distance of generated showers over that of held-out
    reference showers: ~1 for a generator as far from the reference as fresh showers are,
    well below 1 for one that reproduces (memorised) reference showers."""
    ref = float(np.median(reference_distances))
    return float(np.median(generated_distances)) / ref if ref > 0 else float("nan")
