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


def add_rollout(buffer, buf, x, x_last, **fields):
    """Add a rollout's T x B transitions: the inputs ``x`` f32[T, B, D], the next inputs ``x_next``
    (the next step's input; the last step's is ``x_last`` f32[B, D], from the rollout's final
    obs; after a done the next input is a new session's, which the agents' (1 - done) keeps out
    of the target) and ``fields`` (time-major [T, B, ...] arrays: slate, reward, done, ...)."""
    import jax
    import jax.numpy as jnp

    x_next = jnp.concatenate([x[1:], x_last[None]], axis=0)
    items = {"x": x, **fields, "x_next": x_next}
    t, b = x.shape[:2]
    return buffer.add(buf, jax.tree.map(lambda v: v.reshape((t * b,) + v.shape[2:]), items))


def learn_when_ready(buffer, buf, grad_step, carry, key, steps: int, idle_logs):
    """``steps`` gradient steps ``grad_step(buf, carry, key) -> (carry, logs)`` on the buffer, their
    logs averaged, once it can sample; before that ``carry`` unchanged and ``idle_logs(carry)``.
    Returns (carry, logs, learned as f32)."""
    import jax
    import jax.numpy as jnp

    def learn(c):
        c, logs = jax.lax.scan(lambda cr, k: grad_step(buf, cr, k), c, jax.random.split(key, steps))
        return c, jax.tree.map(jnp.mean, logs)

    learned = buffer.can_sample(buf)
    carry, logs = jax.lax.cond(learned, learn, lambda c: (c, idle_logs(c)), carry)
    return carry, logs, learned.astype(jnp.float32)
