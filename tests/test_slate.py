"""Plackett-Luce slates: the blocked sampler's law, the log-likelihood and the linear-logit gradient."""

import itertools
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purerec.sim import slate

LOGITS = np.array([0.5, -1.0, 2.0, 0.1, 1.3, -0.4], np.float32)


def pl_prob_numpy(logits, perm):
    """P(slate) by the sequential-choice definition, in float64."""
    w = np.exp(np.asarray(logits, np.float64))
    left = np.ones(len(w), bool)
    p = 1.0
    for a in perm:
        p *= w[a] / w[left].sum()
        left[a] = False
    return p


def distinct(slates):
    s = np.sort(np.asarray(slates), axis=1)
    return bool((s[:, 1:] != s[:, :-1]).all())


def test_log_prob_matches_definition_and_normalises():
    total = 0.0
    for perm in itertools.permutations(range(6), 3):
        lp = float(slate.log_prob(jnp.asarray(LOGITS), jnp.asarray(perm)))
        np.testing.assert_allclose(np.exp(lp), pl_prob_numpy(LOGITS, perm), rtol=1e-5)
        total += np.exp(lp)
    np.testing.assert_allclose(total, 1.0, rtol=1e-5)


@pytest.mark.parametrize("block", [128, 2])
def test_sampler_follows_plackett_luce(monkeypatch, block):
    """Empirical slate frequencies of 120k draws vs the exact law (120 ordered slates)."""
    monkeypatch.setattr(slate, "BLOCK", block)  # block 2 exercises the block choice itself
    n = 120_000
    keys = jax.random.split(jax.random.PRNGKey(3), n)
    draws = np.asarray(jax.jit(jax.vmap(lambda k: slate.sample(k, jnp.asarray(LOGITS), 3)))(keys))
    assert distinct(draws)
    counts = Counter(map(tuple, draws))
    perms = list(itertools.permutations(range(6), 3))
    p = np.array([pl_prob_numpy(LOGITS, q) for q in perms])
    f = np.array([counts.get(q, 0) for q in perms]) / n
    # Pearson chi-square with 119 degrees of freedom: mean 119, sd 15.4; 200 is > 5 sd out.
    chi2 = n * np.sum((f - p) ** 2 / p)
    assert chi2 < 200, chi2
    # The first slot alone is a softmax.
    first = np.bincount(draws[:, 0], minlength=6) / n
    np.testing.assert_allclose(first, np.exp(LOGITS) / np.exp(LOGITS).sum(), atol=0.005)


def test_sampler_distinct_and_in_range_on_degenerate_logits():
    """Logits spread past float32's exp range, a last block of 2 items, K close to N."""
    lg = jnp.concatenate([jnp.zeros(2), jnp.full((128,), -200.0), jnp.array([50.0, 49.0])])
    keys = jax.random.split(jax.random.PRNGKey(0), 2000)
    draws = np.asarray(jax.vmap(lambda k: slate.sample(k, lg, 10))(keys))
    assert distinct(draws) and draws.min() >= 0 and draws.max() < 132
    # The two dominant items come first, in their order with probability e / (1 + e).
    assert set(map(tuple, draws[:, :2])) <= {(130, 131), (131, 130)}
    np.testing.assert_allclose(np.mean(draws[:, 0] == 130), np.e / (1 + np.e), atol=0.04)
    small = np.asarray(jax.vmap(lambda k: slate.sample(k, jnp.asarray(LOGITS), 6))(keys[:200]))
    assert distinct(small)  # a full permutation


def test_same_key_same_slate():
    k = jax.random.PRNGKey(7)
    a = slate.sample(k, jnp.asarray(LOGITS), 3)
    np.testing.assert_array_equal(a, slate.sample(k, jnp.asarray(LOGITS), 3))


@pytest.mark.parametrize("block", [128, 2])
def test_sample_with_log_prob_returns_the_slates_log_likelihood(monkeypatch, block):
    """The sampler's log-likelihood: each position's denominator is the mass left over all blocks
    (block 2 puts the 6 items in 3 blocks, so the chosen block's mass is not the whole)."""
    monkeypatch.setattr(slate, "BLOCK", block)
    keys = jax.random.split(jax.random.PRNGKey(3), 50)
    lg = jnp.asarray(LOGITS)
    draws, lps = jax.vmap(lambda k: slate.sample_with_log_prob(k, lg, 4))(keys)
    for a, lp in zip(np.asarray(draws), np.asarray(lps)):
        np.testing.assert_allclose(np.exp(lp), pl_prob_numpy(LOGITS, a), rtol=1e-5)


BASIS = np.array([[1.0, 0.0, 0.2], [0.6, 0.8, 0.9], [0.0, 1.0, 0.1], [-0.6, 0.8, 0.5],
                  [-1.0, 0.0, 0.0], [0.0, -1.0, 1.0]], np.float32)
X = np.array([[1.5, -0.5, -1.0], [0.2, 2.0, 0.3], [-1.0, 0.4, -2.0], [0.7, 0.7, 0.0]], np.float32)
SLATES = np.array([[2, 0, 5], [1, 2, 3], [4, 3, 0], [0, 1, 5]])


def test_linear_log_prob_entropy_values_match_numpy():
    for rows in (2, 3, 4):  # 3 does not divide the 4 rows: one chunk of all
        lp, ent = slate.linear_log_prob_entropy(jnp.asarray(X), jnp.asarray(BASIS), jnp.asarray(SLATES), rows)
        for r in range(4):
            logits = BASIS.astype(np.float64) @ X[r]
            p = np.exp(logits - logits.max())
            p /= p.sum()
            np.testing.assert_allclose(lp[r], np.log(pl_prob_numpy(logits, SLATES[r])), rtol=1e-5)
            np.testing.assert_allclose(ent[r], -np.sum(p * np.log(p)), rtol=1e-5)


def test_linear_log_prob_survives_a_slate_holding_almost_all_mass():
    """Masses are sums of positives: the last slot's tiny remaining mass is not lost to cancellation."""
    x = np.array([[30.0, 0.0, 0.0]], np.float32)
    basis = np.array([[1.0, 0, 0], [0.97, 0, 0], [0.95, 0, 0], [0.2, 0, 0], [0.1, 0, 0], [0.0, 0, 0]], np.float32)
    a = np.array([[0, 1, 4]])
    lp, _ = slate.linear_log_prob_entropy(jnp.asarray(x), jnp.asarray(basis), jnp.asarray(a))
    want = np.log(pl_prob_numpy(basis.astype(np.float64) @ x[0].astype(np.float64), a[0]))
    np.testing.assert_allclose(lp[0], want, rtol=1e-5)


def test_linear_log_prob_entropy_gradient_matches_autodiff_and_differences():
    basis, slates = jnp.asarray(BASIS), jnp.asarray(SLATES)
    g = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, -0.3], [-0.2, 0.5]], np.float32)

    def fused(x):
        lp, ent = slate.linear_log_prob_entropy(x, basis, slates, 2)
        return jnp.sum(g[:, 0] * lp + g[:, 1] * ent)

    def plain(x):
        logits = x @ basis.T
        lp = jax.vmap(slate.log_prob)(logits, slates)
        ent = jax.vmap(slate.first_position_entropy)(logits)
        return jnp.sum(g[:, 0] * lp + g[:, 1] * ent)

    np.testing.assert_allclose(jax.grad(fused)(jnp.asarray(X)), jax.grad(plain)(jnp.asarray(X)), atol=1e-5)

    # The log-likelihood's gradient against central differences in float64 NumPy.
    def lp64(x, r):
        return np.log(pl_prob_numpy(BASIS.astype(np.float64) @ x, SLATES[r]))

    grad = jax.grad(lambda x: jnp.sum(slate.linear_log_prob_entropy(x, basis, slates)[0]))(jnp.asarray(X))
    eps = 1e-5
    for r in range(4):
        for i in range(3):
            up, dn = X[r].astype(np.float64).copy(), X[r].astype(np.float64).copy()
            up[i] += eps
            dn[i] -= eps
            np.testing.assert_allclose(grad[r, i], (lp64(up, r) - lp64(dn, r)) / (2 * eps), atol=1e-4)

