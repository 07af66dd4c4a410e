"""Batched rollouts and evaluation: ``n_sessions`` sessions in parallel, one ``lax.scan``.

``evaluate`` runs exactly ``max_len`` steps from a fresh reset, so every slot completes its first
session; metrics count only that session (``purerec.metrics.first_session_mask``), which does
not over-weight short sessions as averaging over auto-reset episodes would.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import jax

from purerec import env as E
from purerec import metrics as M


@partial(jax.jit, static_argnames=("policy", "n_sessions", "n_steps"))
def rollout(key: jax.Array, policy: Callable, params: E.EnvParams, n_sessions: int, n_steps: int,
            policy_params=None):
    """Time-major trajectory dict of ``n_steps`` batched steps (auto-reset inside).

    ``policy(key, obs, state, params[, policy_params])`` acts for one session; ``policy_params``
    (network weights, say) is passed through as a traced argument.
    """
    act = policy if policy_params is None else (lambda k, o, s, p: policy(k, o, s, p, policy_params))
    k_reset, k_run = jax.random.split(key)
    obs, state = E.batch_reset(k_reset, params, n_sessions)

    def body(carry, k):
        obs, state = carry
        k_act, k_env = jax.random.split(k)
        slates = jax.vmap(act, in_axes=(0, 0, 0, None))(
            jax.random.split(k_act, n_sessions), obs, state, params)
        obs, state, reward, term, trunc, info = E.batch_step(k_env, state, slates, params)
        out = {"reward": reward, "true_reward": info["true_reward"], "done": term | trunc,
               "terminated": term, "slates": slates, "n_popular": info["n_popular"]}
        return (obs, state), out

    _, traj = jax.lax.scan(body, (obs, state), jax.random.split(k_run, n_steps))
    return traj


def evaluate(key: jax.Array, policy: Callable, params: E.EnvParams, n_sessions: int,
             ad_form: str = "exposure", policy_params=None) -> dict[str, float]:
    """The metrics table row for ``policy`` over ``n_sessions`` complete sessions."""
    traj = rollout(key, policy, params, n_sessions, params.max_len, policy_params)
    out = _metrics(traj, params.world.popular, ad_form)
    return {k: float(v) for k, v in out.items()}


@partial(jax.jit, static_argnames=("ad_form",))
def _metrics(traj, popular, ad_form):
    return M.all_metrics(traj["reward"], traj["true_reward"], traj["done"], traj["slates"],
                         traj["n_popular"], popular, ad_form)
