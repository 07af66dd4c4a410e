"""Optimisers with traced learning rates, and Polyak target updates, shared by every learner.

The learning rate is applied outside optax (``step``) so that it can be a traced
hyperparameter: runs that differ only in it share one compiled program (``purerec.config.traced``).
A learning rate of 0 freezes the network (the broken-learner control of the learning tests).
"""

from __future__ import annotations

from typing import Any

import jax
import optax
from flax import struct


def adam(max_grad_norm: float) -> optax.GradientTransformation:
    """Clipped Adam direction (the learning rate is applied in ``step``)."""
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.scale_by_adam())


@struct.dataclass
class Learner:
    """A network's parameters and its optimiser state."""

    params: Any
    opt: Any


def learner(params: Any, tx: optax.GradientTransformation) -> Learner:
    return Learner(params=params, opt=tx.init(params))


def step(lr: jax.Array, grads: Any, state: Learner, tx: optax.GradientTransformation) -> Learner:
    """One optimiser step with a (traced) learning rate: params <- params - lr * direction."""
    upd, opt = tx.update(grads, state.opt, state.params)
    return Learner(params=jax.tree.map(lambda p, u: p - lr * u, state.params, upd), opt=opt)


def polyak(target: Any, online: Any, tau: jax.Array) -> Any:
    """target <- (1 - tau) target + tau online (soft target update)."""
    return jax.tree.map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)
