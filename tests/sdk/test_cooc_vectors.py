"""The item table's co-occurrence start (sdk/neighbors.py cooc_vectors): the sparse path that large catalogs take
gives the dense path's vectors, without forming the N x N matrix."""
import types

import numpy as np

from metarec.sdk import neighbors


def _events(seed=0, n_users=300, n_items=120):
    """Users drawn from 4 planted item groups (distinct leading eigenvalues), with repeated events."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 4, n_users)
    users, items = [], []
    for u in range(n_users):
        pool = np.flatnonzero(np.arange(n_items) % 4 == group[u])
        it = np.concatenate([rng.choice(pool, 8), rng.integers(0, n_items, 3)])
        users += [u] * len(it)
        items += list(it)
    return types.SimpleNamespace(user=np.array(users), item=np.array(items), n_users=n_users, n_items=n_items)


def _both(ds, fit, dim, monkeypatch):
    monkeypatch.setattr(neighbors, "DENSE_EIGH_MAX", 10**9)
    dense = neighbors.cooc_vectors(ds, fit, dim)
    monkeypatch.setattr(neighbors, "DENSE_EIGH_MAX", 0)
    return dense, neighbors.cooc_vectors(ds, fit, dim)


def test_the_sparse_path_gives_the_dense_paths_item_similarities(monkeypatch):
    ds = _events()
    fit = np.arange(0, ds.n_users, 2)  # the other users' events must stay out of both
    dense, sparse = _both(ds, fit, 6, monkeypatch)
    assert dense.shape == sparse.shape == (ds.n_items, 6)
    np.testing.assert_allclose(sparse @ sparse.T, dense @ dense.T, atol=1e-4)
    # the same vectors, signs included: both paths take each column's largest entry positive
    cos = (dense * sparse).sum(0) / np.linalg.norm(dense, axis=0) / np.linalg.norm(sparse, axis=0)
    assert cos.min() > 0.999


def test_the_dense_start_does_not_take_lapacks_signs(monkeypatch):
    """An eigenvector's sign is the solver's choice (LAPACK's followed its thread count): the start fixes it."""
    ds = _events()
    fit = np.arange(ds.n_users)
    before = neighbors.cooc_vectors(ds, fit, 6)
    eigh = np.linalg.eigh

    def flipped(c):
        lam, vec = eigh(c)
        return lam, vec * np.where(np.arange(vec.shape[1]) % 2 == 0, -1.0, 1.0)[None, :]

    monkeypatch.setattr(np.linalg, "eigh", flipped)
    after = neighbors.cooc_vectors(ds, fit, 6)
    np.testing.assert_array_equal(after, before)
    assert (before[np.abs(before).argmax(axis=0), np.arange(6)] > 0).all()


def test_the_sparse_path_is_the_same_each_run_and_reads_only_fit_users(monkeypatch):
    ds = _events(seed=1)
    monkeypatch.setattr(neighbors, "DENSE_EIGH_MAX", 0)
    fit = np.arange(0, ds.n_users, 2)
    a, b = neighbors.cooc_vectors(ds, fit, 5), neighbors.cooc_vectors(ds, fit, 5)
    np.testing.assert_array_equal(a, b)
    other = neighbors.cooc_vectors(ds, np.arange(1, ds.n_users, 2), 5)
    assert np.abs(a @ a.T - other @ other.T).max() > 1e-2


def test_a_large_catalog_with_few_items_seen_takes_them_alone(monkeypatch):
    ds = _events(seed=2, n_items=400)
    fit = np.arange(0, ds.n_users, 2)
    keep = np.isin(ds.user, fit) & (ds.item < 60)  # the fit users' events touch 60 items of 400
    ds = type(ds)(user=ds.user[keep | ~np.isin(ds.user, fit)], item=ds.item[keep | ~np.isin(ds.user, fit)],
                  n_users=ds.n_users, n_items=ds.n_items)
    monkeypatch.setattr(neighbors, "DENSE_EIGH_MAX", 10**9)
    dense = neighbors.cooc_vectors(ds, fit, 6)
    monkeypatch.setattr(neighbors, "DENSE_EIGH_MAX", 100)  # 400 items: the sparse path; 60 seen: dense on them
    sub = neighbors.cooc_vectors(ds, fit, 6)
    np.testing.assert_allclose(sub @ sub.T, dense @ dense.T, atol=1e-4)
    assert not sub[60:].any()


def test_two_users_over_a_large_catalog_start_without_an_arpack_error(monkeypatch):
    monkeypatch.setattr(neighbors, "DENSE_EIGH_MAX", 100)
    ds = types.SimpleNamespace(user=np.array([0, 1, 1, 1]), item=np.array([3, 4, 3, 7]), n_users=2, n_items=5000)
    v = neighbors.cooc_vectors(ds, np.array([0, 1]), 32)
    assert v.shape == (5000, 32) and np.isfinite(v).all()
    assert v[[3, 4, 7]].any() and not np.delete(v, [3, 4, 7], axis=0).any()
    assert not neighbors.cooc_vectors(ds, np.array([], np.int64), 32).any()


def test_the_start_does_not_follow_the_blas_thread_count(ml100k_dir):
    """With two BLAS threads LAPACK flipped 7 of 32 eigenvectors of ML-100K's second forward block (make demo and an
    OMP_NUM_THREADS=1 run then trained different priors): the start pins one thread itself."""
    from threadpoolctl import threadpool_limits

    from metarec.sdk.data import load_recbole_atomic
    from metarec.sdk.floor import forward_blocks

    ds = load_recbole_atomic(ml100k_dir)
    fit = forward_blocks(ds, 3)[1][0]
    with threadpool_limits(limits=1):
        one = neighbors.cooc_vectors(ds, fit, 32)
    with threadpool_limits(limits=2):
        two = neighbors.cooc_vectors(ds, fit, 32)
    assert np.array_equal(one, two)
