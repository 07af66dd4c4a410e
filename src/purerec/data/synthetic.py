"""The built-in synthetic world, calibrated to KuaiRec / KuaiRand published statistics.

Generation, seeded and deterministic:
1. Tags. Each item gets a primary tag from p(k) ~ k^-tag_zipf * exp(-k / tag_cutoff) (fitted to
   the published tag concentration) and Poisson extra tags so the mean is
   ``mean_tags_per_item`` (KuaiRec 1.18) with at most ``max_tags_per_item``.
2. True preference. Tag centroids C ~ N(0, I/D); item factor q_i mixes its tags' centroid
   (weight ``tag_pref_weight``) with item noise; user factor p_u ~ N(0, I). The true score is
   x_ui = score_offset + pref_scale <p_u, q_i> + b_u + b_i and r* = sigmoid(x). The defaults
   give r* quartiles near the KuaiRec watch-ratio quartiles (0.311 / 0.716 / 1.162) divided by
   2, i.e. r* ~ watch_ratio / 2 capped at 1.
3. Logs. A popularity-biased logging policy runs ``log_rounds`` rounds; in each, every user is
   shown each not-yet-shown train item with probability
   sigmoid(c_r + log_pop_bias * log(1 + count_i) + log_personalisation * z_ui + g_i), where
   count_i is the item's exposure so far (rich get richer), z_ui the standardised true score,
   g_i ~ N(0, 1) an initial visibility, and c_r is set so that the expected density is
   ``log_density``. Logged feedback is contaminated (``purerec.sim.feedback``) using the final
   exposure counts.
4. Visible features: item embeddings by matrix factorisation of the logged feedback
   (``purerec.data.mf``), exposure counts, the popular flag.
The universe has max(train, test) users and items; the train and test worlds are random
subsets of it of the configured sizes (so KuaiRec's test world sits inside its train world,
and KuaiRand's worlds share users and most items).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from purerec.sim.sections import FeedbackConfig

from purerec.data.mf import item_embeddings
from purerec.data.sections import WorldConfig
from purerec.sim.feedback import contaminate
from purerec.sim.world import popular_flags, subset_world, World


def tag_distribution(n_tags: int, zipf: float, cutoff: float) -> np.ndarray:
    k = np.arange(1, n_tags + 1, dtype=np.float64)
    p = k ** (-zipf) * np.exp(-k / cutoff)
    return p / p.sum()


def sample_tags(rng: np.random.Generator, cfg: WorldConfig, n_items: int) -> np.ndarray:
    """Multi-hot tags bool[I, T]: distinct tags drawn by Gumbel-top-k from the tag prior."""
    p = tag_distribution(cfg.n_tags, cfg.tag_zipf, cfg.tag_cutoff)
    n_extra = np.minimum(rng.poisson(cfg.mean_tags_per_item - 1.0, n_items), cfg.max_tags_per_item - 1)
    keys = np.log(p)[None, :] + rng.gumbel(size=(n_items, cfg.n_tags))
    order = np.argsort(-keys, axis=1)[:, : cfg.max_tags_per_item]
    tags = np.zeros((n_items, cfg.n_tags), dtype=bool)
    for j in range(cfg.max_tags_per_item):
        rows = np.nonzero(n_extra >= j)[0]
        tags[rows, order[rows, j]] = True
    return tags


def true_factors(rng: np.random.Generator, cfg: WorldConfig, tags: np.ndarray, n_users: int):
    """Factors with biases folded in: r* = sigmoid(<true_user[u], true_item[i]>)."""
    d = cfg.true_dim
    n_items = tags.shape[0]
    centroids = rng.normal(0.0, 1.0 / np.sqrt(d), (cfg.n_tags, d))
    k = tags.sum(1, keepdims=True)
    tag_part = (tags @ centroids) / np.sqrt(k)
    noise = rng.normal(0.0, 1.0 / np.sqrt(d), (n_items, d))
    w = cfg.tag_pref_weight
    q = np.sqrt(w) * tag_part + np.sqrt(1.0 - w) * noise
    p = rng.normal(0.0, 1.0, (n_users, d))
    b_u = rng.normal(0.0, cfg.user_bias_std, n_users)
    b_i = rng.normal(0.0, cfg.item_bias_std, n_items)
    user = np.concatenate([cfg.pref_scale * p, (b_u + cfg.score_offset)[:, None], np.ones((n_users, 1))], 1)
    item = np.concatenate([q, np.ones((n_items, 1)), b_i[:, None]], 1)
    return user.astype(np.float32), item.astype(np.float32)


@partial(jax.jit, static_argnames=("rounds", "calib_users"))
def simulate_logs(key, true_user, true_item, item_in_log, density, pop_bias, personalisation,
                  conformity, noise_std, rounds: int, calib_users: int = 512):
    """Run the popularity-biased logging policy; return exposure mask, observed and true feedback."""
    n_users, n_items = true_user.shape[0], true_item.shape[0]
    score = true_user @ true_item.T
    z = (score - score.mean()) / (score.std() + 1e-6)
    k_vis, k_rounds, k_fb = jax.random.split(key, 3)
    visibility = jax.random.normal(k_vis, (n_items,))
    shown = jnp.zeros((n_users, n_items), bool)
    counts = jnp.zeros((n_items,), jnp.float32)
    n_log_items = jnp.maximum(item_in_log.sum(dtype=jnp.float32), 1.0)
    for r, k in enumerate(jax.random.split(k_rounds, rounds)):
        base = pop_bias * jnp.log1p(counts) + visibility
        logits = base[None, :] + personalisation * z
        avail = (~shown) & item_in_log[None, :]
        # Expected new exposures this round: an equal share of the remaining density budget.
        target_new = (density * n_users * n_log_items - shown.sum(dtype=jnp.float32)) / (rounds - r)
        n_avail = avail[:calib_users].sum(dtype=jnp.float32) * (n_users / min(calib_users, n_users))
        frac = target_new / jnp.maximum(n_avail, 1.0)
        sample = jnp.where(avail[:calib_users], logits[:calib_users], -jnp.inf)
        c = _calibrate_offset_masked(sample, avail[:calib_users], jnp.clip(frac, 1e-6, 1 - 1e-6))
        p = jax.nn.sigmoid(logits + c)
        new = avail & (jax.random.uniform(k, p.shape) < p)
        shown = shown | new
        counts = counts + new.sum(0)
    r_true = jax.nn.sigmoid(score)
    pop_norm = counts / jnp.maximum(counts.max(), 1.0)
    observed = contaminate(k_fb, r_true, pop_norm[None, :], conformity, noise_std)
    return shown, observed, r_true, counts


def _calibrate_offset_masked(logits, mask, target):
    """Bisection for c with mean over ``mask`` of sigmoid(logits + c) = target."""
    n = jnp.maximum(mask.sum(), 1)

    def body(_, lohi):
        lo, hi = lohi
        mid = 0.5 * (lo + hi)
        m = jnp.where(mask, jax.nn.sigmoid(logits + mid), 0.0).sum() / n
        too_high = m > target
        return jnp.where(too_high, lo, mid), jnp.where(too_high, mid, hi)

    lo, hi = jax.lax.fori_loop(0, 40, body, (jnp.float32(-40.0), jnp.float32(40.0)))
    return 0.5 * (lo + hi)


def generate(cfg: WorldConfig, fb: FeedbackConfig) -> tuple[World, World]:
    """Build the (train, test) synthetic worlds described in the module docstring."""
    rng = np.random.default_rng(cfg.seed)
    n_u = max(cfg.n_users, cfg.n_test_users)
    n_i = max(cfg.n_items, cfg.n_test_items)
    tags = sample_tags(rng, cfg, n_i)
    t_user, t_item = true_factors(rng, cfg, tags, n_u)
    train_users = np.sort(rng.choice(n_u, cfg.n_users, replace=False))
    train_items = np.sort(rng.choice(n_i, cfg.n_items, replace=False))
    if cfg.n_test_items <= cfg.n_items:
        test_items = np.sort(rng.choice(train_items, cfg.n_test_items, replace=False))
    else:
        test_items = np.sort(rng.choice(n_i, cfg.n_test_items, replace=False))
    if cfg.n_test_users <= cfg.n_users:
        test_users = np.sort(rng.choice(train_users, cfg.n_test_users, replace=False))
    else:
        test_users = np.sort(rng.choice(n_u, cfg.n_test_users, replace=False))

    item_in_log = np.zeros(n_i, bool)
    item_in_log[train_items] = True
    key = jax.random.key(cfg.seed)
    k_log, k_mf = jax.random.split(key)
    shown, observed, r_true, counts = simulate_logs(
        k_log, jnp.asarray(t_user[train_users]), jnp.asarray(t_item), jnp.asarray(item_in_log),
        cfg.log_density, cfg.log_pop_bias, cfg.log_personalisation, fb.conformity, fb.noise_std,
        rounds=cfg.log_rounds)
    emb = item_embeddings(k_mf, observed, shown, dim=cfg.emb_dim)
    denom = jnp.maximum(counts, 1.0)
    log_reward = jnp.where(shown, observed, 0.0).sum(0) / denom
    log_true = jnp.where(shown, r_true, 0.0).sum(0) / denom
    counts_np = np.asarray(counts)
    universe = World(
        true_user=jnp.asarray(t_user),
        true_item=jnp.asarray(t_item),
        item_emb=emb,
        item_tags=jnp.asarray(tags),
        item_pop=jnp.asarray(counts_np),
        popular=jnp.asarray(popular_flags(counts_np, cfg.popular_frac)),
        item_log_reward=log_reward,
        item_log_true=log_true,
        user_ids=jnp.arange(n_u, dtype=jnp.int32),
        item_ids=jnp.arange(n_i, dtype=jnp.int32),
    )
    train = subset_world(universe, train_users, train_items, cfg.popular_frac)
    test = subset_world(universe, test_users, test_items, cfg.popular_frac)
    return train, test
