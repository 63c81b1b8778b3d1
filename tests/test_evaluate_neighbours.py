"""Nearest neighbours with known answers."""

import numpy as np
import pytest

from caloforge import CaloforgeError
from caloforge.evaluate import NeighbourSearch, memorisation_ratio, nearest_neighbours


def test_nearest_neighbours_known_answer_and_chunking():
    reference = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 5.0], [3.0, 4.0]])
    queries = np.array([[9.0, 0.0], [0.0, 0.0], [3.0, 3.0]])
    index, distance = nearest_neighbours(queries, reference, k=2)
    np.testing.assert_array_equal(index, [[1, 3], [0, 2], [3, 2]])
    np.testing.assert_allclose(distance[:, 0], [1.0, 0.0, 1.0], atol=1e-9)
    np.testing.assert_allclose(distance[1, 1], 5.0)
    # the same answer when the reference arrives in chunks
    chunked = nearest_neighbours(queries, [reference[:1], reference[1:3], reference[3:]], k=2)
    np.testing.assert_array_equal(chunked[0], index)
    np.testing.assert_allclose(chunked[1], distance)


def test_exclude_skips_the_query_itself():
    reference = np.array([[0.0], [1.0], [3.0]])
    search = NeighbourSearch(reference[:2], k=1, exclude=np.array([0, 1]))
    search.update(reference[:2])
    search.update(reference[2:])
    index, distance = search.result()
    np.testing.assert_array_equal(index[:, 0], [1, 0])
    np.testing.assert_allclose(distance[:, 0], [1.0, 1.0])


def test_memorisation_ratio_and_errors():
    assert memorisation_ratio(np.zeros(5), np.ones(5)) == 0.0
    assert memorisation_ratio(np.full(5, 2.0), np.ones(5)) == pytest.approx(2.0)
    with pytest.raises(CaloforgeError, match="shape"):
        nearest_neighbours(np.zeros((2, 3)), np.zeros((4, 2)))
    with pytest.raises(CaloforgeError, match="at least"):
        nearest_neighbours(np.zeros((1, 2)), np.zeros((1, 2)), k=2)
