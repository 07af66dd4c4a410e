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


def _unit(x: jax.Array) -> jax.Array:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


class Worker(nn.Module):
    """pi_l(a | s^, z) as coefficients x f32[..., d+1] in the item basis (``item_basis``):
    logits = basis @ x = exp(log_scale) (w_acc cos(W s^, e_i) - w_fair lpop_i)  (eq. 6).

    The logits are linear in x, which lets the PPO loss take its gradient with respect to x
    alone (``slate.linear_log_prob_entropy``) instead of back through all N logits.
    """

    emb_dim: int
    init_logit_scale: float

    @nn.compact
    def __call__(self, s, z):
        q = _unit(nn.Dense(self.emb_dim)(s))
        log_scale = self.param("log_scale", nn.initializers.constant(jnp.log(self.init_logit_scale)), ())
        return jnp.exp(log_scale) * jnp.concatenate([z[..., :1] * q, -z[..., 1:]], axis=-1)


class FlatActor(nn.Module):
    """FLAT's policy in the same basis: logits = exp(log_scale) (cos(W s^, e_i) - c lpop_i), c learned."""

    emb_dim: int
    init_logit_scale: float

    @nn.compact
    def __call__(self, s):
        q = _unit(nn.Dense(self.emb_dim)(s))
        log_scale = self.param("log_scale", nn.initializers.constant(jnp.log(self.init_logit_scale)), ())
        c = self.param("pop_weight", nn.initializers.zeros, ())
        return jnp.exp(log_scale) * jnp.concatenate([q, jnp.broadcast_to(-c, q.shape[:-1] + (1,))], axis=-1)


def item_basis(item_emb: jax.Array, item_pop: jax.Array) -> jax.Array:
    """f32[N, d+1]: unit item embeddings and log-popularity scaled to [0, 1], once per world."""
    lp = jnp.log1p(item_pop)
    return jnp.concatenate([_unit(item_emb), (lp / jnp.maximum(jnp.max(lp), 1e-8))[:, None]], axis=1)
