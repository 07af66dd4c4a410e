"""Returns and advantages shared by every learner (time-major f32[T, B] arrays).

``gae``: generalised advantage estimation (Schulman et al. 2016), the returns of every
on-policy agent (HRL, FLAT, A2C): rlax's truncated GAE per session (vmapped over the batch) with
discount gamma * (1 - done_t), so nothing is bootstrapped past a session's end.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import rlax


def gae(rewards: jax.Array, values: jax.Array, dones: jax.Array, last_value: jax.Array, gamma: float,
        lam: float) -> tuple[jax.Array, jax.Array]:
    """Advantages and value targets for time-major f32[T, B] arrays; ``dones[t]`` ends step t;
    ``last_value`` f32[B] is V of the state after the last step."""
    discounts = gamma * (1.0 - dones.astype(rewards.dtype))
    v_all = jnp.concatenate([values, last_value[None]], axis=0)
    per_session = jax.vmap(rlax.truncated_generalized_advantage_estimation, in_axes=(1, 1, None, 1), out_axes=1)
    adv = per_session(rewards, discounts, lam, v_all)
    return adv, adv + values
