"""MOFIR (a reading): the vector TD target, the scalarised actor objective and the per-slate
fairness against NumPy; the preference omega steers the trained greedy policy (and does not
without learning); determinism and acting on another item set."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import small_config
from offpolicy_checks import check_next_inputs
from purerec.agents import get as get_spec, mofir
from purerec.config import Config
from purerec.run.hyper import hyper_of
from purerec.sim.env import batch_reset, make_params
from purerec.state.stage1 import make_stage1


def test_vector_target_actor_objective_and_fairness_match_numpy():
    rng = np.random.default_rng(0)
    r = rng.random((5, 2)).astype(np.float32)
    done = np.array([0, 1, 0, 0, 1], np.float32)
    q_next = rng.normal(size=(5, 2)).astype(np.float32)
    gamma = 0.9
    y = np.asarray(mofir.vector_td_target(jnp.asarray(r), jnp.asarray(done), jnp.asarray(q_next), gamma))
    y_np = np.empty((5, 2))
    for i in range(5):
        for j in range(2):
            y_np[i, j] = r[i, j] + (0.0 if done[i] else gamma * q_next[i, j])
    np.testing.assert_allclose(y, y_np, rtol=1e-6)

    w = np.array([0.0, 0.25, 0.5, 1.0, 0.8], np.float32)
    omega = np.asarray(mofir.preference(jnp.asarray(w)))
    np.testing.assert_allclose(omega, np.stack([1 - w, w], 1))
    q = rng.normal(size=(5, 2)).astype(np.float32)
    want = -np.mean([(1 - w[i]) * q[i, 0] + w[i] * q[i, 1] for i in range(5)])
    np.testing.assert_allclose(float(mofir.scalarised_actor_loss(jnp.asarray(omega), jnp.asarray(q))), want, rtol=1e-6)
    np.testing.assert_allclose(float(mofir.vector_critic_loss(jnp.asarray(q), jnp.asarray(y_np, jnp.float32))),
                               np.mean(np.sum((q - y_np) ** 2, 1)), rtol=1e-5)

    n_pop = jnp.array([0, 3, 5, 7, 10])
    np.testing.assert_allclose(np.asarray(mofir.slate_fairness(n_pop, 10)), [-0.5, -0.2, 0.0, -0.2, -0.5], atol=1e-7)


def tiny_config(**mofir_changes) -> Config:
    cfg = small_config()
    cfg = dataclasses.replace(
        cfg,
        agent=dataclasses.replace(cfg.agent, kind="mofir"),
        train=dataclasses.replace(cfg.train, num_envs=32, rollout_len=8, stage1_sessions=128, seeds=(1,)),
        encoder=dataclasses.replace(cfg.encoder, train_steps=100),
        replay=dataclasses.replace(cfg.replay, capacity=4096, min_size=256, batch_size=64, grad_steps=8),
        mofir=dataclasses.replace(cfg.mofir, **mofir_changes),
    )
    return cfg.validate()


N_UPDATES = 40


@pytest.fixture(scope="module")
def setup(small_worlds):
    cfg = tiny_config(explore_std=0.3)
    p_train, p_test = make_params(small_worlds[0], cfg), make_params(small_worlds[1], cfg)
    frozen = jax.jit(make_stage1(cfg, p_train))(jax.random.key(0))[0]
    agent = get_spec("mofir").make(cfg, p_train)
    run = jax.jit(lambda S: jax.lax.scan(lambda S, _: agent.update(frozen, S), S, None, length=N_UPDATES))
    hyper = hyper_of(cfg)
    on = {**hyper, "mofir.actor_lr": jnp.float32(3e-4)}
    off = {**hyper, "mofir.actor_lr": jnp.float32(0.0), "mofir.critic_lr": jnp.float32(0.0)}
    out = {}
    for name, h in (("on", on), ("off", off), ("on_again", on)):
        S, logs = run(agent.init(jax.random.key(4), frozen, h))
        out[name] = (S, jax.device_get(logs))
    return cfg, agent, frozen, p_train, p_test, out


def greedy_ad(agent, frozen, S, params, w: float, n: int = 64) -> float:
    """Mean per-slate |2 p - 1| of the greedy slates at eval_weight w, over n fresh sessions'
    first observations and the training sessions' current ones."""
    S = S.replace(hyper={**S.hyper, "mofir.eval_weight": jnp.float32(w)})
    pp = agent.policy_params(frozen, S)
    greedy = jax.jit(jax.vmap(agent.act.greedy, in_axes=(0, 0, 0, None, None, 0)))
    obs, env_state = batch_reset(jax.random.key(9), params, n)
    ads = []
    for o, st in ((obs, env_state), (S.obs, S.env_state)):
        m = o.t.shape[0]
        slates, _ = greedy(jax.random.split(jax.random.key(1), m), o, st, params, pp, agent.init_carry(m))
        p = np.asarray(params.world.popular)[np.asarray(slates)].mean(-1)
        ads.append(np.abs(2 * p - 1))
    return float(np.concatenate(ads).mean())


def test_update_is_deterministic_and_finite(setup):
    *_, out = setup
    logs, again = out["on"][1], out["on_again"][1]
    assert set(logs) >= {"Len", "R_cum", "R_each", "AD", "Fair", "critic_loss", "actor_loss", "q_utility",
                         "q_fairness", "learning"}
    for k in logs:
        assert logs[k].shape == (N_UPDATES,) and np.isfinite(logs[k]).all(), k
        np.testing.assert_array_equal(logs[k], again[k], err_msg=k)
    assert (logs["learning"] == 1.0).all()  # 256 transitions per update, min_size 256
    assert 0.35 < logs["w_mean"].mean() < 0.65  # w ~ U[0, 1] per session


@pytest.mark.slow
def test_preference_steers_the_trained_policy_but_not_a_frozen_one(setup):
    cfg, agent, frozen, p_train, p_test, out = setup
    gap = {}
    for name in ("on", "off"):
        S = out[name][0]
        gap[name] = {w: greedy_ad(agent, frozen, S, p_train, w) for w in (0.0, 1.0)}
    # Learning-rate 0: omega only enters through the near-zero heads, the slates do not move.
    assert abs(gap["off"][1.0] - gap["off"][0.0]) < 0.02, gap
    # Trained: the fairness end of the front shows more balanced slates than the utility end
    # (per-slate |2p - 1|: measured 0.46 vs 0.73 when the test was written; 0.31 vs 0.45 in a fresh
    # install on 2026-12-02, where the commit that wrote the test gives the same 0.31 vs 0.45).
    assert gap["on"][1.0] < gap["on"][0.0] - 0.1, gap


def test_acts_on_a_world_with_another_item_set(setup):
    cfg, agent, frozen, p_train, p_test, out = setup
    S = out["on"][0]
    assert p_test.world.n_items != p_train.world.n_items
    n, K = 16, p_test.slate_size
    obs, env_state = batch_reset(jax.random.key(7), p_test, n)
    pp = agent.policy_params(frozen, S)
    carry = agent.init_carry(n)
    greedy = jax.jit(jax.vmap(agent.act.greedy, in_axes=(0, 0, 0, None, None, 0)))
    sample = jax.jit(jax.vmap(agent.act.sample, in_axes=(0, 0, 0, None, None, 0)))
    keys = lambda seed: jax.random.split(jax.random.key(seed), n)
    g1, c1 = greedy(keys(1), obs, env_state, p_test, pp, carry)
    g2, _ = greedy(keys(2), obs, env_state, p_test, pp, carry)
    s1, _ = sample(keys(1), obs, env_state, p_test, pp, carry)
    s2, _ = sample(keys(2), obs, env_state, p_test, pp, carry)
    for slates in (np.asarray(g1), np.asarray(s1)):
        assert slates.shape == (n, K) and ((slates >= 0) & (slates < p_test.world.n_items)).all()
        assert all(len(set(row)) == K for row in slates)
    np.testing.assert_array_equal(g1, g2)
    assert not np.array_equal(s1, s2)
    assert c1.shape == (n,)


def test_replay_next_input_is_the_next_steps_input(setup):
    """x'[i] is the next step's input (40 x 256 transitions: the 4096-row ring wrapped)."""
    cfg, agent, frozen, p_train, p_test, out = setup
    assert check_next_inputs(cfg, frozen, p_train, out["on"][0], "x2") == 4096
