"""Shared returns and losses against values worked out by hand (arithmetic in the comments) or in
plain NumPy on small cases."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from purerec.agents import losses, returns


def test_gae_by_hand():
    # One session, 3 steps, gamma 0.5, lambda 0.5; the session ends at step 1 (done[1] = 1).
    r = jnp.array([[1.0], [2.0], [3.0]])
    v = jnp.array([[0.5], [1.0], [2.0]])
    done = jnp.array([[0.0], [1.0], [0.0]])
    adv, tgt = returns.gae(r, v, done, jnp.array([4.0]), 0.5, 0.5)
    # t=2: delta = 3 + 0.5*4 - 2 = 3;            adv2 = 3
    # t=1: delta = 2 + 0 - 1 = 1 (done);         adv1 = 1 (no bootstrap past the end)
    # t=0: delta = 1 + 0.5*1 - 0.5 = 1;          adv0 = 1 + 0.5*0.5*1 = 1.25
    np.testing.assert_allclose(adv[:, 0], [1.25, 1.0, 3.0], rtol=1e-6)
    np.testing.assert_allclose(tgt[:, 0], [1.75, 2.0, 5.0], rtol=1e-6)


def test_gae_lambda_one_is_the_discounted_return_minus_value():
    rng = np.random.default_rng(0)
    r, v = rng.normal(size=(6, 2)), rng.normal(size=(6, 2))
    last = rng.normal(size=2)
    adv, _ = returns.gae(jnp.asarray(r), jnp.asarray(v), jnp.zeros((6, 2)), jnp.asarray(last), 0.9, 1.0)
    g = last.copy()
    want = np.zeros_like(r)
    for t in range(5, -1, -1):
        g = r[t] + 0.9 * g
        want[t] = g - v[t]
    np.testing.assert_allclose(adv, want, rtol=1e-5)


def test_ppo_clip_by_hand():
    # Two samples, advantages +1 / -1 (mean 0, std 1: normalisation leaves them), clip 0.2.
    logp = jnp.log(jnp.array([1.5, 0.5]))  # ratios 1.5 and 0.5 against old log-prob 0
    old = jnp.zeros(2)
    adv = jnp.array([1.0, -1.0])
    total, parts = losses.ppo_clip(logp, old, adv, jnp.array([1.0, 0.0]), jnp.array([0.0, 0.0]),
                                   jnp.array([0.3, 0.1]), 0.2, 0.5, 0.01)
    # sample 0: min(1.5*1, 1.2*1) = 1.2; sample 1: min(0.5*-1, 0.8*-1) = -0.8; actor = -(1.2-0.8)/2 = -0.2
    # critic = 0.5 * mean([1, 0]) = 0.25; entropy = 0.2; total = -0.2 + 0.5*0.25 - 0.01*0.2 = -0.077
    np.testing.assert_allclose(parts["actor"], -0.2, rtol=1e-5)
    np.testing.assert_allclose(parts["critic"], 0.25, rtol=1e-6)
    np.testing.assert_allclose(total, -0.077, rtol=1e-5)


def test_a2c_by_hand_and_its_gradient():
    logp = jnp.array([-1.0, -2.0])
    adv = jnp.array([2.0, -1.0])
    total, parts = losses.a2c(logp, adv, jnp.array([1.0, 3.0]), jnp.array([0.0, 1.0]), jnp.array([0.5, 0.5]),
                              0.5, 0.1)
    # actor = -mean([-1*2, -2*-1]) = -mean([-2, 2]) = 0; critic = 0.5*mean([1, 4]) = 1.25
    # total = 0 + 0.5*1.25 - 0.1*0.5 = 0.575
    np.testing.assert_allclose(parts["actor"], 0.0, atol=1e-7)
    np.testing.assert_allclose(parts["critic"], 1.25, rtol=1e-6)
    np.testing.assert_allclose(total, 0.575, rtol=1e-6)
    # d actor / d logp = -adv / n (advantages are constants)
    g = jax.grad(lambda lp: losses.a2c(lp, adv, jnp.zeros(2), jnp.zeros(2), jnp.zeros(2), 0.5, 0.1)[0])(logp)
    np.testing.assert_allclose(g, [-1.0, 0.5], rtol=1e-6)


def test_td_and_td3_targets_by_hand():
    r = jnp.array([1.0, 1.0])
    done = jnp.array([False, True])
    # 1 + 0.9 * min(3, 2) = 2.8; the ended session: 1
    np.testing.assert_allclose(losses.td3_target(r, done, jnp.array([3.0, 5.0]), jnp.array([2.0, 7.0]), 0.9),
                               [2.8, 1.0], rtol=1e-6)
    np.testing.assert_allclose(losses.td_target(r, done, jnp.array([10.0, 10.0]), 0.5), [6.0, 1.0])
    np.testing.assert_allclose(losses.mse(jnp.array([1.0, 3.0]), jnp.array([0.0, 0.0])), 5.0)


def test_discrete_sac_pieces_against_numpy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 5))
    q1, q2 = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    lp = np.log(p)
    alpha = 0.3
    v = losses.soft_value(jnp.asarray(p), jnp.asarray(lp), jnp.asarray(q1), jnp.asarray(q2), alpha)
    np.testing.assert_allclose(v, (p * (np.minimum(q1, q2) - alpha * lp)).sum(1), rtol=1e-5)
    loss, ent = losses.discrete_sac_actor(jnp.asarray(p), jnp.asarray(lp), jnp.asarray(q1), jnp.asarray(q2), alpha)
    np.testing.assert_allclose(loss, (p * (alpha * lp - np.minimum(q1, q2))).sum(1).mean(), rtol=1e-5)
    np.testing.assert_allclose(ent, -(p * lp).sum(1).mean(), rtol=1e-5)
    # Temperature: entropy 2 above a target of 1.5 -> d loss / d log_alpha = +0.5 (alpha falls).
    g = jax.grad(lambda la: losses.sac_temperature(la, jnp.float32(2.0), 1.5))(jnp.float32(-1.0))
    np.testing.assert_allclose(g, 0.5)
