"""Losses shared by every learner, as pure functions of arrays and hyperparameters.

Each returns (total loss, {part: value}) or a scalar, over a batch (leading axis):

* ``ppo_clip``: PPO's clipped surrogate + value + entropy (Schulman et al. 2017): HRL, FLAT.
* ``a2c``: advantage actor-critic, -logp * A + value + entropy (Mnih et al. 2016): A2C.
* ``td_target`` / ``mse``: bootstrapped targets and the squared TD error of every critic.
* ``td3_target``: r + gamma (1 - done) min(Q1', Q2') (Fujimoto et al. 2018): TD3.
* ``soft_value`` / ``discrete_sac_actor`` / ``sac_temperature``: discrete SAC (Christodoulou 2019):
  SAC4IR.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def ppo_clip(logp: jax.Array, old_logp: jax.Array, adv: jax.Array, value: jax.Array,
                 target: jax.Array, entropy: jax.Array, clip_eps: float, vf_coef: float,
                 ent_coef: float, weight: jax.Array | None = None, axis_name: str | None = None):
    """Total loss and its parts; ``weight`` masks samples (e.g. steps where the manager decided).

    With ``axis_name`` the minibatch is split over devices along that mapped axis: the sample
    count and the advantage mean and std are taken over the whole minibatch, and each device
    returns its share of the whole minibatch's loss, so the gradients summed over the axis are
    the whole minibatch's gradient (and the parts summed over the axis its loss parts).
    """
    w = jnp.ones_like(adv) if weight is None else weight.astype(adv.dtype)
    total = jnp.sum if axis_name is None else (lambda x: jax.lax.psum(jnp.sum(x), axis_name))
    n = jnp.maximum(total(w), 1.0)
    share = lambda x: jnp.sum(x * w) / n
    adv_mean = total(adv * w) / n
    adv_std = jnp.sqrt(total((adv - adv_mean) ** 2 * w) / n)
    adv_n = (adv - adv_mean) / (adv_std + 1e-8)
    ratio = jnp.exp(logp - old_logp)
    actor = -share(jnp.minimum(ratio * adv_n, jnp.clip(ratio, 1 - clip_eps, 1 + clip_eps) * adv_n))
    sq = (value - target) ** 2
    critic = 0.5 * (jnp.mean(sq) if axis_name is None else jnp.sum(sq) / total(jnp.ones_like(sq)))
    ent = share(entropy)
    total_loss = actor + vf_coef * critic - ent_coef * ent
    return total_loss, {"actor": actor, "critic": critic, "entropy": ent}


def a2c(logp: jax.Array, adv: jax.Array, value: jax.Array, target: jax.Array, entropy: jax.Array,
        vf_coef: float, ent_coef: float):
    """Advantage actor-critic: mean(-logp * stop_grad(A)) + vf_coef * 0.5 mean((V - G)^2)
    - ent_coef * mean(H). Advantages are used as given (no normalisation)."""
    actor = -jnp.mean(logp * jax.lax.stop_gradient(adv))
    critic = 0.5 * jnp.mean((value - target) ** 2)
    ent = jnp.mean(entropy)
    return actor + vf_coef * critic - ent_coef * ent, {"actor": actor, "critic": critic, "entropy": ent}


def td_target(reward: jax.Array, done: jax.Array, next_value: jax.Array, gamma: float) -> jax.Array:
    """r + gamma * (1 - done) * V(s'): no bootstrap past the session's end (gradient stopped)."""
    return jax.lax.stop_gradient(reward + gamma * (1.0 - done.astype(reward.dtype)) * next_value)


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
    """mean((pred - target)^2)."""
    return jnp.mean((pred - target) ** 2)


def td3_target(reward: jax.Array, done: jax.Array, q1_next: jax.Array, q2_next: jax.Array,
               gamma: float) -> jax.Array:
    """Clipped double-Q target r + gamma (1 - done) min(Q1'(s', a~), Q2'(s', a~))."""
    return td_target(reward, done, jnp.minimum(q1_next, q2_next), gamma)


def soft_value(probs: jax.Array, log_probs: jax.Array, q1: jax.Array, q2: jax.Array, alpha: jax.Array) -> jax.Array:
    """Discrete soft value V(s) = sum_a pi(a|s) (min(Q1, Q2)(s, a) - alpha log pi(a|s)); [B, A] -> [B]."""
    return jnp.sum(probs * (jnp.minimum(q1, q2) - alpha * log_probs), axis=-1)


def discrete_sac_actor(probs: jax.Array, log_probs: jax.Array, q1: jax.Array, q2: jax.Array, alpha: jax.Array):
    """Policy loss mean_s sum_a pi(a|s) (alpha log pi(a|s) - min Q(s, a)) (Q and alpha held fixed),
    and the policy's mean entropy."""
    q = jax.lax.stop_gradient(jnp.minimum(q1, q2))
    alpha = jax.lax.stop_gradient(alpha)
    loss = jnp.mean(jnp.sum(probs * (alpha * log_probs - q), axis=-1))
    entropy = -jnp.mean(jnp.sum(probs * log_probs, axis=-1))
    return loss, entropy


def sac_temperature(log_alpha: jax.Array, entropy: jax.Array, target_entropy: float) -> jax.Array:
    """Temperature loss log_alpha * stop_grad(H - H_target): alpha falls while the policy's entropy
    H is above the target and rises below it."""
    return log_alpha * jax.lax.stop_gradient(entropy - target_entropy)
