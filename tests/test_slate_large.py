"""Large slates (``env.slate_size`` above ``purerec.sim.slate.MASK_FROM``): the taken-item mask gives
exactly the slates and log-probabilities of the comparison with the chosen items."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from purerec.sim import slate


@pytest.mark.parametrize("k", [5, 40, 150])
def test_masked_and_compared_draws_are_identical(k, monkeypatch):
    logits = 3.0 * jax.random.normal(jax.random.PRNGKey(4), (300,))  # 3 blocks, the last one partial
    keys = jax.random.split(jax.random.PRNGKey(7), 8)
    draw = lambda: [jax.jit(slate.sample_with_log_prob, static_argnums=2)(kk, logits, k) for kk in keys]
    monkeypatch.setattr(slate, "MASK_FROM", 0)  # every k masked
    masked = draw()
    monkeypatch.setattr(slate, "MASK_FROM", 10**6)  # every k compared
    compared = draw()
    for (s1, lp1), (s2, lp2) in zip(masked, compared):
        np.testing.assert_array_equal(np.asarray(s1), np.asarray(s2))
        assert float(lp1) == float(lp2)
        assert len(set(np.asarray(s1).tolist())) == k and np.asarray(s1).max() < 300
        # The log-probability is the Plackett-Luce one of the drawn slate.
        np.testing.assert_allclose(float(lp1), float(slate.log_prob(logits, s1)), rtol=1e-4, atol=1e-4)
