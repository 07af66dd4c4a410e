"""The agents' networks: HRL manager and worker (paper Sec. 3.3, eq. 6) and the FLAT policy.

* Manager pi_h(z | x): a diagonal Gaussian over two logits u, z = [w_acc, w_fair] = sigmoid(u)
  (bounded by construction). The mean starts at 0 (z = [0.5, 0.5]); the spread is a learned,
  state-independent log-std that starts at ``agent.manager_std``. PPO uses the density of u.
* Worker pi_l(a | s^, z): the mean coefficients x(s^, z) of the item scorer in the item basis
  (``item_basis``), Psi(i) = basis_i . x = w_acc <q, e_i> - w_fair kappa lpop_i  (eq. 6), with
  q = W s^ + b a learned query (``agent.score = "cos"`` uses the unit query and unit item
  embeddings: eq. 6's cosine, times a learned scale), lpop_i = log(1 + pop_i) / log(1 + max pop)
  and kappa > 0 a learned scale of the popularity term. In ``agent.action = "hyper"`` mode (the
  authors' KuaiSim lineage: a *hyper-action*) the worker explores with Gaussian noise on x
  (learned log-std, starting at ``agent.action_std``) and the slate is a deterministic top-K
  of the scores (``purerec.agents.heads.compose``); in ``plackett_luce`` mode the slate is sampled
  from the Plackett-Luce law over logits = scores.
* FLAT (ablation): one policy whose action is [x, v]: the same scorer without a goal, plus a
  logit v whose sigmoid is the long-tail share of the slate (what the manager's z sets in HRL).
Critics are separate MLPs.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

LOG_STD_MIN, LOG_STD_MAX = -7.0, 1.0


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


def _log_std(module: nn.Module, init_std: float, dim: int) -> jax.Array:
    raw = module.param("log_std", nn.initializers.constant(math.log(init_std)), (dim,))
    return jnp.clip(raw, LOG_STD_MIN, LOG_STD_MAX)


class Manager(nn.Module):
    """(mean, log_std) of the Gaussian over the goal logits u; z = sigmoid(u)."""

    hidden: int
    init_std: float

    @nn.compact
    def __call__(self, x):
        mean = MLP(self.hidden, 2)(x)
        return mean, jnp.broadcast_to(_log_std(self, self.init_std, 2), mean.shape)


def _unit(x: jax.Array) -> jax.Array:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


class _Query(nn.Module):
    """q = W s^ + b (``Dense_0``, warm-started from Stage I's feedback predictor), unit-scaled for cos."""

    emb_dim: int
    score: str
    init_logit_scale: float

    @nn.compact
    def __call__(self, s):
        q = nn.Dense(self.emb_dim, name="Dense_0")(s)
        if self.score == "cos":
            log_scale = self.param("log_scale", nn.initializers.constant(math.log(self.init_logit_scale)), ())
            q = jnp.exp(log_scale) * _unit(q)
        return q


class Worker(nn.Module):
    """(mean, log_std) of the hyper-action x in f32[..., emb_dim + 1]: [w_acc q, -w_fair kappa] (eq. 6).

    kappa starts at ``init_pop_scale`` (small: the scores start as Stage I's feedback prediction,
    as FLAT's do) and is learned."""

    emb_dim: int
    score: str
    init_logit_scale: float
    init_std: float
    init_pop_scale: float = 0.05

    @nn.compact
    def __call__(self, s, z):
        q = _Query(self.emb_dim, self.score, self.init_logit_scale, name="query")(s)
        kappa = jnp.exp(self.param("log_pop_scale", nn.initializers.constant(math.log(self.init_pop_scale)), ()))
        x = jnp.concatenate([z[..., :1] * q, -z[..., 1:] * kappa], axis=-1)
        return x, jnp.broadcast_to(_log_std(self, self.init_std, x.shape[-1]), x.shape)


class FlatActor(nn.Module):
    """(mean, log_std) of FLAT's action [q, -c, v] (emb_dim + 2): scorer coefficients and a long-tail-share logit."""

    emb_dim: int
    score: str
    init_logit_scale: float
    init_std: float

    @nn.compact
    def __call__(self, s):
        q = _Query(self.emb_dim, self.score, self.init_logit_scale, name="query")(s)
        c = self.param("pop_weight", nn.initializers.zeros, ())
        v = nn.Dense(1, kernel_init=nn.initializers.zeros, name="share")(s)
        x = jnp.concatenate([q, jnp.broadcast_to(-c, q.shape[:-1] + (1,)), v], axis=-1)
        return x, jnp.broadcast_to(_log_std(self, self.init_std, x.shape[-1]), x.shape)


def gaussian_log_prob(x: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """Log-density of a diagonal Gaussian, summed over the last axis."""
    zs = (x - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * zs**2 - log_std - 0.5 * math.log(2 * math.pi), axis=-1)


def gaussian_entropy(log_std: jax.Array) -> jax.Array:
    return jnp.sum(log_std + 0.5 * math.log(2 * math.pi * math.e), axis=-1)


def item_basis(item_emb: jax.Array, item_pop: jax.Array, score: str = "dot") -> jax.Array:
    """f32[N, d+1]: item embeddings (unit for ``cos``) and log-popularity scaled to [0, 1], once per world."""
    lp = jnp.log1p(item_pop)
    emb = _unit(item_emb) if score == "cos" else item_emb
    return jnp.concatenate([emb, (lp / jnp.maximum(jnp.max(lp), 1e-8))[:, None]], axis=1)


def item_values(out: jax.Array, feats: jax.Array) -> jax.Array:
    """Per-item values through item features, for every item: out = [phi (F), v (1)] from a state
    head, feats f32[N, F] -> v + phi . f_i, f32[..., N]. A head over item features (not item ids)
    scores the items of any world, the test world's included."""
    return out[..., -1:] + out[..., :-1] @ feats.T


def item_values_at(out: jax.Array, feats: jax.Array, items: jax.Array) -> jax.Array:
    """``item_values`` at the items i32[..., K] only: f32[..., K]."""
    return out[..., -1:] + jnp.einsum("...f,...kf->...k", out[..., :-1], feats[items])
