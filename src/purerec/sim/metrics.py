"""Evaluation metrics over batched rollouts, all pure and jit-able.

Trajectory arrays are time-major: ``reward[T, B]``, ``done[T, B]``, ``slates[T, B, K]``.
``active[T, B]`` marks the steps of each slot's first session (see ``first_session_mask``), so
every session is counted once from its first step to its exit, whatever its length.

* Len    -- mean steps per session.
* R_cum  -- mean total reward per session.
* R_each -- mean reward per step, defined as R_cum / Len (total reward over total steps).
* AD (exposure form, default; as coded by the authors' sibling project): at each step,
  p = share of all exposures (sessions x slate slots) that are popular items, AD_t = |2p - 1|;
  AD = mean of AD_t over steps.
* AD (item form; the DSRM-HRL text's f(G)): at each step f(G) = share of group G's items that
  appear on any recommendation list; AD_t = |f(popular) - f(long tail)|; mean over steps.
* Gini of item exposure over ALL items, zero-exposure items included:
  G = sum_i (2i - n - 1) x_(i) / (n sum x), x sorted ascending.
* Coverage = distinct recommended items / n_items.  Long-tail share = tail exposures / all.
* Under preference dynamics (``dynamics_metrics``; the harm paper's quantities per session): CTR =
  mean p_CLK per step, harm = mean p_H per step, harm_picks = harmful picks per session,
  J = sum_t (p_CLK - lambda p_H) per session, drift = ||profile - u0|| at the session's end.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def first_session_mask(done: jax.Array) -> jax.Array:
    """bool[T, B]: True up to and including the first ``done`` of each slot."""
    ended_before = jnp.cumsum(done.astype(jnp.int32), axis=0) - done.astype(jnp.int32)
    return ended_before == 0


def session_metrics(reward: jax.Array, done: jax.Array) -> dict[str, jax.Array]:
    """Len, R_cum, R_each over the first session of each slot (slots that never end are dropped)."""
    active = first_session_mask(done)
    finished = jnp.any(done, axis=0)
    n = jnp.maximum(finished.sum(), 1)
    lengths = jnp.sum(active, axis=0)
    returns = jnp.sum(jnp.where(active, reward, 0.0), axis=0)
    length = jnp.sum(jnp.where(finished, lengths, 0)) / n
    r_cum = jnp.sum(jnp.where(finished, returns, 0.0)) / n
    return {"Len": length, "R_cum": r_cum, "R_each": r_cum / jnp.maximum(length, 1e-9)}


def ad_exposure(n_popular: jax.Array, active: jax.Array, slate_size: int) -> jax.Array:
    """Exposure-share AD from the number of popular items in each slate ``n_popular[T, B]``."""
    pop = jnp.sum(jnp.where(active, n_popular, 0), axis=1)
    total = slate_size * jnp.sum(active, axis=1)
    p = pop / jnp.maximum(total, 1)
    ad_t = jnp.abs(2.0 * p - 1.0)
    has = total > 0
    return jnp.sum(jnp.where(has, ad_t, 0.0)) / jnp.maximum(has.sum(), 1)


def ad_item(slates: jax.Array, active: jax.Array, popular: jax.Array) -> jax.Array:
    """Per-item-share AD: |f(popular) - f(tail)| per step, averaged over steps."""
    n_items = popular.shape[0]

    def per_step(slate_t, active_t):
        hit = jnp.zeros((n_items,), bool).at[slate_t].max(jnp.broadcast_to(active_t[:, None], slate_t.shape))
        f_pop = jnp.sum(hit & popular) / jnp.maximum(popular.sum(), 1)
        f_tail = jnp.sum(hit & ~popular) / jnp.maximum((~popular).sum(), 1)
        return jnp.abs(f_pop - f_tail), jnp.any(active_t)

    ad_t, has = jax.vmap(per_step)(slates, active)
    return jnp.sum(jnp.where(has, ad_t, 0.0)) / jnp.maximum(has.sum(), 1)


def exposure_counts(slates: jax.Array, active: jax.Array, n_items: int) -> jax.Array:
    """f32[n_items]: how often each item was shown during active steps."""
    w = jnp.broadcast_to(active[..., None], slates.shape).astype(jnp.float32)
    return jnp.zeros((n_items,), jnp.float32).at[slates.reshape(-1)].add(w.reshape(-1))


def gini(exposure: jax.Array) -> jax.Array:
    x = jnp.sort(exposure.astype(jnp.float32))
    n = x.shape[0]
    i = jnp.arange(1, n + 1, dtype=jnp.float32)
    return jnp.sum((2.0 * i - n - 1.0) * x) / (n * jnp.maximum(jnp.sum(x), 1e-12))


def gini_of_counts(counts: jax.Array, max_count: int) -> jax.Array:
    """``gini(counts)`` for integer counts in [0, max_count], without sorting the N items.

    Items with count v hold the ranks C_{<v}+1 .. C_{<v}+h_v of the sorted vector (h = histogram,
    C = its cumulative sum), so the rank-weighted sum is sum_v v h_v (2 C_{<v} + h_v - n). One
    scatter-add into max_count + 1 bins replaces a sort: the training-time fairness reward counts
    exposures of one step's slates, at most one per session.
    """
    n = counts.shape[0]
    h = jnp.zeros((max_count + 1,), jnp.float32).at[counts.astype(jnp.int32)].add(1.0)
    below = jnp.cumsum(h) - h
    v = jnp.arange(max_count + 1, dtype=jnp.float32)
    total = jnp.sum(v * h)
    return jnp.sum(v * h * (2.0 * below + h - n)) / (n * jnp.maximum(total, 1e-12))


def coverage(exposure: jax.Array) -> jax.Array:
    return jnp.mean(exposure > 0)


def long_tail_share(exposure: jax.Array, popular: jax.Array) -> jax.Array:
    return jnp.sum(jnp.where(popular, 0.0, exposure)) / jnp.maximum(jnp.sum(exposure), 1e-12)


def all_metrics(reward, true_reward, done, slates, n_popular, popular, ad_form: str = "exposure"):
    """Every table metric from one time-major trajectory; ``ad_form`` picks which AD is 'AD'."""
    active = first_session_mask(done)
    out = session_metrics(reward, done)
    out["R_cum_true"] = session_metrics(true_reward, done)["R_cum"]
    ad_e = ad_exposure(n_popular, active, slates.shape[-1])
    ad_i = ad_item(slates, active, popular)
    out["AD"] = ad_e if ad_form == "exposure" else ad_i
    out["AD_exposure"] = ad_e
    out["AD_item"] = ad_i
    exp = exposure_counts(slates, active, popular.shape[0])
    out["Gini"] = gini(exp)
    out["coverage"] = coverage(exp)
    out["long_tail_share"] = long_tail_share(exp, popular)
    return out


def dynamics_metrics(dyn, done: jax.Array, harm_lambda) -> dict[str, jax.Array]:
    """CTR, harm, harm_picks, J and drift over the first session of each slot (``dyn`` holds the
    steps' ``purerec.sim.dynamics.StepInfo``, time-major [T, B])."""
    active = first_session_mask(done)
    finished = jnp.any(done, axis=0)
    n = jnp.maximum(finished.sum(), 1)
    steps = jnp.maximum(jnp.sum(jnp.where(finished[None, :], active, False)), 1)
    per_step = lambda x: jnp.sum(jnp.where(active & finished[None, :], x, 0.0)) / steps
    per_session = lambda x: jnp.sum(jnp.where(finished, jnp.sum(jnp.where(active, x, 0.0), axis=0), 0.0)) / n
    last = jnp.where(active & done, dyn.drift, 0.0).sum(0)  # the drift at the session's exit
    return {"CTR": per_step(dyn.p_clk), "harm": per_step(dyn.p_h),
            "harm_picks": per_session(dyn.harm_pick.astype(jnp.float32)),
            "J": per_session(dyn.p_clk - harm_lambda * dyn.p_h),
            "drift": jnp.sum(jnp.where(finished, last, 0.0)) / n}


def horizon_metrics(true_reward: jax.Array, done: jax.Array, returns: jax.Array, horizon: int) -> dict[str, jax.Array]:
    """Users followed over ``horizon`` sessions (``platform.persist = user``; each slot one user whose
    next session starts when the last ends, if the user comes back: ``returns`` at the ended step).
    Time-major [T, B]. A slot counts until its user does not come back or its ``horizon`` sessions
    are done. ``user_R_true``: total true reward per user over the horizon; ``user_sessions``:
    completed sessions per user; ``return_rate``: the share of sessions (before the last allowed)
    after which the user came back; ``user_Len``: steps per user."""
    before = jnp.cumsum(done, axis=0) - done  # sessions ended before this step
    left = jnp.cumsum(done & ~returns, axis=0) - (done & ~returns)  # non-returns before this step
    active = (before < horizon) & (left == 0)
    ended = active & done
    could_return = ended & (before < horizon - 1)
    n = done.shape[1]
    return {"user_R_true": jnp.sum(jnp.where(active, true_reward, 0.0)) / n,
            "user_sessions": jnp.sum(ended) / n,
            "return_rate": jnp.sum(could_return & returns) / jnp.maximum(jnp.sum(could_return), 1),
            "user_Len": jnp.sum(active & (before < horizon)) / n}
