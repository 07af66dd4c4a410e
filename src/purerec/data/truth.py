"""Fit the hidden "true response" of a real-data world from observed ratings.

Model: r(u, i) ~ sigmoid(<P_u, Q_i> + b_u + b_i + c), ratings r in [0, 1] given as COO entries
(user index, item index, r). Loss: mean over the entries of the binary cross-entropy with soft
targets (softplus(x) - r x, minimised at sigmoid(x) = r) plus ``l2`` (|P_u|^2 + |Q_i|^2) per
entry (so frequent users and items are regularised in proportion to their data). Optimiser:
full-batch Adam (optax) for a fixed number of steps; the gradient is accumulated over chunks of
entries (``lax.scan``) so memory stays bounded for millions of entries. Initialisation: P, Q ~
N(0, init_std^2) from the given key, biases 0, c = logit(mean r). Deterministic for a given key.
Shapes are padded to powers of two (users, items, chunk size) so that fits of similar sizes share
one compilation; padded rows get no gradient and are dropped.

The factors are returned folded the way ``purerec.sim.world.World`` stores them:
true_user = [P_u, b_u + c, 1] and true_item = [Q_i, 1, b_i], both f32[., dim + 2], so that
sigmoid(true_user[u] @ true_item[i]) is the fitted response.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

STEPS = 300
LR = 0.05
L2 = 1e-3
INIT_STD = 0.1
CHUNK = 1 << 20


def _pow2(n: int) -> int:
    return 1 << (int(n) - 1).bit_length()


def _chunk_loss(params, u, i, r, w, l2):
    p, q = params["P"][u], params["Q"][i]
    x = jnp.sum(p * q, -1) + params["bu"][u] + params["bi"][i] + params["c"]
    loss = jax.nn.softplus(x) - r * x + l2 * (jnp.sum(p * p, -1) + jnp.sum(q * q, -1))
    return jnp.sum(w * loss)


@partial(jax.jit, static_argnames=("steps",))
def _fit(params, u, i, r, w, lr, l2, steps: int):
    """Adam on the full-batch loss; entries arrive as [n_chunks, chunk] arrays (w = 1 real, 0 pad)."""
    n = jnp.maximum(w.sum(), 1.0)
    grad_chunk = jax.grad(_chunk_loss)

    def full_grad(prm):
        def body(acc, batch):
            g = grad_chunk(prm, *batch, l2)
            return jax.tree.map(jnp.add, acc, g), None

        g, _ = jax.lax.scan(body, jax.tree.map(jnp.zeros_like, prm), (u, i, r, w))
        return jax.tree.map(lambda a: a / n, g)

    opt = optax.adam(lr)

    def step(_, carry):
        prm, state = carry
        updates, state = opt.update(full_grad(prm), state, prm)
        return optax.apply_updates(prm, updates), state

    params, _ = jax.lax.fori_loop(0, steps, step, (params, opt.init(params)))
    return params


def fit_truth(key: jax.Array, users: np.ndarray, items: np.ndarray, ratings: np.ndarray, n_users: int,
              n_items: int, dim: int, steps: int = STEPS, lr: float = LR, l2: float = L2,
              init_std: float = INIT_STD, chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Fit the model on COO ratings; return folded (true_user f32[U, dim+2], true_item f32[I, dim+2]).

    ``users`` / ``items`` are contiguous indices in [0, n_users) / [0, n_items); ``ratings`` in [0, 1].
    """
    users = np.asarray(users, np.int32)
    items = np.asarray(items, np.int32)
    ratings = np.asarray(ratings, np.float32)
    if not (users.shape == items.shape == ratings.shape) or users.ndim != 1:
        raise ValueError("users, items and ratings must be 1-D arrays of the same length")
    n = users.shape[0]
    if n == 0:
        raise ValueError("cannot fit the true response on zero ratings")
    if users.min() < 0 or users.max() >= n_users or items.min() < 0 or items.max() >= n_items:
        raise ValueError("user / item indices must lie in [0, n_users) / [0, n_items)")
    chunk = int(min(chunk, _pow2(max(n, 256))))
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n
    u_pad, i_pad = _pow2(max(n_users, 8)), _pow2(max(n_items, 8))

    def shaped(a, fill):
        return jnp.asarray(np.concatenate([a, np.full(pad, fill, a.dtype)]).reshape(n_chunks, chunk))

    w = np.ones(n, np.float32)
    mean = float(np.clip(ratings.mean(), 1e-3, 1 - 1e-3))
    kp, kq = jax.random.split(key)
    params = {
        "P": init_std * jax.random.normal(kp, (u_pad, dim), jnp.float32),
        "Q": init_std * jax.random.normal(kq, (i_pad, dim), jnp.float32),
        "bu": jnp.zeros((u_pad,), jnp.float32),
        "bi": jnp.zeros((i_pad,), jnp.float32),
        "c": jnp.float32(np.log(mean / (1 - mean))),
    }
    params = _fit(params, shaped(users, 0), shaped(items, 0), shaped(ratings, 0.0), shaped(w, 0.0),
                  jnp.float32(lr), jnp.float32(l2), steps=int(steps))
    p, q = np.asarray(params["P"])[:n_users], np.asarray(params["Q"])[:n_items]
    bu, bi = np.asarray(params["bu"])[:n_users], np.asarray(params["bi"])[:n_items]
    c = float(params["c"])
    true_user = np.concatenate([p, (bu + c)[:, None], np.ones((n_users, 1), np.float32)], 1)
    true_item = np.concatenate([q, np.ones((n_items, 1), np.float32), bi[:, None]], 1)
    return true_user.astype(np.float32), true_item.astype(np.float32)


def pair_response(true_user: np.ndarray, true_item: np.ndarray, users: np.ndarray, items: np.ndarray,
                  chunk: int = CHUNK) -> np.ndarray:
    """sigmoid(true_user[u] . true_item[i]) for each (u, i) pair, f64[N], computed in chunks."""
    out = np.empty(len(users), np.float64)
    for s in range(0, len(users), chunk):
        u, i = users[s:s + chunk], items[s:s + chunk]
        x = np.einsum("nd,nd->n", true_user[u].astype(np.float64), true_item[i].astype(np.float64))
        out[s:s + chunk] = 1.0 / (1.0 + np.exp(-x))
    return out
