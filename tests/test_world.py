"""The static world: popular flags, subsets, atomic save/load, and the synthetic generator."""

from __future__ import annotations

import dataclasses
import os

import jax.numpy as jnp
import numpy as np
import pytest

from purerec.data.datasets import get_worlds
from purerec.data.synthetic import generate
from purerec.sim import world as W
from purerec.sim.world import load_world, popular_flags, save_world, subset_world, World


def _np(world: World) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in world.__dict__.items()}


def assert_worlds_equal(a: World, b: World) -> None:
    da, db = _np(a), _np(b)
    assert set(da) == set(db)
    for k in da:
        assert da[k].dtype == db[k].dtype, k
        np.testing.assert_array_equal(da[k], db[k], err_msg=k)


def ref_popular(pop, frac):
    """Loop reference: rank items by (-pop, index) and flag the first round(frac * n)."""
    n = len(pop)
    ranked = sorted(range(n), key=lambda i: (-pop[i], i))
    k = max(1, int(round(frac * n)))
    out = np.zeros(n, bool)
    for i in ranked[:k]:
        out[i] = True
    return out


# --------------------------------------------------------------------------------------------
# popular_flags / subset_world
# --------------------------------------------------------------------------------------------

POP10 = np.array([5, 9, 9, 1, 9, 0, 3, 9, 2, 2], np.float32)


@pytest.mark.parametrize("frac,expected", [
    (0.2, [1, 2]),  # four items tie at 9: the two lowest indices win
    (0.3, [1, 2, 4]),
    (0.5, [0, 1, 2, 4, 7]),  # all four 9s, then the 5
    (0.7, [0, 1, 2, 4, 6, 7, 8]),  # ... the 3, then the first of the tied 2s
    (0.01, [1]),  # at least one item
])
def test_popular_flags_hand_example_with_ties(frac, expected):
    flags = popular_flags(POP10, frac)
    assert flags.dtype == bool
    np.testing.assert_array_equal(np.nonzero(flags)[0], expected)
    np.testing.assert_array_equal(flags, ref_popular(list(POP10), frac))


def test_popular_flags_random_matches_reference():
    rng = np.random.default_rng(0)
    for n in (7, 50, 333):
        pop = rng.integers(0, 6, n).astype(np.float32)  # many ties
        for frac in (0.1, 0.2, 0.5):
            np.testing.assert_array_equal(popular_flags(pop, frac), ref_popular(list(pop), frac))


def hand_world(n_users=4, n_items=6) -> World:
    rng = np.random.default_rng(1)
    pop = np.array([0, 10, 3, 7, 7, 1], np.float32)[:n_items]
    return World(
        true_user=jnp.asarray(rng.normal(size=(n_users, 3)), jnp.float32),
        true_item=jnp.asarray(rng.normal(size=(n_items, 3)), jnp.float32),
        item_emb=jnp.asarray(rng.normal(size=(n_items, 2)), jnp.float32),
        item_tags=jnp.asarray(rng.random((n_items, 4)) < 0.5),
        item_pop=jnp.asarray(pop),
        popular=jnp.asarray(popular_flags(pop, 0.5)),
        item_log_reward=jnp.asarray(rng.random(n_items), jnp.float32),
        item_log_true=jnp.asarray(rng.random(n_items), jnp.float32),
        user_ids=jnp.arange(100, 100 + n_users, dtype=jnp.int32),
        item_ids=jnp.arange(200, 200 + n_items, dtype=jnp.int32),
    )


def test_world_properties():
    w = hand_world()
    assert (w.n_users, w.n_items, w.n_tags) == (4, 6, 4)
    np.testing.assert_allclose(np.asarray(w.pop_norm), np.array([0, 10, 3, 7, 7, 1]) / 10.0, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(w.log_pop), np.log1p([0, 10, 3, 7, 7, 1]), rtol=1e-6)
    np.testing.assert_array_equal(np.nonzero(np.asarray(w.popular))[0], [1, 3, 4])
    r = np.asarray(W.true_response(w, jnp.int32(2), jnp.asarray([0, 5, 3])))
    ti, tu = np.asarray(w.true_item), np.asarray(w.true_user)
    np.testing.assert_allclose(r, 1 / (1 + np.exp(-(ti[[0, 5, 3]] @ tu[2]))), rtol=1e-5)
    # All-zero popularity: pop_norm stays finite (0), not NaN.
    z = w.replace(item_pop=jnp.zeros(6))
    assert np.all(np.asarray(z.pop_norm) == 0)


def test_subset_world_keeps_rows():
    w = hand_world()
    users, items = np.array([3, 1]), np.array([5, 0, 2, 4])
    s = subset_world(w, users, items, popular_frac=0.5)
    full, sub = _np(w), _np(s)
    for k in ("true_user", "user_ids"):
        np.testing.assert_array_equal(sub[k], full[k][users], err_msg=k)
    for k in ("true_item", "item_emb", "item_tags", "item_pop", "item_log_reward", "item_log_true", "item_ids"):
        np.testing.assert_array_equal(sub[k], full[k][items], err_msg=k)
    # Popular flag recomputed within the subset: pops [1, 0, 3, 7] -> top 2 are items 4 (7) and 2 (3).
    np.testing.assert_array_equal(sub["popular"], [False, False, True, True])
    assert sub["popular"].dtype == bool
    # Same true responses for the same (user, item) pairs.
    r_full = np.asarray(W.true_response(w, jnp.int32(3), jnp.asarray(items)))
    r_sub = np.asarray(W.true_response(s, jnp.int32(0), jnp.arange(4)))
    np.testing.assert_allclose(r_sub, r_full, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# save_world / load_world
# --------------------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    w = hand_world()
    path = str(tmp_path / "sub" / "w.npz")  # parent directory is created
    save_world(path, w)
    assert sorted(os.listdir(tmp_path / "sub")) == ["w.npz"]  # no temp file left behind
    assert_worlds_equal(load_world(path), w)
    # Overwriting an existing file works and leaves nothing else behind either.
    w2 = w.replace(item_pop=w.item_pop + 1)
    save_world(path, w2)
    assert sorted(os.listdir(tmp_path / "sub")) == ["w.npz"]
    assert_worlds_equal(load_world(path), w2)


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    w = hand_world()
    path = str(tmp_path / "w.npz")
    save_world(path, w)
    before = open(path, "rb").read()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save_world(path, w.replace(item_pop=w.item_pop * 2))
    assert sorted(os.listdir(tmp_path)) == ["w.npz"]  # the temp file was removed
    assert open(path, "rb").read() == before  # the old file is intact


def test_small_world_round_trip(tmp_path, small_worlds):
    path = str(tmp_path / "test.npz")
    save_world(path, small_worlds[1])
    assert_worlds_equal(load_world(path), small_worlds[1])


def test_get_worlds_cache_round_trip(tmp_path, small_cfg, small_worlds):
    cfg = dataclasses.replace(small_cfg, world=dataclasses.replace(small_cfg.world, cache_dir=str(tmp_path)))
    a = get_worlds(cfg)  # builds and caches
    files = sorted(os.listdir(tmp_path))
    assert len(files) == 2 and all(f.startswith("world-") and f.endswith(".npz") for f in files)
    b = get_worlds(cfg)  # loads
    for x, y, z in zip(a, b, small_worlds):
        assert_worlds_equal(x, y)
        assert_worlds_equal(x, z)
    assert sorted(os.listdir(tmp_path)) == files


# --------------------------------------------------------------------------------------------
# The synthetic generator
# --------------------------------------------------------------------------------------------


def test_generation_is_deterministic(small_cfg, small_worlds):
    again = generate(small_cfg.world, small_cfg.feedback)
    for a, b in zip(small_worlds, again):
        assert_worlds_equal(a, b)


def test_different_seed_gives_different_world(small_cfg, small_worlds):
    cfg = dataclasses.replace(small_cfg.world, seed=small_cfg.world.seed + 1)
    other = generate(cfg, small_cfg.feedback)
    for a, b in zip(small_worlds, other):
        da, db = _np(a), _np(b)
        assert da["true_item"].shape == db["true_item"].shape
        for k in ("true_user", "true_item", "item_pop", "item_tags", "item_emb"):
            assert not np.array_equal(da[k], db[k]), k


def test_world_sizes(small_cfg, small_worlds):
    train, test = small_worlds
    c = small_cfg.world
    assert (train.n_users, train.n_items, train.n_tags) == (c.n_users, c.n_items, c.n_tags)
    assert (test.n_users, test.n_items, test.n_tags) == (c.n_test_users, c.n_test_items, c.n_tags)
    assert train.item_emb.shape == (c.n_items, c.emb_dim)
    assert train.true_item.shape[1] == train.true_user.shape[1]
    for w in small_worlds:
        for k, v in _np(w).items():
            if v.dtype.kind == "f":
                assert np.isfinite(v).all(), k


def test_test_world_is_subset_of_train_world_kuairec(small_cfg, small_worlds):
    assert small_cfg.world.preset == "kuairec"
    train, test = small_worlds
    tr_items, te_items = np.asarray(train.item_ids), np.asarray(test.item_ids)
    tr_users, te_users = np.asarray(train.user_ids), np.asarray(test.user_ids)
    assert len(np.unique(te_items)) == len(te_items) and len(np.unique(tr_items)) == len(tr_items)
    assert np.isin(te_items, tr_items).all()
    assert np.isin(te_users, tr_users).all()
    # Shared items carry the same hidden and visible features in both worlds (one universe).
    pos = {int(i): j for j, i in enumerate(tr_items)}
    idx = np.array([pos[int(i)] for i in te_items])
    for k in ("true_item", "item_emb", "item_tags", "item_pop", "item_log_reward", "item_log_true"):
        np.testing.assert_array_equal(np.asarray(getattr(test, k)), np.asarray(getattr(train, k))[idx], err_msg=k)
    upos = {int(u): j for j, u in enumerate(tr_users)}
    uidx = np.array([upos[int(u)] for u in te_users])
    np.testing.assert_array_equal(np.asarray(test.true_user), np.asarray(train.true_user)[uidx])


def test_item_tags(small_cfg, small_worlds):
    c = small_cfg.world
    for w in small_worlds:
        per_item = np.asarray(w.item_tags).sum(1)
        assert per_item.min() >= 1 and per_item.max() <= c.max_tags_per_item
        assert 1.0 <= per_item.mean() <= c.max_tags_per_item
    per_item = np.asarray(small_worlds[0].item_tags).sum(1)
    assert per_item.mean() == pytest.approx(c.mean_tags_per_item, abs=0.1)
    assert (per_item > 1).any()  # some items have extra tags
    # Most tags are used, and the tag prior decreases: the first tags are far more frequent than the last.
    freq = np.asarray(small_worlds[0].item_tags).sum(0)
    assert (freq > 0).sum() > c.n_tags // 2
    assert freq[:3].sum() > 2 * freq[-3:].sum()


def test_popular_share_equals_popular_frac(small_cfg, small_worlds):
    frac = small_cfg.world.popular_frac
    for w in small_worlds:
        popular = np.asarray(w.popular)
        assert popular.sum() == round(frac * w.n_items)
        assert popular.mean() == pytest.approx(frac)
        np.testing.assert_array_equal(popular, popular_flags(np.asarray(w.item_pop), frac))
        pop = np.asarray(w.item_pop)
        assert pop[popular].min() >= pop[~popular].max()  # popular = the most exposed


def test_logged_exposure_is_skewed(small_worlds):
    """The popularity-biased logger makes exposure concentrated (rich get richer)."""
    pop = np.asarray(small_worlds[0].item_pop)
    assert pop.sum() > 0
    top = np.sort(pop)[::-1]
    share_top20 = top[: len(top) // 5].sum() / top.sum()
    assert share_top20 > 0.3
    pn = np.asarray(small_worlds[0].pop_norm)
    assert pn.max() == pytest.approx(1.0) and pn.min() >= 0

