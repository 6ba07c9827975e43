"""Tests for jobflow.similarity.index.VectorIndex against a plain brute-force reference."""

import random
import threading

import numpy as np
import pytest

from jobflow.similarity.index import VectorIndex

# float32 storage vs float64 reference: scores agree to ~1e-6; treat closer ones as ties.
TOL = 1e-5


def brute_force_top_k(matrix, ids, query, k, min_score=-1.0, exclude=()):
    """Reference top-k: float64, one row at a time, ties by id."""
    q = np.asarray(query, dtype=np.float64)
    q = q / np.linalg.norm(q)
    scored = []
    for row, id_ in zip(matrix, ids):
        if id_ in exclude:
            continue
        v = np.asarray(row, dtype=np.float64)
        s = float(np.dot(v / np.linalg.norm(v), q))
        if s >= min_score:
            scored.append((id_, s))
    scored.sort(key=lambda p: (-p[1], p[0]))
    return scored[:k]


def assert_same_ranking(got, expected, ref_scores, min_score=-1.0):
    """got == expected, except that entries whose reference scores differ by < TOL may swap."""
    boundary = sum(abs(s - min_score) < TOL for s in ref_scores.values())
    assert abs(len(got) - len(expected)) <= boundary
    assert len({i for i, _ in got}) == len(got), "duplicate ids"
    for (gi, gs), (ei, es) in zip(got, expected):
        assert gs == pytest.approx(ref_scores[gi], abs=TOL)
        if gi != ei:
            assert abs(ref_scores[gi] - ref_scores[ei]) < TOL, (gi, ei)
    scores = [s for _, s in got]
    assert scores == sorted(scores, reverse=True)


def make(n, dim, seed, capacity=16):
    rng = np.random.default_rng(seed)
    ids = [f"id{i:05d}" for i in rng.permutation(n)]
    mat = rng.standard_normal((n, dim)).astype(np.float32)
    index = VectorIndex(dim, capacity=capacity)
    index.upsert(ids, mat)
    return index, ids, mat, rng


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dim", [8, 384])
@pytest.mark.parametrize("n", [1, 2, 17, 500, 3000])
def test_top_k_matches_brute_force(seed, dim, n):
    index, ids, mat, rng = make(n, dim, seed)
    for k in (1, 10, n + 5):
        for min_score in (-1.0, 0.0, 0.1):
            query = rng.standard_normal(dim)
            full = dict(brute_force_top_k(mat, ids, query, n, min_score=-2.0))
            expected = brute_force_top_k(mat, ids, query, k, min_score)
            got = index.top_k(query, k, min_score)
            assert len(got) <= k
            assert_same_ranking(got, expected, full, min_score)


def test_no_self_match_and_exclude():
    index, ids, mat, _ = make(200, 16, 3)
    index.upsert(["twin"], mat[:1])  # same direction as ids[0]
    got = index.top_k(mat[0], 5, exclude=[ids[0], "unknown"])
    assert ids[0] not in [i for i, _ in got]
    assert got[0][0] == "twin" and got[0][1] == pytest.approx(1.0, abs=1e-6)
    neigh = index.top_k_for_ids([ids[0], "twin"], 5)
    assert ids[0] not in [i for i, _ in neigh[ids[0]]]
    assert neigh[ids[0]][0][0] == "twin"
    assert neigh["twin"][0][0] == ids[0]
    assert all(i not in [j for j, _ in lst] for i, lst in neigh.items())


def test_ties_broken_by_id():
    index = VectorIndex(4)
    names = ["e", "b", "d", "a", "c", "f"]
    index.upsert(names, np.tile([1.0, 2.0, 0.0, 0.0], (6, 1)))
    index.upsert(["z"], [[1.0, 2.0, 0.0, 0.0]])
    index.upsert(["best"], [[1.0, 2.0, 0.1, 0.0]])
    q = [1.0, 2.0, 0.1, 0.0]
    assert [i for i, _ in index.top_k(q, 4)] == ["best", "a", "b", "c"]
    assert [i for i, _ in index.top_k(q, 3, exclude=["best", "a"])] == ["b", "c", "d"]
    assert [i for i, _ in index.top_k_for_ids(["c"], 3)["c"]] == ["a", "b", "d"]


def test_normalisation_and_upsert_replaces():
    index = VectorIndex(3)
    index.upsert(["a", "b"], np.array([[3.0, 4.0, 0.0], [0.0, 0.0, -2.0]]))
    np.testing.assert_allclose(index.vector("a"), [0.6, 0.8, 0.0], atol=1e-7)
    assert index.vector("a").dtype == np.float32
    index.vector("a")[:] = 0  # a copy: the index is untouched
    np.testing.assert_allclose(np.linalg.norm(index.vector("a")), 1.0, atol=1e-6)
    index.upsert(["a"], [[0.0, 5.0, 0.0]])
    assert len(index) == 2 and index.ids() == ["a", "b"]
    np.testing.assert_allclose(index.vector("a"), [0.0, 1.0, 0.0])
    assert index.top_k([0, 1, 0], 1) == [("a", pytest.approx(1.0))]
    index.upsert(["c", "c"], [[1, 0, 0], [0, 0, 7]])  # duplicate in a batch: last wins
    assert len(index) == 3
    np.testing.assert_allclose(index.vector("c"), [0, 0, 1])


@pytest.mark.parametrize(
    "vectors, match",
    [
        (np.ones((2, 5)), "'a'.*length 5"),
        ([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0]], "'bad'"),
        ([[1.0, 2.0, 3.0, 4.0], [1.0, np.nan, 0, 0]], "'bad'.*non-finite"),
        ([[1.0, 2.0, 3.0, 4.0], [np.inf, 1.0, 0, 0]], "'bad'.*non-finite"),
        ([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]], "'bad'.*zero norm"),
        (np.ones((3, 4)), "2 ids but 3 vectors"),
    ],
)
def test_validation_names_the_id_and_is_atomic(vectors, match):
    index = VectorIndex(4)
    index.upsert(["keep"], [[1.0, 0, 0, 0]])
    with pytest.raises(ValueError, match=match):
        index.upsert(["a", "bad"], vectors)
    assert index.ids() == ["keep"]


def test_query_validation():
    index = VectorIndex(4)
    index.upsert(["a"], [[1.0, 0, 0, 0]])
    for bad in ([1.0, 2.0], [0, 0, 0, 0], [np.nan, 1, 0, 0]):
        with pytest.raises(ValueError):
            index.top_k(bad, 1)
    with pytest.raises(KeyError):
        index.top_k_for_ids(["missing"], 1)


def test_growth_is_geometric():
    index = VectorIndex(8, capacity=1)
    rng = np.random.default_rng(0)
    caps = set()
    for i in range(1000):
        index.upsert([i], rng.standard_normal((1, 8)))
        caps.add(index.capacity)
    assert index.capacity == 1024 and len(caps) == 11
    assert index.memory_bytes() >= 1024 * 8 * 4


def test_random_ops_match_dict_model():
    dim, rng, prng = 6, np.random.default_rng(7), random.Random(7)
    index, model = VectorIndex(dim, capacity=2), {}
    for step in range(3000):
        op = prng.random()
        if op < 0.55:
            batch = [f"k{prng.randrange(300)}" for _ in range(prng.randint(1, 4))]
            vecs = rng.standard_normal((len(batch), dim))
            index.upsert(batch, vecs)
            for i, v in zip(batch, vecs):
                model[i] = v / np.linalg.norm(v)
        else:
            batch = [f"k{prng.randrange(300)}" for _ in range(prng.randint(1, 4))]
            index.remove(batch)
            for i in batch:
                model.pop(i, None)
        assert len(index) == len(model)
        assert sorted(index.ids()) == sorted(model)
        if step % 50 == 0:
            for i, v in model.items():
                assert i in index
                np.testing.assert_allclose(index.vector(i), v, atol=1e-6)
            if model:
                keys = list(model)
                q = rng.standard_normal(dim)
                full = dict(brute_force_top_k([model[i] for i in keys], keys, q, len(keys), -2.0))
                got = index.top_k(q, 7)
                assert_same_ranking(got, brute_force_top_k([model[i] for i in keys], keys, q, 7), full)
    index.remove(list(model) + ["never-there"])
    assert len(index) == 0 and index.ids() == [] and index.top_k(np.ones(dim), 3) == []
    assert list(index.all_top_k(3)) == []


def test_removed_ids_never_returned():
    index, ids, mat, rng = make(400, 8, 11)
    gone = set(ids[::3])
    index.remove(gone)
    for row in mat[:50]:
        assert not gone & {i for i, _ in index.top_k(row, 400)}
    for lst in index.top_k_for_ids([i for i in ids if i not in gone], 50).values():
        assert not gone & {i for i, _ in lst}
    assert all(i not in index for i in gone)
    with pytest.raises(KeyError):
        index.vector(next(iter(gone)))


@pytest.mark.parametrize("block_size", [1, 64, 257, 1000])
def test_all_top_k_equals_top_k_for_ids(block_size):
    index, ids, mat, _ = make(257, 16, 5)
    batch = index.top_k_for_ids(ids, 8, min_score=0.05)
    seen = {}
    for block_ids, lists in index.all_top_k(8, min_score=0.05, block_size=block_size):
        assert len(block_ids) == len(lists) <= block_size
        seen.update(zip(block_ids, lists))
    assert sorted(seen) == sorted(ids)
    for i in ids:
        full = dict(brute_force_top_k(mat, ids, index.vector(i), len(ids), -2.0, exclude={i}))
        assert_same_ranking(seen[i], batch[i], full, 0.05)
        assert_same_ranking(seen[i], brute_force_top_k(mat, ids, mat[ids.index(i)], 8, 0.05, {i}), full, 0.05)


def test_scores_against():
    index, ids, mat, rng = make(100, 12, 9)
    q = rng.standard_normal(12)
    got_ids, scores = index.scores_against(q)
    assert list(got_ids) == index.ids() and scores.shape == (100,)
    ref = dict(brute_force_top_k(mat, ids, q, 100, -2.0))
    np.testing.assert_allclose(scores, [ref[i] for i in got_ids], atol=TOL)
    sub_ids, sub = index.scores_against(q, [ids[5], "nope", ids[2]])
    assert list(sub_ids) == [ids[5], ids[2]]
    np.testing.assert_allclose(sub, [ref[ids[5]], ref[ids[2]]], atol=TOL)


def test_concurrent_mutation_and_reads():
    index, ids, mat, rng = make(500, 8, 13)
    errors = []

    def writer(seed):
        r = np.random.default_rng(seed)
        try:
            for j in range(300):
                key = f"w{seed}-{j % 50}"
                index.upsert([key], r.standard_normal((1, 8)))
                if j % 3 == 0:
                    index.remove([key])
        except Exception as e:  # pragma: no cover - surfaced below
            errors.append(e)

    def reader():
        try:
            for _ in range(100):
                index.top_k(rng.standard_normal(8), 5)
                for block_ids, lists in index.all_top_k(3, block_size=128):
                    assert len(block_ids) == len(lists)
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(s,)) for s in (1, 2)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(index) == len(set(index.ids()))
    for i in index.ids():
        assert np.linalg.norm(index.vector(i)) == pytest.approx(1.0, abs=1e-6)
