"""Logged data (``purerec.sim.logs``): the logging policy's exposure follows the world's popularity,
the flat pytree is consistent with the env, and ``train.py logs`` writes the same logs as files."""

from __future__ import annotations

import json

import jax
import numpy as np

from purerec.sim import logs
from purerec.sim.env import make_params


def _spearman(a, b):
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return np.corrcoef(ra, rb)[0, 1]


def test_logs_reproduce_the_worlds_popularity_and_chain_their_windows(small_cfg, small_worlds):
    world = small_worlds[0]
    params = make_params(world, small_cfg)
    n, steps = 128, 30
    data = jax.jit(lambda k: logs.collect(k, params, n, steps))(jax.random.PRNGKey(0))
    assert data.slate.shape == (n * steps, params.slate_size) and data.obs.items.shape[0] == n * steps
    counts = np.asarray(logs.exposure_counts(data, world.n_items))
    pop = np.asarray(world.item_pop)
    hand = np.bincount(np.asarray(data.slate).ravel(), minlength=world.n_items)
    np.testing.assert_array_equal(counts, hand)
    # The rich-get-richer logging policy: exposure ranks follow the world's popularity ranks, and
    # the popular items' share of the exposures is the one in the world's logs.
    assert _spearman(counts, pop) > 0.95
    popular = np.asarray(world.popular)
    assert abs(counts[popular].sum() / counts.sum() - pop[popular].sum() / pop.sum()) < 0.05
    # A uniform logging policy does not: its exposure is flat.
    flat = jax.jit(lambda k: logs.collect(k, params, n, steps, "uniform"))(jax.random.PRNGKey(0))
    fc = np.asarray(logs.exposure_counts(flat, world.n_items))
    assert abs(fc[popular].sum() / fc.sum() - popular.mean()) < 0.03
    # Windows chain: where a session goes on, the next window ends with this step's slate and feedback.
    k = params.slate_size
    go_on = ~np.asarray(data.done)
    nxt_items = np.asarray(data.next_obs.items)[go_on][:, -k:]
    np.testing.assert_array_equal(nxt_items, np.asarray(data.slate)[go_on])
    np.testing.assert_allclose(np.asarray(data.next_obs.feedback)[go_on][:, -k:], np.asarray(data.feedback)[go_on])
    np.testing.assert_allclose(np.asarray(data.reward), np.asarray(data.feedback).mean(1), rtol=1e-6)
    # Where a session ended, the next window is a fresh session's (empty).
    assert not np.asarray(data.next_obs.valid)[~go_on].any()


def test_session_ids_number_every_session_once():
    done = np.array([[0, 1], [1, 0], [0, 0], [0, 1]], bool)  # [T, B]
    ids = logs.session_ids(done.reshape(-1), 2).reshape(4, 2)
    # column 0: steps 0-1 session 0, steps 2-3 session 1; column 1: step 0 session 2, 1-3 session 3
    np.testing.assert_array_equal(ids, [[0, 2], [0, 3], [1, 3], [1, 3]])


def test_train_py_logs_writes_the_schema(tmp_path, monkeypatch):
    from purerec.cli import main

    env = tmp_path / "tiny.toml"
    env.write_text("[world]\nn_users = 300\nn_items = 400\nn_test_users = 120\nn_test_items = 150\nn_tags = 12\n"
                   "true_dim = 8\nemb_dim = 8\nlog_density = 0.2\ncache_dir = \"\"\n")
    out = tmp_path / "logs"
    assert main(["logs", "--out", str(out), "--env", str(env), "--offline.sessions", "16", "--seed", "3"]) == 0
    with np.load(out / "logs.npz") as z:
        cols = {k: z[k] for k in z.files}
    info = json.loads((out / "logs.json").read_text())
    assert set(cols) == set(info["columns"]) and info["rows"] == 16 * 30 == cols["reward"].shape[0]
    assert info["sessions"] == len(np.unique(cols["session"]))
    assert cols["slate"].shape == (480, 10) and cols["item_ids"].shape == (400,)
    assert (cols["t"][cols["session"] == cols["session"][0]] == np.arange((cols["session"] == cols["session"][0]).sum())).all()
    assert main(["logs", "--env", str(env)]) == 2  # --out is required
