"""DSRM: the conditional diffusion state purifier (paper Sec. 3, eqs. 3 and 7).

The denoiser eps_theta(s_k, k, s~) is an MLP on [s_k, s~, sinusoidal(k)]. Training minimises
E_{s_0, k, eps} || eps - eps_theta(sqrt(abar_k) s_0 + sqrt(1 - abar_k) eps, k, s~) ||^2 (eq. 7) with
s_0 = s~ (target ``paper``) or s_0 = the state the encoder builds from the same history with the
true, uncontaminated feedback (target ``unbiased``). Purification runs the reverse chain (eq. 3)
in one ``lax.scan``, from pure noise (``reverse_start = noise``) or from s~ noised to step
``start_step`` (``observed``, DiffRec's choice).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from purerec.state import diffusion
from purerec.state.sections import DSRMConfig


def sinusoidal_embedding(k: jax.Array, dim: int) -> jax.Array:
    """Transformer-style embedding of the (integer) diffusion step."""
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half) / half)
    ang = k[..., None].astype(jnp.float32) * freqs
    return jnp.concatenate([jnp.sin(ang), jnp.cos(ang)], axis=-1)


class Denoiser(nn.Module):
    state_dim: int
    hidden: int
    t_emb_dim: int

    @nn.compact
    def __call__(self, s_k: jax.Array, k: jax.Array, cond: jax.Array) -> jax.Array:
        h = jnp.concatenate([s_k, cond, sinusoidal_embedding(k, self.t_emb_dim)], axis=-1)
        h = nn.silu(nn.Dense(self.hidden)(h))
        h = nn.silu(nn.Dense(self.hidden)(h))
        return nn.Dense(self.state_dim)(h)


def make_denoiser(cfg: DSRMConfig, state_dim: int) -> Denoiser:
    return Denoiser(state_dim=state_dim, hidden=cfg.hidden, t_emb_dim=cfg.t_emb_dim)


def loss_fn(params, model: Denoiser, sched: diffusion.Schedule, key: jax.Array, s0: jax.Array,
            cond: jax.Array) -> jax.Array:
    """Eq. 7: mean squared error of the predicted noise, k ~ U{1..K}."""
    k_key, e_key = jax.random.split(key)
    k = jax.random.randint(k_key, s0.shape[:-1], 1, sched.steps + 1)
    eps = jax.random.normal(e_key, s0.shape, s0.dtype)
    s_k = diffusion.q_sample(sched, s0, k, eps)
    pred = model.apply(params, s_k, k, cond)
    return jnp.mean(jnp.sum((eps - pred) ** 2, axis=-1))


def purify(params, model: Denoiser, sched: diffusion.Schedule, cfg: DSRMConfig, key: jax.Array,
           s_obs: jax.Array) -> jax.Array:
    """The purified state s^ from the observed state s~ (eq. 3 applied ``k_start`` times)."""
    k_start = cfg.start_step or sched.steps
    n_key, r_key = jax.random.split(key)
    eps = jax.random.normal(n_key, s_obs.shape, s_obs.dtype)
    if cfg.reverse_start == "noise":
        s_start = eps
    else:
        s_start = diffusion.q_sample(sched, s_obs, jnp.full(s_obs.shape[:-1], k_start), eps)
    eps_fn = lambda s, k: model.apply(params, s, k, s_obs)
    return diffusion.reverse(r_key, sched, eps_fn, s_start, k_start)
