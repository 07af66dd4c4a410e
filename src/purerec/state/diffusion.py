"""DDPM noise schedules and the forward / reverse processes over state vectors.

Forward (q): s_k = sqrt(abar_k) s_0 + sqrt(1 - abar_k) eps.
Reverse (paper eq. 3): s_{k-1} = (s_k - (1 - a_k) / sqrt(1 - abar_k) * eps_theta(s_k, k, s~)) / sqrt(a_k)
                                  + sigma_k z,  sigma_k^2 = beta_k (1 - abar_{k-1}) / (1 - abar_k),
with no noise added at the last step. Steps are indexed k = 1..K; arrays below hold index k-1.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


@struct.dataclass
class Schedule:
    betas: jax.Array  # f32[K]
    alphas: jax.Array  # f32[K]
    alpha_bars: jax.Array  # f32[K]
    sigmas: jax.Array  # f32[K] posterior std for the reverse step

    @property
    def steps(self) -> int:
        return self.betas.shape[0]


def make_schedule(steps: int, kind: str = "linear", beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
    """Linear betas in [beta_start, beta_end], or the cosine schedule of Nichol & Dhariwal (2021)."""
    if kind == "linear":
        betas = np.linspace(beta_start, beta_end, steps, dtype=np.float64)
    elif kind == "cosine":
        s = 0.008
        t = np.linspace(0, steps, steps + 1, dtype=np.float64) / steps
        f = np.cos((t + s) / (1 + s) * np.pi / 2) ** 2
        betas = np.clip(1 - f[1:] / f[:-1], 1e-8, 0.999)
    else:
        raise ValueError(f"unknown schedule {kind!r}: use 'linear' or 'cosine'")
    alphas = 1.0 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    sigmas = np.sqrt(betas * (1 - abar_prev) / (1 - abar))
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    return Schedule(betas=f32(betas), alphas=f32(alphas), alpha_bars=f32(abar), sigmas=f32(sigmas))


def q_sample(sched: Schedule, s0: jax.Array, k: jax.Array, eps: jax.Array) -> jax.Array:
    """Noise s_0 to step k (1-based): sqrt(abar_k) s_0 + sqrt(1 - abar_k) eps."""
    abar = sched.alpha_bars[k - 1][..., None]
    return jnp.sqrt(abar) * s0 + jnp.sqrt(1.0 - abar) * eps


def reverse(key: jax.Array, sched: Schedule, eps_fn: Callable, s_start: jax.Array, k_start: int) -> jax.Array:
    """Run the reverse chain from step ``k_start`` down to 0 with one ``lax.scan`` (eq. 3).

    ``eps_fn(s_k, k)`` predicts the noise; ``k`` is an int array broadcast to the batch.
    """
    ks = jnp.arange(k_start, 0, -1)
    keys = jax.random.split(key, k_start)

    def body(s, inp):
        k, kk = inp
        i = k - 1
        eps = eps_fn(s, jnp.full(s.shape[:-1], k))
        mean = (s - (1.0 - sched.alphas[i]) / jnp.sqrt(1.0 - sched.alpha_bars[i]) * eps) / jnp.sqrt(sched.alphas[i])
        z = jax.random.normal(kk, s.shape, s.dtype)
        return mean + jnp.where(k > 1, sched.sigmas[i], 0.0) * z, None

    s, _ = jax.lax.scan(body, s_start, (ks, keys))
    return s
