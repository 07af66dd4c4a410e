"""The validation split: a third set of users, disjoint from the train and test users, on the
test world's items, evaluated with the test protocol (``eval.split = "validation"``).

Hyperparameters, action rules and early stopping are chosen on it, never on the test world.

* Synthetic worlds: fresh users drawn from the generator's own user law (``purerec.data.synthetic``:
  preference p ~ N(0, I) scaled by ``pref_scale``, bias ~ N(0, ``user_bias_std``) plus
  ``score_offset``) with their own random stream, so the train and test worlds stay
  bit-identical and no validation user is a train or test user.
* Real data (KuaiRec, KuaiRand, CSV): there is no third population with fully observed
  preferences, so the validation users are drawn from a Gaussian fitted (mean and full
  covariance) to the train world's hidden user factors: new users that look like the platform's.

The validation world has as many users as the test world and the test world's items and visible
features (embeddings, popularity, tags): only the users differ.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from purerec.sim.world import World

# Fixed offset of the validation users' random stream from the world seed (any constant works;
# it only has to differ from the generator's own stream).
STREAM = 0x7A11D


def fresh_users(cfg, train: World, n: int) -> np.ndarray:
    """f32[n, D+2] hidden factors of n new users (see the module docstring)."""
    w = cfg.world
    rng = np.random.default_rng([w.seed, STREAM])
    if w.source == "synthetic":
        d = w.true_dim
        p = rng.normal(0.0, 1.0, (n, d))
        b_u = rng.normal(0.0, w.user_bias_std, n)
        users = np.concatenate([w.pref_scale * p, (b_u + w.score_offset)[:, None], np.ones((n, 1))], 1)
        return users.astype(np.float32)
    u = np.asarray(train.true_user, np.float64)
    mean, cov = u.mean(0), np.cov(u, rowvar=False) if u.shape[0] > 1 else np.zeros((u.shape[1],) * 2)
    return rng.multivariate_normal(mean, np.atleast_2d(cov), size=n, method="eigh").astype(np.float32)


def validation_world(cfg, train: World, test: World) -> World:
    """The test world's items with ``test.n_users`` fresh users (ids after every train/test id)."""
    users = fresh_users(cfg, train, test.n_users)
    first = int(max(int(np.max(np.asarray(train.user_ids))), int(np.max(np.asarray(test.user_ids))))) + 1
    return test.replace(true_user=jnp.asarray(users),
                        user_ids=jnp.arange(first, first + test.n_users, dtype=jnp.int32))


def eval_world(cfg, train: World, test: World) -> World:
    """The world the evaluation protocol runs on: ``eval.split`` = test or validation."""
    return validation_world(cfg, train, test) if cfg.eval.split == "validation" else test
