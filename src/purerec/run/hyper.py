"""A run's traced hyperparameters, read from its config: which fields a compiled program takes as
arrays (``hyper_of``: one program serves every grid point of a sweep group), which of them are the
learner's step sizes, and the frozen twin (every RL learning rate 0: what learning adds is trained
minus frozen). Config-level rules, so they live in the run layer; agents read ``hyper`` by path."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from purerec.agents import spec_of
from purerec.config import agent_id, apply_overrides, Config, run_sections, traced_paths


def hyper_paths(cfg: Config) -> tuple[str, ...]:
    return traced_paths(cfg, run_sections(cfg, spec_of(agent_id(cfg)).sections))


def learning_rate_paths(cfg: Config) -> tuple[str, ...]:
    """The RL learning rates of a run: the traced ``*lr`` fields (and those declared
    ``traced(..., rate=True)``) of its agent's own sections (Stage I's encoder and purifier rates are
    not among them: a frozen twin keeps Stage I)."""
    def is_rate(path: str) -> bool:
        section, name = path.split(".")
        meta = {f.name: f.metadata for f in dataclasses.fields(getattr(cfg, section))}[name]
        return name.endswith("lr") or bool(meta.get("rate"))

    return tuple(p for p in traced_paths(cfg, spec_of(agent_id(cfg)).sections) if is_rate(p))


def frozen_config(cfg: Config) -> Config:
    """The frozen twin of a run: the same config with every RL learning rate 0 (``learning_rate_paths``):
    the same Stage I, slate head and rollouts, no learning. Trained minus frozen = what learning adds."""
    return apply_overrides(cfg, {p: 0.0 for p in learning_rate_paths(cfg)})


def is_frozen(cfg: Config) -> bool:
    """Whether every RL learning rate of the run is 0 (a frozen twin)."""
    return all(getattr(getattr(cfg, p.split(".")[0]), p.split(".")[1]) == 0 for p in learning_rate_paths(cfg))


def hyper_of(cfg: Config) -> dict[str, jax.Array]:
    """The traced hyperparameters of one run, keyed by dotted config path."""
    out = {}
    for path in hyper_paths(cfg):
        section, name = path.split(".")
        out[path] = jnp.float32(getattr(getattr(cfg, section), name))
    return out
