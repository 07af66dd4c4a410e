"""Discrete BCQ, slate version (``purerec.agents.bcq``): the imitation threshold and the BCQ slate
against NumPy, the loss pieces against NumPy, the logged dataset's next-input alignment, acting on
the test world, and learning from the logs against a frozen (lr 0) learner."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import small_config
from purerec.agents import get as get_spec
from purerec.agents.base import env_params
from purerec.agents.bcq import allowed, bcq_loss, bcq_slate, log_dataset
from purerec.config import Config, ConfigError
from purerec.run.hyper import hyper_of
from purerec.sim.env import batch_reset, make_params, Obs
from purerec.sim.logs import Logs
from purerec.state.purifier import make_observer
from purerec.state.stage1 import make_stage1

N_UPDATES = 6


def np_bcq_slate(q, logits, k, tau):
    """Reference: probabilities, the K-th largest, the allowed set, then the top-K of Q in it."""
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p = p / p.sum(-1, keepdims=True)
    kth = np.sort(p, axis=-1)[..., -k][..., None]
    ok = p >= tau * kth * (1 - 1e-5)  # float slack: ties at the boundary
    out = []
    for qi, oki in zip(q, ok):
        cand = np.flatnonzero(oki)
        out.append(cand[np.argsort(-qi[cand], kind="stable")[:k]])
    return np.stack(out), ok


@pytest.mark.parametrize("tau", [0.0, 0.3, 0.6, 1.0])
def test_bcq_never_picks_an_item_below_the_imitation_threshold(tau):
    k, n = 5, 60
    kq, kl = jax.random.split(jax.random.key(int(tau * 10)))
    q = jax.random.normal(kq, (32, n))
    logits = 2.0 * jax.random.normal(kl, (32, n))
    slate = np.asarray(bcq_slate(q, logits, k, jnp.float32(tau)))
    ok = np.asarray(allowed(logits, k, jnp.float32(tau)))
    expect, ok_np = np_bcq_slate(np.asarray(q), np.asarray(logits), k, tau)
    np.testing.assert_array_equal(ok, ok_np)
    assert ok.sum(-1).min() >= k  # the K most likely always pass
    assert np.all(np.take_along_axis(ok, slate, -1))  # every slate item passes the threshold
    np.testing.assert_array_equal(slate, expect)  # = the top-K of Q among the allowed, in order
    if tau == 0.0:  # no constraint: plain top-K of Q
        np.testing.assert_array_equal(slate, np.asarray(jax.lax.top_k(q, k)[1]))
    if tau == 1.0:  # only the K most likely (no ties in random logits): the top-K imitation items
        assert np.all(ok.sum(-1) == k)
        np.testing.assert_array_equal(np.sort(slate, -1), np.sort(np.asarray(jax.lax.top_k(logits, k)[1]), -1))
    # a large Q on a barely-allowed item is picked; on an item just below the threshold it is not
    lg = np.zeros((1, 8), np.float32)
    lg[0, :3] = np.log(10.0)  # the K = 3 most likely: prob ratio 10 to the others
    qq = np.zeros((1, 8), np.float32)
    qq[0, 7] = 5.0
    pick = np.asarray(bcq_slate(jnp.asarray(qq), jnp.asarray(lg), 3, jnp.float32(0.09)))  # 0.1 >= 0.09: allowed
    assert 7 in pick[0]
    pick = np.asarray(bcq_slate(jnp.asarray(qq), jnp.asarray(lg), 3, jnp.float32(0.11)))  # 0.1 < 0.11: masked
    assert sorted(pick[0].tolist()) == [0, 1, 2]


def test_loss_pieces_match_numpy():
    rng = np.random.default_rng(0)
    b, k, n = 6, 3, 9
    q_slate = rng.normal(size=(b, k)).astype(np.float32)
    target = (rng.normal(size=b) * 2).astype(np.float32)  # some |error| > 1: both Huber branches
    logits = rng.normal(size=(b, n)).astype(np.float32)
    slate = np.stack([rng.choice(n, k, replace=False) for _ in range(b)]).astype(np.int32)
    total, parts = bcq_loss(*map(jnp.asarray, (q_slate, target, logits, slate)), jnp.float32(0.01))
    err = np.abs(q_slate.sum(-1) - target)
    assert (err > 1).any() and (err < 1).any()
    huber = np.where(err <= 1, 0.5 * err**2, err - 0.5).mean()
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.mean([logp[i, slate[i]] for i in range(b)])
    reg = np.mean(logits**2)
    np.testing.assert_allclose(parts["q_loss"], huber, rtol=1e-5)
    np.testing.assert_allclose(parts["nll"], nll, rtol=1e-5)
    np.testing.assert_allclose(parts["logit_sq"], reg, rtol=1e-5)
    np.testing.assert_allclose(total, huber + nll + 0.01 * reg, rtol=1e-5)


def agent_config() -> Config:
    cfg = small_config()
    return dataclasses.replace(
        cfg,
        agent=dataclasses.replace(cfg.agent, kind="bcq"),
        env=dataclasses.replace(cfg.env, max_len=10),
        offline=dataclasses.replace(cfg.offline, sessions=128),
        train=dataclasses.replace(cfg.train, num_envs=16, rollout_len=4, seeds=(1,), stage1_sessions=64,
                                  total_updates=N_UPDATES, chunk_updates=N_UPDATES, run_dir="unused"),
        encoder=dataclasses.replace(cfg.encoder, train_steps=30),
        replay=dataclasses.replace(cfg.replay, batch_size=64, grad_steps=20, min_size=64),
        bcq=dataclasses.replace(cfg.bcq, target_every=40),
    ).validate()


@pytest.fixture(scope="module")
def setup(small_worlds):
    cfg = agent_config()
    p_train, p_test = make_params(small_worlds[0], cfg), make_params(small_worlds[1], cfg)
    frozen = jax.jit(make_stage1(cfg, p_train))(jax.random.key(0))[0]
    agent = get_spec("bcq").make(cfg, p_train)

    @jax.jit
    def run(key, hyper):
        s = agent.init(key, frozen, hyper)
        return jax.lax.scan(lambda s, _: agent.update(frozen, s), s, None, length=N_UPDATES)

    return cfg, p_train, p_test, frozen, agent, run


@pytest.fixture(scope="module")
def trained(setup):
    """(hyper, final state, logs) of a run with gamma 0 (the Q part is a regression of the reward)."""
    cfg, run = setup[0], setup[-1]
    h = {**hyper_of(cfg), "bcq.gamma": jnp.float32(0.0)}
    s, logs = run(jax.random.key(3), h)
    return h, s, logs


def test_session_shards_rejected(setup):
    cfg, p_train = setup[0], setup[1]
    with pytest.raises(ConfigError, match="session_shards"):
        get_spec("bcq").make(cfg, p_train, axis_name="shards")


def test_log_dataset_next_inputs_are_the_next_windows(setup):
    """Logs in ``purerec.sim.logs.collect``'s layout (row = t x sessions + column, next_obs = the
    next step's window): the dataset's x is the inputs of every window, and row i's next input
    (x[i + sessions]) is the input of next_obs[i]."""
    cfg, p_train, _, frozen, _, _ = setup
    s, t, w, k = 4, 3, cfg.env.obs_window, cfg.env.slate_size
    rng = np.random.default_rng(1)
    n_items = p_train.world.n_items
    windows = Obs(items=jnp.asarray(rng.integers(0, n_items, ((t + 1) * s, w)), jnp.int32),
                  feedback=jnp.asarray(rng.random(((t + 1) * s, w)), jnp.float32),
                  valid=jnp.asarray(rng.random(((t + 1) * s, w)) < 0.8),
                  t=jnp.asarray(rng.integers(0, 10, (t + 1) * s), jnp.int32))
    now = jax.tree.map(lambda a: a[:t * s], windows)
    nxt = jax.tree.map(lambda a: a[s:], windows)
    logs = Logs(obs=now, slate=jnp.zeros((t * s, k), jnp.int32), feedback=jnp.zeros((t * s, k)),
                reward=jnp.arange(t * s, dtype=jnp.float32), done=jnp.zeros((t * s,), bool),
                terminated=jnp.zeros((t * s,), bool), next_obs=nxt, user=jnp.zeros((t * s,), jnp.int32))
    ep = env_params(p_train, hyper_of(cfg))
    obs = make_observer(cfg)
    data, x_now, x_next = jax.jit(lambda fr, lg: (
        log_dataset(obs, fr, jax.random.key(6), lg, s, ep), obs.inputs(fr, jax.random.key(0), lg.obs, ep)[1],
        obs.inputs(fr, jax.random.key(0), lg.next_obs, ep)[1]))(frozen, logs)
    assert data.x.shape == ((t + 1) * s, obs.input_dim) and data.done.dtype == jnp.float32
    np.testing.assert_allclose(data.x[:t * s], x_now, atol=1e-5)
    np.testing.assert_allclose(data.x[s:], x_next, atol=1e-5)
    np.testing.assert_array_equal(data.reward, logs.reward)


@pytest.mark.slow
def test_learns_from_the_logs_and_a_frozen_learner_does_not(setup, trained):
    """gamma 0 makes the Q part a regression of the logged slates' reward: its error and the
    imitation NLL fall with lr 1e-3; with lr 0 they stay at their start. Same key -> same numbers."""
    cfg, run = setup[0], setup[-1]
    h, s, logs = trained
    _, again = run(jax.random.key(3), h)
    for k in logs:
        v = np.asarray(logs[k])
        assert v.shape == (N_UPDATES,) and np.all(np.isfinite(v)), k
        np.testing.assert_array_equal(v, np.asarray(again[k]), err_msg=k)
    for k in ("Len", "R_cum", "R_each", "AD", "episodes", "bcq_q_loss", "bcq_nll", "bcq_allowed"):
        assert k in logs, k
    assert int(s.steps) == N_UPDATES * cfg.replay.grad_steps and int(s.update) == N_UPDATES
    _, logs0 = run(jax.random.key(3), {**h, "bcq.lr": jnp.float32(0.0)})
    ql, ql0 = np.asarray(logs["bcq_q_loss"]), np.asarray(logs0["bcq_q_loss"])
    nll, nll0 = np.asarray(logs["bcq_nll"]), np.asarray(logs0["bcq_nll"])
    assert ql[-2:].mean() < 0.3 * ql0[-2:].mean(), (ql, ql0)
    assert ql0[-2:].mean() > 0.7 * ql0[0], ql0
    assert nll[-2:].mean() < nll0[-2:].mean() - 0.1, (nll, nll0)
    # the threshold at tau = 1 allows exactly K items per state
    _, logs1 = run(jax.random.key(3), {**h, "bcq.threshold": jnp.float32(1.0)})
    np.testing.assert_allclose(np.asarray(logs1["bcq_allowed"]), cfg.env.slate_size)


def test_act_on_test_world(setup, trained):
    cfg, p_train, p_test, frozen, agent, _ = setup
    assert p_test.world.n_items != p_train.world.n_items
    s = trained[1]
    pp = agent.policy_params(frozen, s)
    obs, st = batch_reset(jax.random.key(4), p_test, 8)
    carry = agent.init_carry(8)
    keys = jax.random.split(jax.random.key(9), 8)
    greedy = jax.jit(jax.vmap(agent.act.greedy, in_axes=(0, 0, 0, None, None, 0)))
    sample = jax.jit(jax.vmap(agent.act.sample, in_axes=(0, 0, 0, None, None, 0)))
    g, _ = greedy(keys, obs, st, p_test, pp, carry)
    g2, _ = greedy(jax.random.split(jax.random.key(10), 8), obs, st, p_test, pp, carry)
    smp, _ = sample(keys, obs, st, p_test, pp, carry)
    for sl in (np.asarray(g), np.asarray(smp)):
        assert sl.shape == (8, cfg.env.slate_size) and sl.dtype == np.int32
        assert sl.min() >= 0 and sl.max() < p_test.world.n_items
        assert all(len(set(row.tolist())) == cfg.env.slate_size for row in sl)
    np.testing.assert_array_equal(np.asarray(g), np.asarray(g2))  # greedy is deterministic
    # epsilon 0.01 per slot: the sampled slate is almost always the greedy one
    assert np.mean(np.asarray(smp) == np.asarray(g)) > 0.9


def _np_mlp(p, x):
    """BCQNet's trunk and heads (tanh MLP, Dense_0..2) in float64 NumPy."""
    h = np.asarray(x, np.float64)
    for i in range(3):
        h = h @ np.asarray(p[f"Dense_{i}"]["kernel"], np.float64) + np.asarray(p[f"Dense_{i}"]["bias"], np.float64)
        h = np.tanh(h) if i < 2 else h
    return h


def test_bootstrap_uses_the_thresholded_online_slate_and_the_target_values(setup, trained):
    """gamma 0.9 (the other tests use 0, where no bootstrap term is seen), threshold 0.3, lr 0 (the
    20 gradient steps of one update all see the same nets): the logged target mean equals, by
    hand in NumPy, the mean over the 20 minibatches of r + gamma (1 - done) sum_k Q_target(x', a*_k),
    a* = the top-K of the online Q among the items whose online imitation probability is >= 0.3 x
    the K-th largest. From the trained state with its last layers rescaled (online x 30, target
    x -20 + 0.5): the imitation logits are spread, so the threshold binds (more than K but not all
    items pass), and online and target nets differ."""
    cfg, p_train, _, frozen, agent, _ = setup
    s = trained[1]
    h = {**trained[0], "bcq.gamma": jnp.float32(0.9), "bcq.threshold": jnp.float32(0.3), "bcq.lr": jnp.float32(0.0)}

    def scaled(p, gain, shift):
        last = p["params"]["Dense_2"]
        return {"params": {**p["params"], "Dense_2": {"kernel": gain * last["kernel"], "bias": last["bias"] + shift}}}

    online, target = scaled(s.net.params, 30.0, 0.0), scaled(s.net.params, -20.0, 0.5)
    s = s.replace(net=s.net.replace(params=online), target=target, hyper=h)
    s1, logs = jax.jit(lambda st: agent.update(frozen, st))(s)
    assert leaves_equal(s1.net.params, online) and leaves_equal(s1.target, target)  # lr 0, no sync

    K, n_sess, gs = cfg.env.slate_size, cfg.offline.sessions, cfg.replay.grad_steps
    data = jax.device_get(s.data)
    n = data.reward.shape[0]
    k_learn = jax.random.split(s.key, 3)[2]  # the update's (key, k_roll, k_learn); one key per step
    idx = np.stack([np.asarray(jax.random.randint(k, (cfg.replay.batch_size,), 0, n))
                    for k in jax.random.split(k_learn, gs)]).reshape(-1)
    x_next = np.asarray(data.x, np.float64)[idx + n_sess]
    w = p_train.world
    lp = np.log1p(np.asarray(w.item_pop, np.float64))
    feats = np.concatenate([np.asarray(w.item_emb, np.float64), (lp / lp.max())[:, None]], axis=1)
    vals = lambda out: out[:, -1:] + out[:, :-1] @ feats.T  # v + phi . f_i for every item
    half = feats.shape[1] + 1
    out = _np_mlp(online["params"], x_next)
    q, logits = vals(out[:, :half]), vals(out[:, half:])
    q_t = vals(_np_mlp(target["params"], x_next)[:, :half])

    def target_mean(tau):
        kth = np.sort(logits, axis=1)[:, -K][:, None]
        ok = logits - kth >= np.log(tau) if tau > 0 else np.ones_like(logits, bool)
        slate = np.argsort(-np.where(ok, q, -np.inf), axis=1, kind="stable")[:, :K]
        y = data.reward[idx] + 0.9 * (1.0 - data.done[idx]) * np.take_along_axis(q_t, slate, 1).sum(1)
        return y.mean(), ok

    want, ok = target_mean(0.3)
    assert np.any(data.done[idx] == 0)  # the bootstrap term is present
    assert K < ok.sum(1).min() and ok.sum(1).max() < ok.shape[1], ok.sum(1)  # the threshold binds
    np.testing.assert_allclose(float(logs["bcq_allowed"]), ok.sum(1).mean(), rtol=1e-6)
    np.testing.assert_allclose(float(logs["bcq_target"]), want, rtol=1e-4, atol=1e-4)
    # Visible at this size: without the threshold the target moves far.
    assert abs(target_mean(0.0)[0] - want) > 0.05, (target_mean(0.0)[0], want)


def leaves_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
