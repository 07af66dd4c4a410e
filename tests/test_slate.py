"""Plackett-Luce slates: the blocked sampler's law, the log-likelihood and the fused gradient."""

import itertools
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purerec import slate

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


def test_fused_log_prob_entropy_value_and_gradient():
    lg = jnp.asarray(LOGITS)
    a = jnp.array([2, 0, 5])
    lp, ent = slate.log_prob_entropy(lg, a)
    p = np.exp(LOGITS) / np.exp(LOGITS).sum()
    np.testing.assert_allclose(ent, -np.sum(p * np.log(p)), rtol=1e-5)
    np.testing.assert_allclose(lp, np.log(pl_prob_numpy(LOGITS, [2, 0, 5])), rtol=1e-5)
    for g_lp, g_ent in [(1.0, 0.0), (0.0, 1.0), (0.7, -0.3)]:
        fused = jax.grad(lambda l: g_lp * slate.log_prob_entropy(l, a)[0] + g_ent * slate.log_prob_entropy(l, a)[1])(lg)
        auto = jax.grad(lambda l: g_lp * slate.log_prob(l, a) + g_ent * slate.first_position_entropy(l))(lg)
        np.testing.assert_allclose(fused, auto, atol=1e-6)
    # The log-likelihood's gradient against central differences in float64 NumPy.
    eps, num = 1e-5, np.zeros(6)
    for i in range(6):
        up, dn = LOGITS.astype(np.float64).copy(), LOGITS.astype(np.float64).copy()
        up[i] += eps
        dn[i] -= eps
        num[i] = (np.log(pl_prob_numpy(up, [2, 0, 5])) - np.log(pl_prob_numpy(dn, [2, 0, 5]))) / (2 * eps)
    np.testing.assert_allclose(jax.grad(lambda l: slate.log_prob_entropy(l, a)[0])(lg), num, atol=1e-4)
