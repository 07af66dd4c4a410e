"""Preferences that move: the attraction model with harmful content (Chee et al., KDD 2024).

A user holds a profile u (starting at the true preference u0). Shown a slate E, the user picks one
item by a multinomial logit with an outside option of weight c (the "premium"): with scores
s_v = exp(<u, v>),

    p_CLK  = s_E / (s_E + c)                                       (a click on the slate)
    p(v|E) = 1[v in E] s_v / (s_E + c) + c / (s_E + c) * s_v / s_Omega   (else an organic pick)
    p_H    = P(the pick is harmful) = sum_{v in H} p(v|E)

(with a safe slate, the paper's case, p_H = (1 - p_CLK) s_H / s_Omega). The pick v then attracts
the profile:  u <- beta u0 + alpha_v v + (1 - alpha_v - beta) u, alpha_v = alpha_H on harmful
items, alpha_NH otherwise (``step_pick``); the paper's code moves u by the expectation over the
pick (``step_mean``). For a fixed policy the profile converges to the stationary point

    u_bar = G(p(u_bar)),  G(p) = (beta u0 + sum_v alpha_v p_v v) / (beta + sum_v alpha_v p_v)

(``stationary_profile``; its gradient in the policy by the implicit function theorem through
``jax.lax.custom_root``). Everything is computed in log space (logsumexp), so the KuaiRec-like
world's ~10^4 items and large scores do not overflow. The increments are written as
u + alpha (v - u) + beta (u0 - u), so with alpha = 0 the profile stays exactly u0 (bit-identity).

A policy for the stationary quantities is a distribution over candidate slates: ``sets`` i32[M, k]
with weights ``w`` f32[M] (a deterministic slate is M = 1).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Choice(NamedTuple):
    """The pick distribution of one user facing one slate."""

    p_pick: jax.Array  # f32[I] p(v | E)
    p_clk: jax.Array  # f32 probability of a click on the slate
    p_h: jax.Array  # f32 probability that the pick is harmful
    p_h_organic: jax.Array  # f32 probability of an organic harmful pick (the paper's p_H)


def _masked_lse(logits: jax.Array, mask: jax.Array) -> jax.Array:
    """log sum_{mask} exp(logits); -inf for an empty mask."""
    return jax.nn.logsumexp(jnp.where(mask, logits, -jnp.inf))


def choice(logits: jax.Array, slate: jax.Array, harmful: jax.Array, premium_c: jax.Array) -> Choice:
    """The multinomial logit with an outside option: ``logits`` f32[I] = <u, v> for every item,
    ``slate`` i32[k] the shown item ids, ``harmful`` bool[I], ``premium_c`` > 0."""
    n = logits.shape[0]
    in_slate = jnp.zeros((n,), jnp.float32).at[slate].add(1.0)  # multiplicity (a repeated id counts twice)
    lse_e = jax.nn.logsumexp(logits[slate])
    lse_all = jax.nn.logsumexp(logits)
    log_c = jnp.log(premium_c)
    p_clk = jax.nn.sigmoid(lse_e - log_c)
    p_org = jax.nn.sigmoid(log_c - lse_e)
    p_pick = in_slate * jnp.exp(logits - jnp.logaddexp(lse_e, log_c)) + p_org * jnp.exp(logits - lse_all)
    p_h_org = p_org * jnp.exp(_masked_lse(logits, harmful) - lse_all)
    p_h_slate = p_clk * jnp.exp(_masked_lse(logits[slate], harmful[slate]) - lse_e)
    return Choice(p_pick=p_pick, p_clk=p_clk, p_h=p_h_slate + p_h_org, p_h_organic=p_h_org)


def mixed_choice(logits: jax.Array, sets: jax.Array, w: jax.Array, harmful: jax.Array,
                 premium_c: jax.Array) -> Choice:
    """``choice`` averaged over a distribution of slates (``sets`` i32[M, k], weights ``w``)."""
    per = jax.vmap(choice, in_axes=(None, 0, None, None))(logits, sets, harmful, premium_c)
    return jax.tree.map(lambda x: jnp.tensordot(w, x, axes=1), per)


def alphas(harmful: jax.Array, alpha_h: jax.Array, alpha_nh: jax.Array) -> jax.Array:
    """alpha_v per item: alpha_H on harmful items, alpha_NH otherwise."""
    return jnp.where(harmful, alpha_h, alpha_nh)


def step_mean(pref: jax.Array, u0: jax.Array, p_pick: jax.Array, targets: jax.Array, alpha_v: jax.Array,
              beta: jax.Array) -> jax.Array:
    """The expected attraction step (the paper's code): u + sum_v alpha_v p_v (v - u) + beta (u0 - u).
    ``targets`` f32[I, D'] are the points the profile is attracted to (the item vectors)."""
    a = alpha_v * p_pick
    return pref + (a @ targets - a.sum() * pref) + beta * (u0 - pref)


def step_pick(pref: jax.Array, u0: jax.Array, target: jax.Array, alpha: jax.Array, beta: jax.Array) -> jax.Array:
    """One picked item's attraction: u + alpha_v (v - u) + beta (u0 - u)."""
    return pref + alpha * (target - pref) + beta * (u0 - pref)


def stationary_map(pref: jax.Array, u0: jax.Array, p_pick: jax.Array, targets: jax.Array, alpha_v: jax.Array,
                   beta: jax.Array) -> jax.Array:
    """G(p) = (beta u0 + sum_v alpha_v p_v v) / (beta + sum_v alpha_v p_v): the profile that the mean
    step leaves unchanged when the pick probabilities are held at ``p_pick`` (``pref`` unused; the
    signature matches ``step_mean``). Written as u0 + sum_v a_v (v - u0) / (beta + sum_v a_v), so
    that with alpha = 0 it is u0 exactly."""
    a = alpha_v * p_pick
    return u0 + (a @ targets - a.sum() * u0) / (beta + a.sum())


def stationary_profile(u0: jax.Array, item_vecs: jax.Array, sets: jax.Array, w: jax.Array, harmful: jax.Array,
                       premium_c: jax.Array, alpha_h: jax.Array, alpha_nh: jax.Array, beta: jax.Array,
                       n_iter: int = 200) -> jax.Array:
    """u_bar with u_bar = G(p(u_bar)) for the slate distribution (``sets``, ``w``), by ``n_iter``
    fixed-point iterations from u0; differentiable in every argument by the implicit function
    theorem (``jax.lax.custom_root``: the tangent solve is a dense D x D solve)."""
    alpha_v = alphas(harmful, alpha_h, alpha_nh)

    def residual(u):
        p = mixed_choice(item_vecs @ u, sets, w, harmful, premium_c).p_pick
        return stationary_map(u, u0, p, item_vecs, alpha_v, beta) - u

    return fixed_point(residual, u0, n_iter)


def fixed_point(residual, x0: jax.Array, n_iter: int, plain=None) -> jax.Array:
    """The root of ``residual`` by ``n_iter`` iterations x <- x + residual(x) from ``x0``,
    differentiable by the implicit function theorem (``jax.lax.custom_root``; the tangent solve is
    a dense solve, for the small profile dimension). ``plain``: the same residual's values computed
    more cheaply, used for the iterations (e.g. without derivative-only terms)."""
    step = residual if plain is None else plain

    def solve(f, x):
        return jax.lax.fori_loop(0, n_iter, lambda _, u: u + step(u), x)

    def tangent_solve(g, y):
        return jnp.linalg.solve(jax.jacobian(g)(y), y)

    return jax.lax.custom_root(residual, x0, solve, tangent_solve)


def objective(u: jax.Array, item_vecs: jax.Array, sets: jax.Array, w: jax.Array, harmful: jax.Array,
              premium_c: jax.Array, harm_lambda: jax.Array):
    """(J, p_CLK, p_H) = p_CLK - lambda p_H of the slate distribution at profile ``u``."""
    ch = mixed_choice(item_vecs @ u, sets, w, harmful, premium_c)
    return ch.p_clk - harm_lambda * ch.p_h, ch.p_clk, ch.p_h


def premium_rule(user_vecs: np.ndarray, item_vecs: np.ndarray, safe: np.ndarray, k: int, n_sets: int = 64,
                 seed: int = 0) -> float:
    """The authors' rule for c: half the smallest, over users, of s_Omega - max s_E over ``n_sets``
    random safe k-sets (so a click never becomes certain and organic picks keep weight); the
    exponential of ``log_premium_rule``."""
    return float(np.exp(log_premium_rule(user_vecs, item_vecs, safe, k, n_sets, seed)))


def log_premium_rule(user_vecs: np.ndarray, item_vecs: np.ndarray, safe: np.ndarray, k: int, n_sets: int = 64,
                     seed: int = 0) -> float:
    """log of ``premium_rule``'s c, computed in log space (float64)."""
    rng = np.random.default_rng(seed)
    safe_ids = np.nonzero(np.asarray(safe))[0]
    if safe_ids.size < k:
        raise ValueError(f"the premium rule needs at least k = {k} safe items, the world has {safe_ids.size}")
    sets = np.stack([rng.choice(safe_ids, k, replace=False) for _ in range(n_sets)])
    logits = np.asarray(user_vecs, np.float64) @ np.asarray(item_vecs, np.float64).T  # [U, I]
    m = logits.max(1, keepdims=True)
    s = np.exp(logits - m)
    s_all = s.sum(1)
    s_sets = s[:, sets].sum(2).max(1)
    gap = s_all - s_sets  # > 0: the rest of the catalogue
    log_gap = np.log(np.maximum(gap, 1e-300)) + m[:, 0]
    return float(np.log(0.5) + log_gap.min())


class StepInfo(NamedTuple):
    """What one env step under the dynamics reports (``info["dynamics"]``)."""

    p_clk: jax.Array  # f32 probability of a click on the slate
    p_h: jax.Array  # f32 probability that the pick is harmful
    clicked: jax.Array  # bool the pick was on the slate
    harm_pick: jax.Array  # bool the pick was harmful
    drift: jax.Array  # f32 ||profile after the step - u0||


def world_premium(world, k: int) -> float:
    """The authors' premium rule on a world (``log_premium_rule`` over its users, its safe items)."""
    return premium_rule(np.asarray(world.true_user), np.asarray(world.true_item), ~np.asarray(world.harmful), k)


def log_click_premium(user_vecs: np.ndarray, item_vecs: np.ndarray, safe: np.ndarray, k: int, target: float,
                      chunk: int = 1024) -> float:
    """log c at which the median user's top-k safe slate on the initial profile is clicked with
    probability ``target`` (p_CLK = sigmoid(lse(slate logits) - log c), so log c = median lse -
    logit(target)): the harm paper's regime of p_CLK > 0.5, set by a rule on the world's own
    profiles, not by looking at any policy's outcome. float64, users in chunks."""
    u = np.asarray(user_vecs, np.float64)
    v = np.asarray(item_vecs, np.float64)[np.asarray(safe)]
    if v.shape[0] < k:
        raise ValueError(f"the click-target rule needs at least k = {k} safe items, the world has {v.shape[0]}")
    lse = []
    for i in range(0, u.shape[0], chunk):
        top = -np.partition(-(u[i:i + chunk] @ v.T), k - 1, axis=1)[:, :k]
        m = top.max(1, keepdims=True)
        lse.append(m[:, 0] + np.log(np.exp(top - m).sum(1)))
    return float(np.median(np.concatenate(lse)) - np.log(target / (1.0 - target)))


def premium(world, a, k: int) -> tuple[float, str]:
    """(c, the rule that set it) of a world under the ``[attraction]`` section ``a``: ``premium_c``
    when given; else the click-target rule when ``click_target`` is set; else the authors' rule."""
    if a.premium_c > 0:
        return float(a.premium_c), "given"
    if a.click_target > 0:
        log_c = log_click_premium(np.asarray(world.true_user), np.asarray(world.true_item), ~np.asarray(world.harmful),
                                  k, a.click_target)
        return float(np.exp(log_c)), f"median top-k click {a.click_target:g}"
    return world_premium(world, k), "the authors' rule"


def taste_scale(world) -> float:
    """kappa = mean ||user taste|| / mean ||item taste|| (the factors without their two bias
    coordinates): the ``taste`` block's attraction moves a taste toward kappa q_v, a point on the
    users' scale (purerec's user tastes are pref_scale p ~ ||4.8||, item tastes ||q|| ~ 1)."""
    u = np.linalg.norm(np.asarray(world.true_user)[:, :-2], axis=1).mean()
    q = np.linalg.norm(np.asarray(world.true_item)[:, :-2], axis=1).mean()
    return float(u / max(q, 1e-12))


def harm_direction(dim: int, seed: int) -> np.ndarray:
    """The unit taste direction whose far end is harmful (seeded)."""
    d = np.random.default_rng([seed, 20240825]).normal(size=dim)
    return d / np.linalg.norm(d)


def label_harm(train, test, frac: float, seed: int):
    """(train, test) with ``harmful`` set where missing: the items farthest along a random taste
    direction, the threshold being the train world's (1 - frac) quantile, applied to both worlds
    so an item shared by them has one label. Worlds that carry labels (a ``harmful`` column of the
    user's own CSV) keep them."""
    if train.harmful is not None and test.harmful is not None:
        return train, test
    d = harm_direction(train.true_item.shape[1] - 2, seed)
    proj = lambda w: np.asarray(w.true_item)[:, :-2] @ d
    thr = np.quantile(proj(train), 1.0 - frac)
    lab = lambda w: w if w.harmful is not None else w.replace(harmful=jnp.asarray(proj(w) >= thr))
    return lab(train), lab(test)


def card(cfg, train, test) -> dict:
    """The dynamics' part of the calibration card: harm labels and the premium c of each world
    (the authors' rule unless ``attraction.premium_c`` is set) and the taste scale kappa."""
    a, k = cfg.attraction, cfg.env.slate_size
    out = {}
    for name, w in (("train", train), ("test", test)):
        c, rule = premium(w, a, k)
        out[name] = {"harmful_share": float(np.asarray(w.harmful).mean()), "premium_c": float(c),
                     "premium_rule": rule, "kappa": taste_scale(w)}
    return out


def format_card(c: dict) -> str:
    rule = c["train"]["premium_rule"]
    return ("  preference dynamics: harmful items " + ", ".join(f"{n} {v['harmful_share']:.1%}" for n, v in c.items())
            + f"; premium c ({rule}, k items per slate) " + ", ".join(f"{n} {v['premium_c']:.4g}" for n, v in c.items())
            + "; taste scale kappa " + ", ".join(f"{n} {v['kappa']:.3g}" for n, v in c.items()))
