"""The replay buffer of the off-policy agents: a flashbax item buffer (a FIFO ring of
transitions stored as a pytree, uniform sampling), which lives in the agent's state and so runs
inside the compiled, seed-mapped training loop. Config: ``purerec.config.ReplayConfig``."""

from __future__ import annotations

import flashbax as fbx

from purerec.agents.sections import ReplayConfig


def make_buffer(cfg: ReplayConfig):
    """A flashbax item buffer: ``init(example)``, ``add(state, batch)`` (leading batch axis),
    ``sample(state, key).experience`` (``batch_size`` transitions), ``can_sample(state)``."""
    return fbx.make_item_buffer(max_length=cfg.capacity, min_length=cfg.min_size,
                                sample_batch_size=cfg.batch_size, add_batches=True)
