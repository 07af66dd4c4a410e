"""Heuristic denoisers as state filters (``purerec.state.denoise``): T-CE, R-CE, BOD."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import small_config
from purerec.config import DenoiseConfig
from purerec.sim.env import Obs
from purerec.state import denoise
from purerec.state.encoder import StateEncoder
from purerec.state.purifier import Frozen, make_observer

E = 2  # item features
D = 4  # state size
ITEM_EMB = jnp.array([[0.0, 0.0], [2.0, 0.0], [-1.0, 0.0], [0.5, 0.0], [3.0, 1.0]])
# A window of four slots: items 1, 2 positives (feedback > 0.5), item 3 a negative, the last slot empty.
OBS = Obs(items=jnp.array([1, 2, 3, 0]), feedback=jnp.array([0.9, 0.8, 0.2, 0.0]),
          valid=jnp.array([True, True, True, False]), t=jnp.int32(3))
STATE = jnp.array([1.0, 0.0, 0.0, 0.0])


def hand_params(tau=0.5, gen_key=1, hidden=4) -> denoise.DenoiseParams:
    """Scorer with u = P s = s[:2], c = 0, b = 0 (logit_j = <s[:2], e_j>), a random generator, threshold tau."""
    model = {"params": {"query": {"kernel": jnp.eye(D, E), "bias": jnp.zeros(E)}, "bias": jnp.float32(0.0)}}
    p0 = denoise.init(jax.random.PRNGKey(gen_key), D, E, hidden)
    assert jax.tree.structure(p0.model) == jax.tree.structure(model)
    return p0.replace(model=model, tau=jnp.float32(tau))


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_generator(gp, u, e):
    p = jax.tree.map(np.asarray, gp["params"])
    x = np.concatenate([np.broadcast_to(u, e.shape), e], -1)
    h = np.maximum(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"], 0)
    h = h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
    return np_sigmoid(h @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"])[..., 0]


def test_each_denoisers_weights_on_a_hand_made_history():
    dc = DenoiseConfig(rce_beta=0.2, bod_hidden=4)
    dp = hand_params(tau=0.5)
    valid = np.asarray(OBS.valid)
    # T-CE: positive losses softplus(-2) = 0.127 (kept) and softplus(1) = 1.313 > tau (dropped);
    # the negative (loss softplus(0.5) = 0.97 > tau) is never dropped.
    w, keep = denoise.item_weights("tce", dp, dc, STATE, OBS, ITEM_EMB)
    np.testing.assert_array_equal(np.asarray(w), 1.0)
    np.testing.assert_array_equal(np.asarray(keep) & valid, [True, False, True, False])
    # R-CE: positives scaled by sigma(logit)^beta, the rest untouched.
    w, keep = denoise.item_weights("rce", dp, dc, STATE, OBS, ITEM_EMB)
    want = np.array([np_sigmoid(2.0) ** 0.2, np_sigmoid(-1.0) ** 0.2, 1.0, 1.0])
    np.testing.assert_allclose(np.asarray(w), want, rtol=1e-6)
    assert np.all(np.asarray(keep))
    # BOD: positives scaled by the generator's g([u, e_j]) with u = P s + c = s[:2].
    w, keep = denoise.item_weights("bod", dp, dc, STATE, OBS, ITEM_EMB)
    g = np_generator(dp.gen, np.asarray(STATE)[:E], np.asarray(ITEM_EMB)[np.asarray(OBS.items)])
    np.testing.assert_allclose(np.asarray(w), [g[0], g[1], 1.0, 1.0], rtol=1e-5)
    assert np.all(np.asarray(keep))
    # Relative to the calibrated reference weight, capped at 1.
    r = 0.5 * (g[0] + g[1])
    w, _ = denoise.item_weights("bod", dp.replace(w_ref=jnp.float32(r)), dc, STATE, OBS, ITEM_EMB)
    np.testing.assert_allclose(np.asarray(w), [min(1, g[0] / r), min(1, g[1] / r), 1.0, 1.0], rtol=1e-5)
    # The filtered window: dropped -> invalid with feedback 0, kept feedback scaled.
    f = denoise.filter_obs("bod", dp, dc, STATE, OBS, ITEM_EMB)
    np.testing.assert_allclose(np.asarray(f.feedback), [0.9 * g[0], 0.8 * g[1], 0.2, 0.0], rtol=1e-5)
    f = denoise.filter_obs("tce", dp, dc, STATE, OBS, ITEM_EMB)
    np.testing.assert_array_equal(np.asarray(f.valid), [True, False, True, False])
    np.testing.assert_allclose(np.asarray(f.feedback), [0.9, 0.0, 0.2, 0.0])


def test_tce_schedule_truncation_and_rce_weights_match_numpy():
    sched = np.concatenate([np.linspace(0, 0.2, 50), np.full(30, 0.2)])
    got = np.array([float(denoise.tce_drop_rate(jnp.int32(t), 0.2, 50)) for t in range(80)])
    np.testing.assert_allclose(got, sched, rtol=1e-6, atol=1e-7)
    assert float(denoise.tce_drop_rate(jnp.int32(0), 0.2, 1)) == 0.0  # linspace(0, e, 1) = [0]

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(8, 5)).astype(np.float32) * 2
    y = (rng.random((8, 5)) < 0.6).astype(np.float32)
    loss = np.logaddexp(0, logits) - y * logits
    np.testing.assert_allclose(np.asarray(denoise.bce(jnp.asarray(logits), jnp.asarray(y))), loss, rtol=1e-5)
    rate = 0.15
    n_keep = int((1 - rate) * loss.size)
    order = np.argsort((loss * y).reshape(-1), kind="stable")
    keep = np.zeros(loss.size, bool)
    keep[order[:n_keep]] = True
    got_keep = np.asarray(denoise.tce_keep(jnp.asarray(loss), jnp.asarray(y), jnp.float32(rate))).reshape(-1)
    np.testing.assert_array_equal(got_keep, keep)
    assert np.all(y.reshape(-1)[~keep] == 1)  # only positives are dropped
    np.testing.assert_allclose(float(denoise.tce_loss(jnp.asarray(logits), jnp.asarray(y), jnp.float32(rate))),
                               loss.reshape(-1)[keep].mean(), rtol=1e-5)

    p = np_sigmoid(logits)
    w = np.where(y > 0, p ** 0.2, (1 - p) ** 0.2)
    np.testing.assert_allclose(np.asarray(denoise.rce_weights(jnp.asarray(logits), jnp.asarray(y), 0.2)), w, rtol=1e-5)
    np.testing.assert_allclose(float(denoise.rce_loss(jnp.asarray(logits), jnp.asarray(y), 0.2)), (w * loss).mean(),
                               rtol=1e-5)
    # The weights carry no gradient: d/dl of mean(w * bce) is mean of w * (sigma(l) - y) / n.
    g = jax.grad(lambda l: denoise.rce_loss(l, jnp.asarray(y), 0.2))(jnp.asarray(logits))
    np.testing.assert_allclose(np.asarray(g), w * (p - y) / y.size, rtol=1e-4, atol=1e-7)


def test_bod_pieces_match_hand_values_and_generator_objective_decreases():
    # grad_match: row 0 aligned (1 - 1 = 0), row 1 orthogonal (1 - 0 = 1); vectors count 0.
    g1 = {"k": jnp.array([[1.0, 0.0], [0.0, 1.0]]), "b": jnp.array([1.0, 2.0])}
    g2 = {"k": jnp.array([[2.0, 0.0], [1.0, 0.0]]), "b": jnp.array([-1.0, 0.0])}
    assert float(denoise.grad_match(g1, g2)) == pytest.approx(1.0, abs=1e-5)
    # Weighted BPR over (positive, negative) pairs of one slate, vs NumPy.
    score = np.array([[1.0, -0.5, 2.0]])
    y = np.array([[1.0, 0.0, 1.0]])
    w = np.array([[0.5, 0.8, 0.9]])
    want = np.mean([np.logaddexp(0, -(0.5 * 1.0 - 0.8 * -0.5)), np.logaddexp(0, -(0.9 * 2.0 - 0.8 * -0.5))])
    assert float(denoise.bod_bpr(jnp.asarray(score), jnp.asarray(y), jnp.asarray(w))) == pytest.approx(want, rel=1e-5)
    # Weighted alignment over positives.
    u, e = np.array([[3.0, 4.0]]), np.array([[[1.0, 0.0], [0.0, 2.0], [0.0, -1.0]]])
    d = np.sum((u[:, None] / 5.0 - e / np.linalg.norm(e, axis=-1, keepdims=True)) ** 2, -1)
    assert float(denoise.bod_alignment(jnp.asarray(u), jnp.asarray(e), jnp.asarray(y), jnp.asarray(w))) == \
        pytest.approx(float((w * d * y).sum() / 2), rel=1e-5)

    # The generator's outer objective falls under Adam at a fixed recommender (lr 0 would not move it).
    k = jax.random.split(jax.random.PRNGKey(0), 5)
    s = jax.random.normal(k[0], (32, 6))
    emb = jax.random.normal(k[1], (32, 5, 4))
    yb = (jax.random.uniform(k[2], (32, 5)) < 0.5).astype(jnp.float32)
    p0 = denoise.init(k[3], 6, 4, 16)
    scorer, gen = denoise.Scorer(4), denoise.WeightGenerator(16)
    obj = jax.jit(jax.value_and_grad(lambda gp: denoise.bod_objective(gp, p0.model, scorer, gen, s, emb, yb)))
    opt = optax.adam(1e-2)
    gp, o = p0.gen, opt.init(p0.gen)
    first = float(obj(gp)[0])
    for _ in range(30):
        _, g = obj(gp)
        upd, o = opt.update(g, o, gp)
        gp = optax.apply_updates(gp, upd)
    assert float(obj(gp)[0]) < first - 0.05, (first, float(obj(gp)[0]))


@pytest.mark.parametrize("kind", ["tce", "rce", "bod"])
def test_filtered_state_changes_exactly_where_the_filter_acts(kind):
    cfg = small_config()
    cfg = dataclasses.replace(cfg, state=dataclasses.replace(cfg.state, purifier=kind),
                              encoder=dataclasses.replace(cfg.encoder, state_dim=D),
                              denoise=dataclasses.replace(cfg.denoise, bod_hidden=4)).validate()
    obs_r = make_observer(cfg)
    enc = StateEncoder(D, 8)
    enc_p = enc.init(jax.random.PRNGKey(2), jnp.zeros((1, 4, E)), jnp.zeros((1, 4)), jnp.ones((1, 4), bool))
    obs_r = dataclasses.replace(obs_r, encoder=enc)
    params = SimpleNamespace(world=SimpleNamespace(item_emb=ITEM_EMB))
    dp = hand_params(tau=0.5)
    frozen = Frozen(encoder=enc_p, dsrm=None, feedback_head=None, denoise=dp)
    s_obs = obs_r.observed(frozen, OBS, ITEM_EMB)
    s = obs_r.state(frozen, jax.random.PRNGKey(0), OBS, params)
    w, keep = denoise.item_weights(kind, dp, cfg.denoise, s_obs, OBS, ITEM_EMB)
    acts = np.asarray(OBS.valid) & ((np.asarray(w) < 1) | ~np.asarray(keep))
    f = denoise.filter_obs(kind, dp, cfg.denoise, s_obs, OBS, ITEM_EMB)
    changed = (np.asarray(f.feedback) != np.asarray(OBS.feedback)) | (np.asarray(f.valid) != np.asarray(OBS.valid))
    np.testing.assert_array_equal(changed, acts)
    assert acts.any()
    np.testing.assert_allclose(np.asarray(s), np.asarray(obs_r.observed(frozen, f, ITEM_EMB)), rtol=1e-6)
    assert float(jnp.max(jnp.abs(s - s_obs))) > 1e-4
    # A filter that does nothing leaves the state as it was.
    idle = {"tce": dp.replace(tau=jnp.float32(jnp.inf)), "rce": dp, "bod": dp}[kind]
    cfg0 = dataclasses.replace(cfg, denoise=dataclasses.replace(cfg.denoise, rce_beta=0.0))
    obs0 = dataclasses.replace(make_observer(cfg0), encoder=enc)
    if kind == "bod":  # a generator whose output bias saturates the sigmoid at 1
        g = idle.gen["params"]
        idle = idle.replace(gen={"params": {**g, "Dense_2": {**g["Dense_2"], "bias": jnp.full((1,), 1e3)}}})
    s0 = obs0.state(frozen.replace(denoise=idle), jax.random.PRNGKey(0), OBS, params)
    np.testing.assert_array_equal(np.asarray(s0), np.asarray(s_obs))


def tiny_config(agent: str):
    cfg = small_config()
    return dataclasses.replace(
        cfg, agent=dataclasses.replace(cfg.agent, kind=agent),
        train=dataclasses.replace(cfg.train, num_envs=16, rollout_len=4, total_updates=2, chunk_updates=1,
                                  seeds=(1,), stage1_sessions=32),
        encoder=dataclasses.replace(cfg.encoder, train_steps=20),
        denoise=dataclasses.replace(cfg.denoise, steps=40, batch_size=32, tce_num_gradual=20),
        ppo=dataclasses.replace(cfg.ppo, minibatches=2)).validate()


def test_frozen_has_one_structure_for_every_purifier(small_worlds):
    from purerec.sim.env import make_params
    from purerec.state.stage1 import make_stage1

    shapes = {}
    for agent in ("hrl", "dsrm_hrl", "hrl_tce", "hrl_bod"):
        cfg = tiny_config(agent)
        frozen, curves = jax.eval_shape(make_stage1(cfg, make_params(small_worlds[0], cfg)), jax.random.PRNGKey(0))
        shapes[agent] = jax.tree.map(lambda a: (a.shape, a.dtype), frozen)
        assert ("denoise_loss" in curves) == (agent in ("hrl_tce", "hrl_bod"))
        assert ("bod_outer_loss" in curves) == (agent == "hrl_bod")
    assert all(v == shapes["hrl"] for v in shapes.values())


@pytest.mark.parametrize("kind", ["tce", "rce", "bod"])
def test_denoiser_fit_learns_planted_feedback_and_calibrations_match_numpy(kind):
    """``denoise.train`` on samples whose feedback follows a planted bilinear model: the training
    loss falls (a learning-rate-0 fit would not); T-CE's tau (quantile of loss*label) and BOD's
    reference weight (mean over positives) match NumPy."""
    k = jax.random.split(jax.random.PRNGKey(3), 4)
    n, d, n_items, K = 512, 6, 40, 5
    states = jax.random.normal(k[0], (n, d))
    item_emb = jax.random.normal(k[1], (n_items, E * 2))
    slate = jax.random.randint(k[2], (n, K), 0, n_items)
    truth = jax.random.normal(k[3], (d, E * 2))
    feedback = jax.nn.sigmoid(3 * jnp.einsum("nd,de,nke->nk", states, truth, item_emb[slate]))
    dc = DenoiseConfig(steps=150, lr=3e-2, batch_size=64, tce_num_gradual=50, bod_lr=1e-2, bod_hidden=8)
    p0 = denoise.init(jax.random.PRNGKey(4), d, E * 2, dc.bod_hidden)
    fit = jax.jit(lambda key: denoise.train(kind, key, dc, p0, states, slate, feedback, item_emb))
    dp, curves = fit(jax.random.PRNGKey(5))
    loss = np.asarray(curves["denoise_loss"])
    assert np.all(np.isfinite(loss)) and loss[-20:].mean() < 0.7 * loss[:20].mean(), (loss[:20].mean(), loss[-20:].mean())
    assert ("bod_outer_loss" in curves) == (kind == "bod")
    obs = Obs(items=slate, feedback=feedback, valid=jnp.arange(K) < 4, t=jnp.zeros(n, jnp.int32))
    y = np.asarray(feedback) > 0.5
    if kind == "bod":
        u, _ = denoise.Scorer(E * 2).apply(dp.model, states, item_emb[slate])
        g = np.asarray(denoise.WeightGenerator(dc.bod_hidden).apply(dp.gen, u, item_emb[slate]))[:, :4]
        ref = float(denoise.calibrate_bod(dp, dc, states, obs, item_emb))
        assert ref == pytest.approx(float(g[y[:, :4]].mean()), rel=1e-5)
    if kind == "tce":
        tau = float(denoise.calibrate_tau(dp, dc, states, obs, item_emb))
        _, logits = denoise.Scorer(E * 2).apply(dp.model, states, item_emb[slate])
        v = np.where(y, np.asarray(denoise.bce(logits, y.astype(np.float32))), 0.0)[:, :4]
        assert tau == pytest.approx(float(np.quantile(v, 1 - dc.tce_drop_rate)), rel=1e-5)


@pytest.mark.slow
def test_tiny_denoised_hrl_run_is_finite(small_worlds):
    """HRL+BOD through the training program (Stage I with the bi-level fit, filtered states)."""
    from purerec.run.loop import make_train
    from purerec.sim.env import make_params

    cfg = tiny_config("hrl_bod")
    fns = make_train(cfg, make_params(small_worlds[0], cfg))
    frozen, _, logs, curves = jax.jit(fns.train)(jax.random.PRNGKey(0))
    assert all(np.all(np.isfinite(np.asarray(v))) for v in jax.tree.leaves(logs))
    assert np.all(np.isfinite(np.asarray(curves["denoise_loss"])))
    assert np.all(np.isfinite(np.asarray(curves["bod_outer_loss"])))
