"""Purification fidelity: does s^ carry more of the hidden true preference than s~?

A ridge-regression probe maps a state to the user's hidden true preference (``true_user`` less
its constant column). It is fitted on train-world states and scored on test-world states as the
mean cosine between predicted and true preference, once for s~ and once for s^. We also report
the mean cosine, in state space, of s~ and of s^ to s*, the state the same encoder builds from
the same history with the true feedback. States come from sessions of the behaviour policy;
only steps with a non-empty history count.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from purerec.sim import env as E
from purerec.state.stage1 import collect


def _cos(a, b):
    na = jnp.linalg.norm(a, axis=-1)
    nb = jnp.linalg.norm(b, axis=-1)
    return jnp.sum(a * b, -1) / jnp.maximum(na * nb, 1e-8)


@partial(jax.jit, static_argnums=(0, 4))
def _states(observer, frozen, key, params: E.EnvParams, n_sessions: int):
    k_data, k_s = jax.random.split(key)
    data = collect(k_data, params, n_sessions, params.max_len)
    emb = params.world.item_emb
    obs, tobs = data["obs"], data["true_obs"]
    s_obs = observer.observed(frozen, obs, emb)
    s_true = observer.observed(frozen, tobs, emb)
    s_hat = observer.state(frozen, k_s, obs, params)
    pref = params.world.true_user[data["user"]][:, :-1]
    return s_obs, s_hat, s_true, pref, jnp.any(obs.valid, axis=-1)


def _ridge(x, y, w, alpha=1e-2):
    x1 = jnp.concatenate([x, jnp.ones((x.shape[0], 1))], 1) * w[:, None]
    a = x1.T @ x1 + alpha * jnp.eye(x1.shape[1])
    return jnp.linalg.solve(a, x1.T @ (y * w[:, None]))


def _predict(x, coef):
    return jnp.concatenate([x, jnp.ones((x.shape[0], 1))], 1) @ coef


def fidelity(observer, frozen, key, train_params: E.EnvParams, test_params: E.EnvParams, n_sessions: int = 256,
             pool=None):
    """Probe cosines for s~ and s^ (test world) and state-space cosines to s*. With a thread
    ``pool`` (``concurrent.futures``) the two worlds' states (two programs: the worlds' shapes
    differ) are compiled and computed side by side."""
    k_tr, k_te = jax.random.split(key)
    args = ((observer, frozen, k_tr, train_params, n_sessions), (observer, frozen, k_te, test_params, n_sessions))
    if pool is None:
        train_states, test_states = (_states(*a) for a in args)
    else:
        train_states, test_states = (f.result() for f in [pool.submit(_states, *a) for a in args])
    so_tr, sh_tr, _, pref_tr, m_tr = train_states
    so_te, sh_te, st_te, pref_te, m_te = test_states
    w_tr = m_tr.astype(jnp.float32)
    w_te = m_te.astype(jnp.float32)
    mean = lambda v: jnp.sum(v * w_te) / jnp.maximum(w_te.sum(), 1)
    out = {}
    for name, xtr, xte in (("observed", so_tr, so_te), ("purified", sh_tr, sh_te)):
        coef = _ridge(xtr, pref_tr, w_tr)
        out[f"probe_cos_{name}"] = mean(_cos(_predict(xte, coef), pref_te))
    out["state_cos_observed"] = mean(_cos(so_te, st_te))
    out["state_cos_purified"] = mean(_cos(sh_te, st_te))
    return {k: float(v) for k, v in out.items()}
