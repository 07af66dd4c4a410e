"""DORL: the shaped reward and P_E against NumPy on hand-made cases, the learned model env keeps
``purerec.sim.env.step``'s contract (the shared rollout drives it), and the ensemble fit learns."""

from __future__ import annotations

import math
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import small_config
from purerec.agents import user_model as U
from purerec.config import apply_overrides
from purerec.sim import env as E
from purerec.sim.logs import collect, Logs
from purerec.sim.rollout import unroll
from purerec.state.stage1 import make_stage1


def tiny_config():
    return apply_overrides(small_config(), {
        "agent.kind": "dorl", "env.max_len": 6, "train.stage1_sessions": 32, "encoder.train_steps": 20,
        "offline.sessions": 64, "dorl.model_steps": 150, "dorl.model_batch": 32, "dorl.models": 3}).validate()


@pytest.fixture(scope="module")
def setup(small_worlds):
    cfg = tiny_config()
    params = E.make_params(small_worlds[0], cfg)
    frozen = jax.jit(make_stage1(cfg, params))(jax.random.key(0))[0]
    um = U.make_user_model(cfg)
    logs = jax.jit(lambda k: collect(k, params, cfg.offline.sessions, params.max_len))(jax.random.key(1))
    return cfg, params, frozen, um, logs


def test_shaped_reward_matches_numpy():
    r_hat = np.array([0.7, 0.2, 0.5], np.float32)
    maxvar = np.array([0.1, 4.0, 0.02], np.float32)
    p_e = np.array([1.5, 0.0, 0.3], np.float32)
    lv, le, rmin = 0.05, 0.5, 0.1
    want = np.maximum(0.0, r_hat - lv * maxvar + le * p_e - rmin)
    got = U.shaped_reward(r_hat, maxvar, p_e, jnp.float32(lv), jnp.float32(le), jnp.float32(rmin))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)
    assert np.asarray(got)[1] == 0.0  # 0.2 - 0.2 + 0 - 0.1 < 0: clipped at 0


def _entropy_np(counter, n_cat):
    tot = sum(counter.values())
    return -sum(c / tot * math.log2(c / tot) for c in counter.values()) / math.log2(n_cat)


def test_pattern_entropy_matches_numpy():
    # 5 items; categories: item 0 -> tag 0, 1 -> tag 1, 2 -> tag 1 (first of its tags), 3 -> tag 2, 4 -> untagged (3).
    tags = jnp.array([[1, 0, 0], [0, 1, 0], [0, 1, 1], [0, 0, 1], [0, 0, 0]], bool)
    cats = U.item_category(tags)
    np.testing.assert_array_equal(np.asarray(cats), [0, 1, 1, 2, 3])
    np.testing.assert_array_equal(np.asarray(jax.jit(U.item_category)(tags)), [0, 1, 1, 2, 3])  # traced path
    n_cat = 4
    rng = np.random.default_rng(0)
    n, w, k = 6, 3, 3
    items = rng.integers(0, 5, (n, w))
    valid = np.ones((n, w), bool)
    valid[0] = False  # a session's first step: no history
    valid[1, :2] = False  # one history item
    slate = rng.integers(0, 5, (n, k))
    obs = E.Obs(items=jnp.asarray(items * valid, jnp.int32), feedback=jnp.zeros((n, w)), valid=jnp.asarray(valid),
                t=jnp.zeros((n,), jnp.int32))
    z = jnp.zeros((n,))
    logs = Logs(obs=obs, slate=jnp.asarray(slate, jnp.int32), feedback=jnp.zeros((n, k)), reward=z, done=z > 0,
                terminated=z > 0, next_obs=obs, user=jnp.zeros((n,), jnp.int32))
    h1, h2 = U.entropy_tables(logs, cats, n_cat)
    c = np.asarray(cats)
    after1, after2 = {}, {}
    for r in range(n):
        seq = [(items[r, -2], valid[r, -2]), (items[r, -1], valid[r, -1])] + [(s, True) for s in slate[r]]
        for j in range(2, len(seq)):
            nxt = c[seq[j][0]]
            if seq[j - 1][1]:
                after1.setdefault(c[seq[j - 1][0]], Counter())[nxt] += 1
            if seq[j - 1][1] and seq[j - 2][1]:
                after2.setdefault(tuple(sorted((c[seq[j - 2][0]], c[seq[j - 1][0]]))), Counter())[nxt] += 1
    want1 = np.array([_entropy_np(after1[a], n_cat) if a in after1 else 1.0 for a in range(n_cat)])
    np.testing.assert_allclose(np.asarray(h1), want1, atol=1e-6)
    for a in range(n_cat):
        for b in range(a, n_cat):
            want = _entropy_np(after2[(a, b)], n_cat) if (a, b) in after2 else 1.0
            np.testing.assert_allclose(float(h2[a, b]), want, atol=1e-6, err_msg=str((a, b)))
    assert np.asarray(h1).min() < 1.0  # not all missing

    # P_E of a slate after item 2 (category 1): mean over items of H1(c_j) + H2(sorted(c_prev, c_j)).
    sl = np.array([3, 0, 4])
    got = U.pattern_entropy(jnp.array([0, 2]), jnp.array([True, True]), jnp.asarray(sl), cats, h1, h2)
    h2n = np.asarray(h2)
    prev = [1, c[3], c[0]]
    want = np.mean([want1[c[s]] + h2n[min(p, c[s]), max(p, c[s])] for p, s in zip(prev, sl)])
    np.testing.assert_allclose(float(got), want, atol=1e-6)
    # No previous item: its k = 2 pattern is missing (counts 1).
    got0 = U.pattern_entropy(jnp.array([0]), jnp.array([False]), jnp.asarray(sl), cats, h1, h2)
    want0 = np.mean([want1[c[sl[0]]] + 1.0] + [want1[c[s]] + h2n[min(p, c[s]), max(p, c[s])]
                                                for p, s in zip(prev[1:], sl[1:])])
    np.testing.assert_allclose(float(got0), want0, atol=1e-6)


def _model_params(setup, lam_var=0.05, lam_ent=5.0):
    cfg, params, frozen, um, logs = setup
    cats = U.item_category(params.world.item_tags)
    h1, h2 = U.entropy_tables(logs, cats, params.world.n_tags + 1)
    fitted = U.Fitted(ensemble=um.init(jax.random.key(2)), h1=h1, h2=h2, nll=jnp.float32(0))
    return U.ModelParams(env=params, frozen=frozen, fitted=fitted, lambda_var=jnp.float32(lam_var),
                         lambda_ent=jnp.float32(lam_ent), r_min=jnp.float32(0.0), model=um)


def test_model_env_keeps_the_env_contract_and_its_reward(setup):
    cfg, params, frozen, um, logs = setup
    mp = _model_params(setup)
    B, T, K = 8, 14, params.slate_size

    def policy(key, obs, state, carry):
        return jax.vmap(lambda k: jax.random.permutation(k, params.world.n_items)[:K])(jax.random.split(key, B)), carry, ()

    obs, st = E.batch_reset(jax.random.key(4), params, B)
    run = jax.jit(lambda p, step: unroll(jax.random.key(5), policy, p, obs, st, (), T, step=step), static_argnums=1)
    (o_r, s_r, _), tr_r = run(params, E.batch_step)
    (o_m, s_m, _), tr_m = run(mp, U.batch_step)
    shape = lambda t: jax.tree.map(lambda a: (a.shape, a.dtype), t)
    assert shape((o_m, s_m, tr_m)) == shape((o_r, s_r, tr_r))
    # One step: the same outputs, the same info keys.
    out_r = jax.jit(E.step)(jax.random.key(6), jax.tree.map(lambda a: a[0], st), tr_r.slate[0, 0], params)
    out_m = jax.jit(U.step)(jax.random.key(6), jax.tree.map(lambda a: a[0], st), tr_r.slate[0, 0], mp)
    assert shape(out_m) == shape(out_r) and set(out_m[-1]) == set(out_r[-1])
    # Auto-reset: a session lasts at most max_len; after a done the next window is a new session's.
    done, t_next = np.asarray(tr_m.done), np.asarray(tr_m.obs.t)
    assert done.any()
    assert (t_next[1:][done[:-1]] == 0).all() and (t_next[1:][~done[:-1]] > 0).all()
    assert np.asarray(tr_m.ep_len)[done].max() <= params.max_len
    # The reward: NumPy from the members' predictions and the P_E tables, at the first step.
    x = um.observer.inputs(frozen, jax.random.key(0), jax.tree.map(lambda a: a[0, 0], tr_m.obs), params)[1]
    sl = tr_m.slate[0, 0]
    mean, lv = um.predict(mp.fitted.ensemble, x, U.item_features(params.world), sl)
    mean, var = np.asarray(mean, np.float64), np.exp(np.asarray(lv, np.float64))
    fb = mean.mean(0)
    h1 = np.asarray(mp.fitted.h1)
    c = np.asarray(U.item_category(params.world.item_tags))[np.asarray(sl)]
    h2 = np.asarray(mp.fitted.h2)
    # First step: no item before the slate (its first item's k = 2 pattern is missing: 1).
    e2 = [1.0] + [h2[min(a, b), max(a, b)] for a, b in zip(c[:-1], c[1:])]
    p_e = np.mean(h1[c] + np.array(e2))
    want = max(0.0, fb.mean() - 0.05 * var.max(0).mean() + 5.0 * p_e)
    np.testing.assert_allclose(float(tr_m.reward[0, 0]), want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(tr_m.feedback[0, 0]), fb, rtol=1e-5)
    np.testing.assert_allclose(float(tr_m.true_reward[0, 0]), fb.mean(), rtol=1e-5)
    # Predicted feedback enters the window like observed feedback.
    np.testing.assert_allclose(np.asarray(tr_m.obs.feedback[1, 0, -K:]), fb, rtol=1e-5)


def test_ensemble_fit_learns_the_logged_feedback(setup):
    cfg, params, frozen, um, logs = setup
    data = U.fit_data(um, jax.random.key(0), frozen, params, logs)
    feats = U.item_features(params.world)
    d = cfg.dorl

    @jax.jit
    def run(lr):
        ens, curve = U.fit(um, jax.random.key(7), data, feats, lr, d.model_steps, d.model_batch)
        return U.ensemble_nll(um, ens, data, feats), um.predict(ens, data.x, feats, data.slate)[0]

    nll0 = np.asarray(U.ensemble_nll(um, um.init(jax.random.split(jax.random.key(7))[0]), data, feats))
    nll_fit, pred = run(jnp.float32(cfg.dorl.model_lr))
    nll_frozen, _ = run(jnp.float32(0.0))
    np.testing.assert_allclose(np.asarray(nll_frozen), nll0, rtol=1e-5)  # lr 0: no learning
    assert (np.asarray(nll_fit) < nll0 - 0.3).all(), (nll_fit, nll0)
    y = np.asarray(data.feedback).ravel()
    r = np.corrcoef(np.asarray(pred).mean(0).ravel(), y)[0, 1]
    assert r > 0.3, r
