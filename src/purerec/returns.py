"""Returns and advantages shared by every learner (time-major f32[T, B] arrays).

``gae``: generalised advantage estimation (Schulman et al. 2016), the returns of every
on-policy agent (HRL, FLAT, A2C).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gae(rewards: jax.Array, values: jax.Array, dones: jax.Array, last_value: jax.Array, gamma: float,
        lam: float) -> tuple[jax.Array, jax.Array]:
    """Advantages and value targets for time-major f32[T, B] arrays; ``dones[t]`` ends step t."""

    def body(carry, x):
        adv_next, v_next = carry
        r, v, d = x
        nonterm = 1.0 - d
        delta = r + gamma * v_next * nonterm - v
        adv = delta + gamma * lam * nonterm * adv_next
        return (adv, v), adv

    _, adv = jax.lax.scan(body, (jnp.zeros_like(last_value), last_value),
                          (rewards, values, dones.astype(jnp.float32)), reverse=True)
    return adv, adv + values
