"""The harm paper's stationary-profile policies (``purerec.sim.stationary``): the independent-sampling
gradient against exact enumeration, the projection, and the policies' ordering on a toy."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from purerec.sim import stationary as S


def toy(seed=0, n=10, d=3):
    rng = np.random.default_rng(seed)
    V = rng.normal(size=(n, d))
    u0 = rng.normal(size=d)
    harmful = np.zeros(n, bool)
    harmful[n - 2:] = True
    return V, u0, harmful


def model_of(V, harmful, c=2.0):
    return S.Model(V=jnp.asarray(V), harmful=jnp.asarray(harmful), alpha_h=jnp.asarray(0.5),
                   alpha_nh=jnp.asarray(0.25), beta=jnp.asarray(0.2), premium_c=jnp.asarray(c))


def test_independent_sampling_gradient_matches_exact_enumeration():
    """With every subset of the pool as a 'sample' (weights = their independent-sampling
    probabilities), the toggle derivative through custom_root equals autodiff of the exact
    expectation in which the weights depend on pi."""
    V, u0, harmful = toy(1)
    with jax.enable_x64(True):
        model = model_of(V, harmful)
        pool = jnp.arange(8)
        masks = jnp.asarray(list(itertools.product([0.0, 1.0], repeat=8)))  # [256, 8]
        pi = jnp.asarray(np.random.default_rng(2).uniform(0.1, 0.9, 8))

        def weights(p):
            return jnp.prod(jnp.where(masks > 0, p[None, :], 1.0 - p[None, :]), axis=1)

        lam = 10.0
        surrogate = lambda p: S.stationary_objective(p, jnp.asarray(u0), model, pool, masks,
                                                     jax.lax.stop_gradient(weights(p)), lam)[0]
        exact = jax.jit(lambda p: S.stationary_objective(None, jnp.asarray(u0), model, pool, masks, weights(p), lam)[0])
        surrogate = jax.jit(surrogate)
        assert abs(float(surrogate(pi)) - float(exact(pi))) < 1e-10
        g_s, g_e = np.asarray(jax.grad(surrogate)(pi)), np.asarray(jax.grad(exact)(pi))
        np.testing.assert_allclose(g_s, g_e, rtol=1e-6, atol=1e-9)
        # and both match central finite differences of the exact expectation
        eps = 1e-6
        for n in (0, 3, 7):
            e = jnp.zeros(8).at[n].set(eps)
            fd = (float(exact(pi + e)) - float(exact(pi - e))) / (2 * eps)
            assert abs(fd - g_e[n]) < 1e-6 * max(1.0, abs(fd))


def test_a_deterministic_slate_is_the_exact_single_set_value():
    V, u0, harmful = toy(3)
    with jax.enable_x64(True):
        model = model_of(V, harmful)
        pool = jnp.arange(8)
        pi = jnp.zeros(8).at[jnp.asarray([1, 4, 6])].set(1.0)
        uni = jnp.asarray(np.random.default_rng(0).random((64, 8)))
        masks = S.crn_masks(pi, uni)
        j1 = S.stationary_objective(pi, jnp.asarray(u0), model, pool, masks, jnp.full((64,), 1 / 64), 5.0)[0]
        one = jnp.zeros((1, 8)).at[0, jnp.asarray([1, 4, 6])].set(1.0)
        j2 = S.stationary_objective(None, jnp.asarray(u0), model, pool, one, jnp.ones(1), 5.0)[0]
        assert abs(float(j1) - float(j2)) < 1e-12


def test_projection_onto_the_capped_simplex():
    rng = np.random.default_rng(4)
    proj = jax.jit(jax.vmap(lambda x: S.project_capped_simplex(x, 3.0)))
    xs = rng.normal(size=(20, 12)) * 2
    ps = np.asarray(proj(jnp.asarray(xs, jnp.float32)))
    ys = np.asarray(proj(jnp.asarray(rng.random((400, 12)), jnp.float32)))  # feasible points
    assert (np.abs(ys.sum(1) - 3.0) < 1e-4).all()
    for x, p in zip(xs, ps):
        assert abs(p.sum() - 3.0) < 1e-4 and p.min() >= 0 and p.max() <= 1
        # no feasible point is closer to x
        assert np.linalg.norm(x - p) <= np.linalg.norm(x[None, :] - ys, axis=1).min() + 1e-4


def test_policies_on_the_toy_grad_at_least_u0():
    V, u0, harmful = toy(5, n=12, d=4)
    model = S.Model(V=jnp.asarray(V, jnp.float32), harmful=jnp.asarray(harmful), alpha_h=jnp.float32(0.5),
                    alpha_nh=jnp.float32(0.25), beta=jnp.float32(0.2), premium_c=jnp.float32(1.0))
    u0j = jnp.asarray(u0, jnp.float32)
    pool = S.candidate_pool(u0j, model.V, model.harmful, 10)
    assert not np.asarray(harmful)[np.asarray(pool)].any()
    uni = jax.random.uniform(jax.random.PRNGKey(0), (128, 10))
    uu = jax.random.uniform(jax.random.PRNGKey(1), (128, 12))
    t = S.user_table(u0j, model, pool, 3, [1.0, 10.0, 100.0], uni, uu, steps=20)
    for pol in ("u0", "alt", "unif", "grad"):
        assert np.isfinite(np.asarray(t[pol]["J"])).all()
    assert (np.asarray(t["grad"]["J"]) >= np.asarray(t["u0"]["J"]) - 1e-6).all()
    # J = p_CLK - lambda p_H for each policy and lambda
    lam = np.array([1.0, 10.0, 100.0])
    for pol in t:
        np.testing.assert_allclose(np.asarray(t[pol]["J"]),
                                   np.asarray(t[pol]["p_clk"]) - lam * np.asarray(t[pol]["p_h"]), rtol=1e-5, atol=1e-6)


def test_orderings_forgive_float32_rounding_only():
    """``at_least``: equal up to float32 rounding counts as >=; a real loss (1e-4 relative) does not."""
    from purerec.sim.stationary import at_least

    b = np.array([-10.0, -10.0, 0.3, 0.0])
    a = np.array([np.float32(-10.0) - 5e-6, -10.001, 0.3 - 1e-8, -2e-6])
    assert at_least(a, b).tolist() == [True, False, True, False]
