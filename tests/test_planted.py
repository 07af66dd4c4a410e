"""Hand values for two pieces whose one-line bugs once survived the whole suite (issue 28):

* the HRL worker (``nets.Worker``, eq. 6): its output and the item scores it defines, by hand
  from the parameters (the grouped slate rule hid a flipped sign of the popularity term);
* the reverse diffusion chain (``diffusion.reverse``, eq. 3): a two-step chain with zero predicted
  noise, whose output spread is exactly sigma_2 / sqrt(alpha_1) (a one-step chain adds no noise,
  so only a longer chain shows the sigma_k z term).

The other planted-bug tests live with their modules' tests: the Plackett-Luce log-likelihood
with small blocks (test_slate.py), the off-policy bootstrap terms with a discount > 0 and the
replay alignment (test_a2c_td3.py, test_bcq.py, test_dnair_sac4ir.py, test_mofir.py), and the
greedy evaluation row (test_agent_eval.py).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purerec.agents import nets
from purerec.state import diffusion


# ---------------------------------------------------------------------------------------------
# HRL worker (eq. 6)

def _np_unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


@pytest.mark.parametrize("score", ["dot", "cos"])
def test_worker_output_and_scores_match_numpy(score):
    """x = [w_acc q, -w_fair kappa] with q = W s + b (unit x scale for cos), and the item scores
    basis_i . x = w_acc <q, e_i> - w_fair kappa lpop_i, lpop_i = log(1 + pop_i) / log(1 + max pop)."""
    d, n_state, n_items = 4, 5, 7
    worker = nets.Worker(d, score, init_logit_scale=3.0, init_std=0.4, init_pop_scale=0.05)
    rng = np.random.default_rng(0)
    s = rng.normal(size=(3, n_state)).astype(np.float32)
    z = np.array([[0.9, 0.2], [0.3, 0.8], [0.5, 0.5]], np.float32)
    p = worker.init(jax.random.key(0), jnp.asarray(s), jnp.asarray(z))
    # Move every parameter off its initial value (a learned kappa of 0.7, a per-coordinate log-std).
    pr = dict(p["params"])
    pr["log_pop_scale"] = jnp.float32(math.log(0.7))
    pr["log_std"] = jnp.asarray(np.linspace(-0.5, 0.3, d + 1), jnp.float32)
    p = {"params": pr}
    mean, log_std = worker.apply(p, jnp.asarray(s), jnp.asarray(z))

    W = np.asarray(pr["query"]["Dense_0"]["kernel"], np.float64)
    b = np.asarray(pr["query"]["Dense_0"]["bias"], np.float64)
    q = s.astype(np.float64) @ W + b
    if score == "cos":
        q = math.exp(float(pr["query"]["log_scale"])) * _np_unit(q)
    kappa = 0.7
    want = np.concatenate([z[:, :1] * q, -z[:, 1:] * kappa], axis=1)
    np.testing.assert_allclose(mean, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(log_std, np.broadcast_to(np.linspace(-0.5, 0.3, d + 1), want.shape), rtol=1e-6)

    # The scores the worker's x defines over the item basis: eq. 6 by hand.
    emb = rng.normal(size=(n_items, d)).astype(np.float32)
    pop = np.array([0.0, 3.0, 50.0, 7.0, 200.0, 1.0, 20.0], np.float32)
    e = _np_unit(emb.astype(np.float64)) if score == "cos" else emb.astype(np.float64)
    lpop = np.log1p(pop.astype(np.float64)) / np.log1p(pop.max())
    want_scores = z[:, :1] * (q @ e.T) - z[:, 1:] * kappa * lpop[None, :]
    scores = nets.item_basis(jnp.asarray(emb), jnp.asarray(pop), score) @ mean.T
    np.testing.assert_allclose(np.asarray(scores).T, want_scores, rtol=1e-5, atol=1e-5)
    # The popularity term penalises popularity: with w_acc = 0 the least popular item scores highest.
    only_fair, _ = worker.apply(p, jnp.asarray(s[:1]), jnp.asarray([[0.0, 1.0]], jnp.float32))
    s_fair = np.asarray(nets.item_basis(jnp.asarray(emb), jnp.asarray(pop), score) @ only_fair[0])
    assert np.argmax(s_fair) == np.argmin(pop) and np.argmin(s_fair) == np.argmax(pop)


# ---------------------------------------------------------------------------------------------
# Reverse diffusion (eq. 3)

def test_reverse_two_steps_adds_sigma_2_noise_once():
    """K = 2, betas (0.1, 0.3), eps_theta = 0, start s_2 = c. Step 2: s_1 = c / sqrt(a_2) + sigma_2 z;
    step 1 (no noise at the last step): s_0 = s_1 / sqrt(a_1). So s_0 ~ N(c / sqrt(a_1 a_2),
    sigma_2^2 / a_1) with sigma_2^2 = beta_2 (1 - abar_1) / (1 - abar_2) = beta_2 beta_1 / (1 - a_1 a_2)."""
    b1, b2 = 0.1, 0.3
    a1, a2 = 1 - b1, 1 - b2
    sigma2 = math.sqrt(b2 * b1 / (1 - a1 * a2))
    want_std = sigma2 / math.sqrt(a1)  # 0.300 (by hand: sqrt(0.03 / 0.37) / sqrt(0.9))
    c = 0.7
    want_mean = c / math.sqrt(a1 * a2)
    sched = diffusion.make_schedule(2, "linear", b1, b2)
    n_rows, dim = 4000, 50  # 200,000 draws
    s2 = jnp.full((n_rows, dim), c, jnp.float32)
    out = np.asarray(jax.jit(lambda k: diffusion.reverse(k, sched, lambda s, k: jnp.zeros_like(s), s2, 2))(
        jax.random.key(11)), np.float64)
    n = out.size
    # Sample std of n normal draws: relative standard error 1 / sqrt(2 (n - 1)) = 0.0016; 1% is > 6 SE.
    np.testing.assert_allclose(out.std(), want_std, rtol=0.01)
    # Sample mean: standard error want_std / sqrt(n) = 0.00067; 0.004 is 6 SE.
    np.testing.assert_allclose(out.mean(), want_mean, atol=0.004)
    # Independent across coordinates and rows (one z per element): the row means' spread is std / sqrt(dim).
    np.testing.assert_allclose(out.mean(1).std(), want_std / math.sqrt(dim), rtol=0.1)
    assert n == 200_000
