"""PPO pieces shared by both levels: GAE and the clipped surrogate loss (Schulman et al. 2017)."""

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


def clipped_loss(logp: jax.Array, old_logp: jax.Array, adv: jax.Array, value: jax.Array,
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
