"""The attraction model (``purerec.sim.dynamics``) against a plain NumPy port of the harm paper's
equations on its small example (10 items, d = 3, the last two harmful, k = 3, every 3-set of the
safe items as a candidate slate), in float64."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purerec.sim import dynamics as D


def toy(seed=0, n=10, d=3, k=3):
    rng = np.random.default_rng(seed)
    V = rng.normal(size=(n, d))
    u = rng.normal(size=d)
    u0 = rng.normal(size=d)
    c = 3 * rng.random() + 0.1
    r = rng.random(3)
    a_h, a_nh, beta = r / r.sum()
    harmful = np.zeros(n, bool)
    harmful[n - 2:] = True
    sets = np.array(list(itertools.combinations(range(n - 2), k)))
    w = rng.random(len(sets))
    w /= w.sum()
    return dict(V=V, u=u, u0=u0, c=c, a_h=a_h, a_nh=a_nh, beta=beta, harmful=harmful, sets=sets, w=w)


# --- the NumPy port of the equations (direct, not in log space) ---------------------------------

def np_p_vE(s, E, c):
    s_E = s[list(E)].sum()
    p = c / (s_E + c) * s / s.sum()
    for v in E:
        p[v] += s[v] / (s_E + c)
    return p


def np_quantities(u, t):
    s = np.exp(t["V"] @ u)
    p = sum(wi * np_p_vE(s, E, t["c"]) for wi, E in zip(t["w"], t["sets"]))
    p_clk = sum(wi * s[list(E)].sum() / (s[list(E)].sum() + t["c"]) for wi, E in zip(t["w"], t["sets"]))
    p_h = s[t["harmful"]].sum() / s.sum() * (1 - p_clk)
    return p, p_clk, p_h


def np_alpha(t):
    return np.where(t["harmful"], t["a_h"], t["a_nh"])


def np_mean_step(u, t):
    p, _, _ = np_quantities(u, t)
    a = np_alpha(t) * p
    return t["beta"] * t["u0"] + a @ t["V"] + (1 - t["beta"] - a.sum()) * u


def np_G(u, t):
    p, _, _ = np_quantities(u, t)
    a = np_alpha(t) * p
    return (t["beta"] * t["u0"] + a @ t["V"]) / (t["beta"] + a.sum())


def jx(t):
    return dict(V=jnp.asarray(t["V"]), sets=jnp.asarray(t["sets"]), w=jnp.asarray(t["w"]),
                harmful=jnp.asarray(t["harmful"]), c=jnp.asarray(t["c"]), a_h=jnp.asarray(t["a_h"]),
                a_nh=jnp.asarray(t["a_nh"]), beta=jnp.asarray(t["beta"]), u0=jnp.asarray(t["u0"]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_choice_and_one_step_match_numpy(seed):
    t = toy(seed)
    with jax.enable_x64(True):
        j = jx(t)
        u = jnp.asarray(t["u"])
        ch = D.mixed_choice(j["V"] @ u, j["sets"], j["w"], j["harmful"], j["c"])
        p, p_clk, p_h = np_quantities(t["u"], t)
        np.testing.assert_allclose(np.asarray(ch.p_pick), p, atol=1e-6)
        assert abs(float(ch.p_clk) - p_clk) < 1e-6
        assert abs(float(ch.p_h) - p_h) < 1e-6  # a safe slate: every harmful pick is organic
        assert abs(float(ch.p_h_organic) - p_h) < 1e-6
        assert abs(float(ch.p_pick.sum()) - 1.0) < 1e-9
        # a single slate's p(v|E)
        E = t["sets"][7]
        one = D.choice(j["V"] @ u, jnp.asarray(E), j["harmful"], j["c"])
        np.testing.assert_allclose(np.asarray(one.p_pick), np_p_vE(np.exp(t["V"] @ t["u"]), E, t["c"]), atol=1e-6)
        alpha = D.alphas(j["harmful"], j["a_h"], j["a_nh"])
        u1 = D.step_mean(u, j["u0"], ch.p_pick, j["V"], alpha, j["beta"])
        np.testing.assert_allclose(np.asarray(u1), np_mean_step(t["u"], t), atol=1e-6)
        G = D.stationary_map(u, j["u0"], ch.p_pick, j["V"], alpha, j["beta"])
        np.testing.assert_allclose(np.asarray(G), np_G(t["u"], t), atol=1e-6)


def test_harmful_item_in_the_slate_counts_as_harm():
    """p_H is the probability that the pick is harmful: a harmful item on the slate adds its click
    share to the organic harmful share."""
    t = toy(3)
    s = np.exp(t["V"] @ t["u"])
    E = [0, 1, 9]  # item 9 is harmful
    p = np_p_vE(s, E, t["c"])
    ch = D.choice(jnp.asarray(t["V"] @ t["u"], jnp.float32), jnp.asarray(E), jnp.asarray(t["harmful"]),
                  jnp.float32(t["c"]))
    assert abs(float(ch.p_h) - p[t["harmful"]].sum()) < 1e-5
    assert float(ch.p_h) > float(ch.p_h_organic)


@pytest.mark.parametrize("seed", [0, 4])
def test_mean_steps_reach_the_stationary_point_and_implicit_gradient(seed):
    t = toy(seed)
    with jax.enable_x64(True):
        j = jx(t)
        # the paper's fixed point by plain iteration of the mean step (NumPy), <= 100 steps
        u = t["u0"].copy()
        for _ in range(100):
            u = np_mean_step(u, t)
        ubar = D.stationary_profile(j["u0"], j["V"], j["sets"], j["w"], j["harmful"], j["c"], j["a_h"], j["a_nh"],
                                    j["beta"])
        np.testing.assert_allclose(np.asarray(ubar), u, atol=1e-6)
        np.testing.assert_allclose(np_G(u, t), u, atol=1e-6)

        # d u_bar / d w by the implicit function theorem vs central finite differences
        def f(w):
            return D.stationary_profile(j["u0"], j["V"], j["sets"], w, j["harmful"], j["c"], j["a_h"], j["a_nh"],
                                        j["beta"])

        f = jax.jit(f)  # one compile for the central differences below
        jac = np.asarray(jax.jit(jax.jacobian(f))(j["w"]))
        eps = 1e-6
        for m in (0, 5, 30):
            e = np.zeros(len(t["w"]))
            e[m] = eps
            fd = (np.asarray(f(j["w"] + e)) - np.asarray(f(j["w"] - e))) / (2 * eps)
            np.testing.assert_allclose(jac[:, m], fd, atol=1e-6)
        assert np.abs(jac).max() > 1e-3  # the policy moves the stationary profile


def test_top_k_is_optimal_for_click_and_harm_without_dynamics():
    """alpha = 0: the profile stays u0, and a brute force over every safe k-set of a 12-item world
    finds the top k of the safe items by score best for p_CLK and for p_H."""
    rng = np.random.default_rng(7)
    n, d, k = 12, 4, 3
    V = rng.normal(size=(n, d))
    harmful = np.zeros(n, bool)
    harmful[[2, 7, 11]] = True
    c = 1.5
    safe = np.nonzero(~harmful)[0]
    all_sets = np.asarray(list(itertools.combinations(safe, k)))
    j_V, j_h = jnp.asarray(V, jnp.float32), jnp.asarray(harmful)

    @jax.jit
    def per_set(u0, E):
        sets = E[None, :]
        ubar = D.stationary_profile(u0, j_V, sets, jnp.ones(1), j_h, jnp.float32(c), jnp.float32(0.0),
                                    jnp.float32(0.0), jnp.float32(0.2))
        _, p_clk, p_h = D.objective(ubar, j_V, sets, jnp.ones(1), j_h, jnp.float32(c), 1.0)
        return ubar, p_clk, p_h

    for _ in range(5):
        u0 = rng.normal(size=d)
        ubar, p_clk, p_h = jax.vmap(per_set, in_axes=(None, 0))(jnp.asarray(u0, jnp.float32), jnp.asarray(all_sets))
        np.testing.assert_array_equal(np.asarray(ubar), np.broadcast_to(u0.astype(np.float32), ubar.shape))
        top = sorted(safe[np.argsort(-(V[safe] @ u0))[:k]])
        i_top = [i for i, E in enumerate(all_sets) if sorted(E) == top][0]
        assert float(p_clk[i_top]) >= float(p_clk.max()) - 1e-7
        assert float(p_h[i_top]) <= float(p_h.min()) + 1e-7


def test_step_with_zero_attraction_keeps_the_profile_exactly():
    u0 = jnp.asarray([1.3, -0.7, 2.1], jnp.float32)
    p = jnp.asarray([0.2, 0.5, 0.3], jnp.float32)
    V = jnp.asarray(np.random.default_rng(0).normal(size=(3, 3)), jnp.float32)
    a = jnp.zeros(3)
    assert bool((D.step_mean(u0, u0, p, V, a, jnp.float32(0.2)) == u0).all())
    assert bool((D.step_pick(u0, u0, V[1], jnp.float32(0.0), jnp.float32(0.2)) == u0).all())


def test_log_premium_rule_matches_the_direct_formula():
    rng = np.random.default_rng(1)
    U, V = rng.normal(size=(5, 3)), rng.normal(size=(9, 3))
    safe = np.ones(9, bool)
    safe[-2:] = False
    c = D.premium_rule(U, V, safe, k=2, n_sets=16, seed=3)
    # the direct rule with the same sets
    r = np.random.default_rng(3)
    sets = np.stack([r.choice(np.nonzero(safe)[0], 2, replace=False) for _ in range(16)])
    s = np.exp(U @ V.T)
    direct = 0.5 * min(s[i].sum() - s[i][sets].sum(1).max() for i in range(5))
    assert abs(c - direct) < 1e-9 * direct


def test_dynamics_metrics_match_numpy():
    from purerec.sim.metrics import dynamics_metrics

    rng = np.random.default_rng(5)
    T, B, lam = 6, 5, 10.0
    done = np.zeros((T, B), bool)
    done[2, 0] = done[5, 1] = done[0, 2] = done[3, 3] = done[4, 3] = True  # slot 4 never ends
    p_clk, p_h = rng.random((T, B)), rng.random((T, B)) * 0.1
    harm = rng.random((T, B)) < 0.3
    drift = rng.random((T, B))
    dyn = D.StepInfo(p_clk=jnp.asarray(p_clk), p_h=jnp.asarray(p_h), clicked=jnp.zeros((T, B), bool),
                     harm_pick=jnp.asarray(harm), drift=jnp.asarray(drift))
    got = {k: float(v) for k, v in dynamics_metrics(dyn, jnp.asarray(done), lam).items()}
    ends = {0: 2, 1: 5, 2: 0, 3: 3}  # first exit per finished slot
    steps = [(t, b) for b, e in ends.items() for t in range(e + 1)]
    assert abs(got["CTR"] - np.mean([p_clk[t, b] for t, b in steps])) < 1e-6
    assert abs(got["harm"] - np.mean([p_h[t, b] for t, b in steps])) < 1e-6
    assert abs(got["harm_picks"] - np.mean([harm[:e + 1, b].sum() for b, e in ends.items()])) < 1e-6
    J = np.mean([(p_clk[:e + 1, b] - lam * p_h[:e + 1, b]).sum() for b, e in ends.items()])
    assert abs(got["J"] - J) < 1e-5
    assert abs(got["drift"] - np.mean([drift[e, b] for b, e in ends.items()])) < 1e-6


def test_click_target_premium_puts_the_median_users_top_k_click_at_the_target():
    """``log_click_premium``: with that c, the median over users of p_CLK of each user's top-k safe
    slate (on the initial profile) is the target (checked by brute force in NumPy)."""
    from purerec.sim.dynamics import log_click_premium

    rng = np.random.default_rng(3)
    U, V = rng.normal(size=(41, 4)), rng.normal(size=(30, 4))
    safe = np.ones(30, bool)
    safe[[2, 5, 7]] = False
    k, target = 3, 0.6
    c = np.exp(log_click_premium(U, V, safe, k, target, chunk=7))  # several chunks
    p = []
    for u in U:
        s = np.sort(np.where(safe, V @ u, -np.inf))[-k:]
        e = np.exp(s).sum()
        p.append(e / (e + c))
    assert abs(np.median(p) - target) < 1e-9
    with pytest.raises(ValueError, match="safe items"):
        log_click_premium(U, V, np.zeros(30, bool), k, target)
