"""Observation -> state, shared by every agent: the Stage-I encoder, then the purifier.

``state.purifier`` (``purerec.config.resolve_agent``): ``none`` gives the encoder's state s~,
``dsrm`` the diffusion purifier's s^ (paper eq. 3 reversed from the observed state); ``tce``,
``rce``, ``bod`` filter the observation window with a Stage-I denoiser (``purerec.state.denoise``: items
dropped or their feedback scaled) and re-encode it. ``inputs``
adds what the platform knows of the session beyond the state (``agent.context``): the step
t / max_len and the popular share of the items in the observation window; agents' critics (and
HRL's manager) read x = [s, context].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from purerec.state.sections import DENOISERS, resolve_agent

from purerec.core.fields import Sections
from purerec.sim import env as E
from purerec.state import denoise, diffusion, dsrm
from purerec.state.encoder import StateEncoder


@struct.dataclass
class Frozen:
    """Stage-I products, frozen in Stage II (the feedback head only seeds HRL's actor query).
    ``dsrm`` and ``denoise`` hold initial parameters unless the run's purifier trains them."""

    encoder: Any
    dsrm: Any
    feedback_head: Any
    denoise: denoise.DenoiseParams


@dataclass(frozen=True, eq=False)
class Observer:
    cfg: Sections
    encoder: StateEncoder
    denoiser: dsrm.Denoiser
    sched: diffusion.Schedule
    purifier: str
    context: bool

    @property
    def state_dim(self) -> int:
        return self.cfg.encoder.state_dim

    @property
    def input_dim(self) -> int:
        return self.state_dim + (2 if self.context else 0)

    def observed(self, frozen: Frozen, obs: E.Obs, item_emb: jax.Array) -> jax.Array:
        """s~: the encoder's state of a (batch of) observation(s)."""
        return self.encoder.apply(frozen.encoder, item_emb[obs.items], obs.feedback, obs.valid)

    def state(self, frozen: Frozen, key: jax.Array, obs: E.Obs, params: E.EnvParams) -> jax.Array:
        """The agent's state: s~, purified by DSRM when ``purifier = dsrm``, or s~ of the window
        filtered by the denoiser when ``purifier`` is one of tce, rce, bod."""
        s = self.observed(frozen, obs, params.world.item_emb)
        if self.purifier == "none":
            return s
        if self.purifier in DENOISERS:
            kept = denoise.filter_obs(self.purifier, frozen.denoise, self.cfg.denoise, s, obs, params.world.item_emb)
            return self.observed(frozen, kept, params.world.item_emb)
        return dsrm.purify(frozen.dsrm, self.denoiser, self.sched, self.cfg.dsrm, key, s)

    def inputs(self, frozen: Frozen, key: jax.Array, obs: E.Obs, params: E.EnvParams):
        """(s, x): the state and x = [s, t / max_len, popular share of the window] (or s)."""
        s = self.state(frozen, key, obs, params)
        if not self.context:
            return s, s
        pop = params.world.popular[obs.items] & obs.valid
        share = jnp.sum(pop, -1) / jnp.maximum(jnp.sum(obs.valid, -1), 1)
        ctx = jnp.stack([obs.t / params.max_len, share], axis=-1).astype(s.dtype)
        return s, jnp.concatenate([s, ctx], axis=-1)


def make_observer(cfg: Sections) -> Observer:
    d = cfg.encoder.state_dim
    return Observer(
        cfg=cfg, encoder=StateEncoder(d, cfg.encoder.hidden), denoiser=dsrm.make_denoiser(cfg.dsrm, d),
        sched=diffusion.make_schedule(cfg.dsrm.steps, cfg.dsrm.schedule, cfg.dsrm.beta_start, cfg.dsrm.beta_end),
        purifier=resolve_agent(cfg)[1], context=cfg.agent.context)
