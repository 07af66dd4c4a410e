"""Popularity-contaminated feedback: what the user reports versus what they prefer.

The observed feedback for item i is the true response r*(u, i) pulled towards full
satisfaction by a conformity (herding) effect whose weight grows linearly with the item's
logged exposure, plus Gaussian noise, clipped to [0, 1]:

    w_i  = conformity * pop_i / max_j pop_j
    o_ui = clip((1 - w_i) * r*(u, i) + w_i * 1 + noise_std * eps,  0, 1),   eps ~ N(0, 1).

With ``conformity = 0`` and ``noise_std = 0`` the observed feedback equals the truth. The
environment pays ``o`` as reward and keeps ``r*`` in ``info`` (the analogue of KuaiRand's
random-exposure log).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def contaminate(key: jax.Array, r_true: jax.Array, pop_norm: jax.Array, conformity: jax.Array,
                noise_std: jax.Array) -> jax.Array:
    """Observed feedback from true responses ``r_true`` and items' normalised popularity."""
    w = conformity * pop_norm
    eps = jax.random.normal(key, r_true.shape, dtype=r_true.dtype)
    return jnp.clip((1.0 - w) * r_true + w + noise_std * eps, 0.0, 1.0)
