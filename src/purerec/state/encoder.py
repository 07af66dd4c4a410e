"""State encoder: the observed state s~ from the last W shown items and their feedback.

Architecture (a masked DeepSets pool, chosen over a Transformer for CPU throughput: the window
is short and its order matters little beyond recency, which a learned position embedding
carries): token_j = MLP([e_j, f_j, f_j * e_j] + pos_j), s~ = LayerNorm(Dense(mean_j token_j,
share of the window filled)). The LayerNorm (no learned scale) keeps states at unit scale, as the
diffusion purifier assumes.

Training (Stage I, ``purerec.state.stage1``): next-feedback prediction -- from s~_t predict the
observed feedback of every item of the next slate, sigmoid(<P s~_t, e_i> + b) -- on sessions of a
behaviour policy, the self-supervised objective a platform can run on its logs. The encoder is
then frozen, so the purifier and the agents see a stationary state distribution.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from purerec.sim.env import Obs


class StateEncoder(nn.Module):
    state_dim: int
    hidden: int

    @nn.compact
    def __call__(self, emb: jax.Array, feedback: jax.Array, valid: jax.Array) -> jax.Array:
        """emb f32[..., W, E], feedback f32[..., W], valid bool[..., W] -> f32[..., state_dim]."""
        w = emb.shape[-2]
        f = feedback[..., None]
        x = jnp.concatenate([emb, f, f * emb], axis=-1)
        pos = self.param("pos", nn.initializers.normal(0.1), (w, self.hidden))
        h = nn.relu(nn.Dense(self.hidden)(x) + pos)
        h = nn.relu(nn.Dense(self.hidden)(h))
        m = valid[..., None].astype(h.dtype)
        n = jnp.sum(m, axis=-2)
        pooled = jnp.sum(h * m, axis=-2) / jnp.maximum(n, 1.0)
        s = nn.Dense(self.state_dim)(jnp.concatenate([pooled, n / w], axis=-1))
        return nn.LayerNorm(use_scale=False, use_bias=False)(s)


class FeedbackHead(nn.Module):
    """Predicts observed feedback of items from the state (Stage-I training signal only)."""

    emb_dim: int

    @nn.compact
    def __call__(self, state: jax.Array, emb: jax.Array) -> jax.Array:
        q = nn.Dense(self.emb_dim)(state)
        b = self.param("bias", nn.initializers.zeros, ())
        return jax.nn.sigmoid(jnp.einsum("...e,...ke->...k", q, emb) + b)


def encode(module: StateEncoder, params, obs: Obs, item_emb: jax.Array) -> jax.Array:
    return module.apply(params, item_emb[obs.items], obs.feedback, obs.valid)
