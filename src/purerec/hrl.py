"""The agents' networks: HRL manager and worker (paper Sec. 3.3, eq. 6) and the FLAT policy.

* Manager pi_h(z | s^): z = [w_acc, w_fair] in [0, 1]^2, two independent Beta distributions
  (bounded by construction), concentration 1 + softplus(.) so both are unimodal or flat.
* Worker pi_l(a | s^, z): Psi(i) = w_acc cos(W s^, e_i) - w_fair lpop_i (eq. 6), with
  lpop_i = log(1 + pop_i) / log(1 + max pop) -- eq. 6's log-popularity scaled to [0, 1] so that
  both terms share a scale; slates are Plackett-Luce over logits = exp(log_scale) * Psi.
* FLAT (ablation): one policy, logits = exp(log_scale) (cos(W s^, e_i) - c lpop_i) with a
  learned c, trained on the same fairness-shaped reward as the manager.
Critics are separate MLPs; the worker's critic sees [s^, z].
"""

from __future__ import annotations

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
    hidden: int
    out: int

    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Dense(self.hidden)(x))
        x = nn.tanh(nn.Dense(self.hidden)(x))
        return nn.Dense(self.out, kernel_init=nn.initializers.orthogonal(0.01))(x)


class Critic(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Dense(self.hidden)(x))
        x = nn.tanh(nn.Dense(self.hidden)(x))
        return nn.Dense(1)(x)[..., 0]


class Manager(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, s):
        raw = MLP(self.hidden, 4)(s)
        conc = 1.0 + jax.nn.softplus(raw + 0.5)
        return distrax.Beta(conc[..., :2], conc[..., 2:])


def cosine_scores(query: jax.Array, item_emb_unit: jax.Array) -> jax.Array:
    q = query / jnp.maximum(jnp.linalg.norm(query, axis=-1, keepdims=True), 1e-8)
    return q @ item_emb_unit.T


class Worker(nn.Module):
    emb_dim: int
    init_logit_scale: float

    @nn.compact
    def __call__(self, s, z, item_emb_unit, lpop):
        """Logits f32[..., N] of the Plackett-Luce slate policy (eq. 6)."""
        q = nn.Dense(self.emb_dim)(s)
        log_scale = self.param("log_scale", nn.initializers.constant(jnp.log(self.init_logit_scale)), ())
        psi = z[..., :1] * cosine_scores(q, item_emb_unit) - z[..., 1:] * lpop
        return jnp.exp(log_scale) * psi


class FlatActor(nn.Module):
    emb_dim: int
    init_logit_scale: float

    @nn.compact
    def __call__(self, s, item_emb_unit, lpop):
        q = nn.Dense(self.emb_dim)(s)
        log_scale = self.param("log_scale", nn.initializers.constant(jnp.log(self.init_logit_scale)), ())
        c = self.param("pop_weight", nn.initializers.zeros, ())
        return jnp.exp(log_scale) * (cosine_scores(q, item_emb_unit) - c * lpop)


def item_features(item_emb: jax.Array, item_pop: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Unit item embeddings and scaled log-popularity, computed once per world."""
    unit = item_emb / jnp.maximum(jnp.linalg.norm(item_emb, axis=-1, keepdims=True), 1e-8)
    lp = jnp.log1p(item_pop)
    return unit, lp / jnp.maximum(jnp.max(lp), 1e-8)
