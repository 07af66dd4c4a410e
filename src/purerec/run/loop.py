"""The training program of any registered agent, built by ``make_train(cfg, params)``.

Stage I (``purerec.state.stage1``: encoder and, with ``state.purifier = dsrm``, the purifier) then the
agent's ``init`` and ``update`` scanned (``purerec.agents.base``). ``chunk`` scans
``train.chunk_updates`` updates (the host loop checkpoints between chunks); ``train(key, hyper)``
is the whole run in one program (what sweeps compile), with the same episode cap as a
``train.py`` run (``train.target_episodes``): the first chunk that would take the run past the
cap is dropped (its state discarded) and every later chunk is skipped (``lax.cond``: no compute
on CPU), so every agent of a sweep trains on the same number of episodes, not of updates.
``logs["kept"]`` says, per update, whether it counts. There is no agent code here: the agent
comes from the registry. Seeds are mapped or vmapped by the caller
(``purerec.run.experiment.seed_batcher``).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from purerec import agents
from purerec.agents.base import Agent
from purerec.config import agent_id, component_sections, Config, view
from purerec.core.errors import ConfigError
from purerec.run.hyper import hyper_of
from purerec.sim import env as E
from purerec.state.stage1 import make_stage1


class TrainFns(NamedTuple):
    agent: Agent
    stage1: Callable  # key -> (Frozen, Stage-I loss curves)
    init: Callable  # (key, frozen[, hyper]) -> agent state
    update: Callable  # (frozen, state) -> (state, logs)
    chunk: Callable  # (state, frozen) -> (state, logs over train.chunk_updates updates)
    train: Callable  # (key[, hyper]) -> (frozen, state, logs, curves)
    untrained: Callable  # (key[, hyper]) -> train's outputs without the updates (logs zero, "kept" 0)
    state_specs: Callable | None  # (lead=1) -> partition specs of the state (session shards)


def stage1_key(seed_key: jax.Array) -> jax.Array:
    return jax.random.fold_in(seed_key, 1)


def init_key(seed_key: jax.Array) -> jax.Array:
    return jax.random.fold_in(seed_key, 2)


def make_train(cfg: Config, params: E.EnvParams, axis_name: str | None = None) -> TrainFns:
    """Pure pieces for the train world. With ``axis_name``, ``init``, ``update`` and ``chunk`` are
    one device's share of a run whose sessions are split in ``train.session_shards`` along that
    mapped axis (``stage1`` and ``train`` stay whole-run pieces for ``axis_name = None``)."""
    spec = agents.spec_of(agent_id(cfg))
    # The agent and Stage I see only the sections they read (``purerec.config.view``), not the Config.
    agent = spec.make(view(cfg, component_sections(cfg, spec.sections)), params, axis_name)
    if axis_name is not None and agent.state_specs is None:
        raise ConfigError("train.session_shards", cfg.train.session_shards,
                          f"1: agent {spec.kind} does not split its sessions over devices")
    stage1 = make_stage1(view(cfg, component_sections(cfg)), params)
    default_hyper = hyper_of(cfg)

    def init(key: jax.Array, frozen, hyper: dict | None = None):
        return agent.init(key, frozen, default_hyper if hyper is None else hyper)

    def chunk(state, frozen):
        return jax.lax.scan(lambda s, _: agent.update(frozen, s), state, None, length=cfg.train.chunk_updates)

    def train(key: jax.Array, hyper: dict | None = None):
        frozen, curves = stage1(stage1_key(key))
        state = init(init_key(key), frozen, hyper)
        target = cfg.train.target_episodes
        if not target:
            state, logs = jax.lax.scan(lambda s, _: agent.update(frozen, s), state, None,
                                       length=cfg.train.total_updates)
            return frozen, state, {**logs, "kept": jnp.ones((cfg.train.total_updates,))}, curves
        state, logs = capped_chunks(state, frozen, target)
        return frozen, state, logs, curves

    def untrained(key: jax.Array, hyper: dict | None = None):
        """``train``'s outputs for a run whose RL learning rates are all 0: Stage I and the initial
        state, no update (at rate 0 an update moves no policy parameter, so the policy is the one
        ``train`` would end with: tested); the logs are zeros with ``kept`` 0."""
        frozen, curves = stage1(stage1_key(key))
        state = init(init_key(key), frozen, hyper)
        logs = jax.eval_shape(lambda k, h: train(k, h)[2], key, hyper)
        return frozen, state, jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), logs), curves

    def capped_chunks(state, frozen, target: int):
        """Chunks of updates until the next chunk would pass ``target`` episodes (that chunk and
        every later one are dropped, as ``purerec.run.experiment`` drops them; the first always counts)."""
        n_chunks = cfg.train.total_updates // cfg.train.chunk_updates
        skipped = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(chunk, state, frozen)[1])

        def one(carry, i):
            s, episodes, stopped = carry
            new, logs = jax.lax.cond(stopped, lambda s_: (s_, skipped), lambda s_: chunk(s_, frozen), s)
            ch = jnp.sum(logs["episodes"])
            stop = stopped | ((i > 0) & (episodes + ch > target))
            s = jax.tree.map(lambda a, b: jnp.where(stop, a, b), s, new)
            kept = jnp.broadcast_to(jnp.where(stop, 0.0, 1.0), (cfg.train.chunk_updates,))
            return (s, episodes + jnp.where(stop, 0.0, ch), stop), {**logs, "kept": kept}

        init_carry = (state, jnp.float32(0.0), jnp.bool_(False))
        (state, _, _), logs = jax.lax.scan(one, init_carry, jnp.arange(n_chunks))
        return state, jax.tree.map(lambda x: x.reshape((n_chunks * cfg.train.chunk_updates,) + x.shape[2:]), logs)

    return TrainFns(agent=agent, stage1=stage1, init=init, update=agent.update, chunk=chunk, train=train,
                    untrained=untrained, state_specs=agent.state_specs)
