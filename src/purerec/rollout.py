"""Batched rollouts: ``n_sessions`` sessions in parallel, one ``lax.scan``.

A policy acts for one session (``rollout`` vmaps it). Two forms:
* stateless, ``act(key, obs, env_state, params[, policy_params]) -> i32[K]`` (reference policies);
* with a carry (``carry`` given): ``act(key, obs, env_state, params, policy_params, carry) ->
  (i32[K], carry)``, e.g. an HRL manager's goal held between its decisions.
``users`` (optional, i32[n_sessions]) fixes each slot's first user (the test protocol's distinct
users); later sessions of a slot (auto-reset) draw users at random.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp

from purerec import env as E


@partial(jax.jit, static_argnames=("policy", "n_sessions", "n_steps"))
def rollout(key: jax.Array, policy: Callable, params: E.EnvParams, n_sessions: int, n_steps: int,
            policy_params=None, users=None, carry=None):
    """Time-major trajectory dict of ``n_steps`` batched steps (auto-reset inside)."""
    if carry is None:
        act1 = policy if policy_params is None else (lambda k, o, s, p: policy(k, o, s, p, policy_params))
        act = lambda k, o, s, p, c: (act1(k, o, s, p), c)
    else:
        act = lambda k, o, s, p, c: policy(k, o, s, p, policy_params, c)
    k_reset, k_run = jax.random.split(key)
    if users is None:
        obs, state = E.batch_reset(k_reset, params, n_sessions)
    else:
        obs, state = jax.vmap(E.reset_user, in_axes=(0, None))(users, params)
    c0 = jnp.zeros((n_sessions,)) if carry is None else carry

    def body(loop, k):
        obs, state, c = loop
        k_act, k_env = jax.random.split(k)
        slates, c = jax.vmap(act, in_axes=(0, 0, 0, None, 0))(
            jax.random.split(k_act, n_sessions), obs, state, params, c)
        obs, state, reward, term, trunc, info = E.batch_step(k_env, state, slates, params)
        out = {"reward": reward, "true_reward": info["true_reward"], "done": term | trunc,
               "terminated": term, "slates": slates, "n_popular": info["n_popular"]}
        return (obs, state, c), out

    _, traj = jax.lax.scan(body, (obs, state, c0), jax.random.split(k_run, n_steps))
    return traj
