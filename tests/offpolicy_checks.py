"""Shared checks of the off-policy agents' replay buffers (imported by their test files)."""

from __future__ import annotations

import jax
import numpy as np

from purerec.state.purifier import make_observer


def check_next_inputs(cfg, frozen, params, S, next_key: str, x_key: str = "x") -> int:
    """The replay buffer of state ``S`` holds each update's rollout time-major (row t B + b, B =
    ``train.num_envs``) one update after another, so in insertion order row i's next input is row
    i + B's input (within an update and across the boundary to the next one), and the newest B
    rows' next input is the input of the observation the last rollout ended on (``S.obs``).
    Returns the number of rows checked."""
    B = cfg.train.num_envs
    st = jax.device_get(S.buffer)
    x, x2 = np.asarray(st.experience[x_key])[0], np.asarray(st.experience[next_key])[0]
    n = int(st.current_index)
    order = np.roll(np.arange(x.shape[0]), -n) if bool(st.is_full) else np.arange(n)  # oldest first
    x, x2 = x[order], x2[order]
    assert len(x) >= 2 * B
    np.testing.assert_allclose(x2[:-B], x[B:], rtol=1e-5, atol=1e-6)
    # No agent that keeps a replay buffer purifies its state: the input depends on the observation only.
    final = make_observer(cfg).inputs(frozen, jax.random.key(0), S.obs, params)[1]
    np.testing.assert_allclose(x2[-B:], np.asarray(final), rtol=1e-5, atol=1e-6)
    assert not np.allclose(x2, x)  # (the inputs do change from one step to the next)
    return len(x)
