"""HSRL: Semantic IDs (residual balanced k-means) and the coarse-to-fine policy, against values
computed by hand or in plain NumPy (issue "HSRL", done-when list)."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purerec.agents import hsrl
from purerec.data import semantic_ids as sid


# ---- Semantic IDs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("n, v", [(10, 3), (97, 8), (64, 64), (5, 8), (1000, 7)])
def test_balanced_clusters_hold_floor_or_ceil(n, v):
    x = np.random.default_rng(n).normal(size=(n, 4))
    book = sid.fit(x, levels=2, codes=v, iters=5, seed=1)
    codes = sid.assign_fit(x, book)
    for lvl in range(2):
        sizes = np.bincount(codes[:, lvl], minlength=v)
        assert set(sizes.tolist()) <= {n // v, -(-n // v)}, sizes
        assert sizes.sum() == n


def test_balanced_assignment_is_plain_nearest_when_that_is_balanced():
    """Two tight groups of 3 points around two centres: the balanced assignment is the nearest one."""
    x = np.array([[0, 0], [0.1, 0], [0, 0.1], [5, 5], [5.1, 5], [5, 5.1]], float)
    c = np.array([[5.0, 5.0], [0.0, 0.0]])
    d = ((x[:, None] - c[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(sid.balanced_assign(d), [1, 1, 1, 0, 0, 0])


def test_a_full_cluster_keeps_its_nearest_proposers():
    """Three points nearest to centre 0, capacity 2 each: centre 0 keeps its two nearest, the third
    goes to its next nearest centre."""
    d = np.array([[0.0, 10.0], [0.1, 9.0], [0.2, 1.0], [5.0, 0.0]])  # items 0-2 prefer 0; item 3 prefers 1
    np.testing.assert_array_equal(sid.balanced_assign(d), [0, 0, 1, 1])


def test_same_seed_same_ids_and_encoding_matches_numpy():
    x = np.random.default_rng(0).normal(size=(300, 6)).astype(np.float32)
    a = sid.fit(x, 3, 8, iters=4, seed=5)
    b = sid.fit(x, 3, 8, iters=4, seed=5)
    np.testing.assert_array_equal(a.centres, b.centres)
    np.testing.assert_array_equal(sid.encode(x, a), sid.encode(x, b))
    np.testing.assert_array_equal(np.asarray(sid.encode_jax(jnp.asarray(x), jnp.asarray(a.centres))), sid.encode(x, a))
    c = sid.fit(x, 3, 8, iters=4, seed=6)
    assert not np.array_equal(sid.encode(x, a), sid.encode(x, c))  # the seed matters


def test_encode_is_the_nearest_centre_on_the_residuals():
    """By hand: level 1 centres {(0,0), (10,0)}, level 2 centres {(0,1), (0,-1)}."""
    book = sid.Codebook(np.array([[[0, 0], [10, 0]], [[0, 1], [0, -1]]], np.float32))
    x = np.array([[9.0, 0.8], [0.5, -2.0]])
    np.testing.assert_array_equal(sid.encode(x, book), [[1, 0], [0, 1]])


def test_reconstruction_error_falls_with_the_levels():
    x = np.random.default_rng(1).normal(size=(500, 8))
    book = sid.fit(x, 3, 8, iters=5, seed=0)
    err = sid.stats(x, book, sid.assign_fit(x, book))["recon_error"]
    assert err[0] > err[1] > err[2] > 0 and err[0] < 1.0


def test_collision_digit_names_each_item():
    codes = np.array([[0, 1], [2, 3], [0, 1], [0, 1], [2, 3], [1, 1]])
    np.testing.assert_array_equal(sid.collision_digit(codes), [0, 0, 1, 2, 1, 0])
    full = sid.with_collision_digit(codes, v=4)
    assert len({tuple(r) for r in full}) == len(codes)
    st = sid.stats(np.zeros((6, 2)), sid.Codebook(np.zeros((2, 4, 2), np.float32)), codes)
    assert st["collision_rate"] == pytest.approx(5 / 6) and st["max_sharing"] == 3
    # the JAX version the agent uses on any world gives the same digits
    x = np.random.default_rng(2).normal(size=(200, 3)).astype(np.float32)
    book = sid.fit(x, 2, 3, iters=3, seed=0)  # 9 codes for 200 items: many collisions
    got = np.asarray(hsrl.world_codes(jnp.asarray(x), jnp.asarray(book.centres), True))
    np.testing.assert_array_equal(got, sid.with_collision_digit(sid.encode(x, book), 3))


# ---- the policy ------------------------------------------------------------------------------------
def _toy():
    """4 items, 2 levels of 2 codes: item i has code (i // 2, i % 2); level log-probs by hand."""
    codes = jnp.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    p1, p2 = np.array([0.7, 0.3]), np.array([0.2, 0.8])
    level_logp = jnp.log(jnp.array([p1, p2], jnp.float32))[None]  # [1, L, V]
    return codes, p1, p2, level_logp


def test_item_probabilities_are_the_renormalised_product_of_the_levels():
    codes, p1, p2, level_logp = _toy()
    logits = hsrl.item_logits(level_logp, codes)[0]
    probs = np.asarray(jax.nn.softmax(logits))
    want = np.array([p1[a] * p2[b] for a, b in itertools.product(range(2), range(2))])
    np.testing.assert_allclose(probs, want / want.sum(), rtol=1e-6)
    assert probs.sum() == pytest.approx(1.0, abs=1e-6)
    # a catalogue holding only 3 of the 4 codes: renormalised over those
    probs3 = np.asarray(jax.nn.softmax(hsrl.item_logits(level_logp, codes[:3])[0]))
    np.testing.assert_allclose(probs3, want[:3] / want[:3].sum(), rtol=1e-6)


def test_greedy_is_the_top_k_of_the_summed_level_log_probabilities():
    from purerec.agents import heads

    codes, p1, p2, level_logp = _toy()
    scores = np.log([p1[a] * p2[b] for a, b in itertools.product(range(2), range(2))])
    slate = heads.compose(heads.Head("topk", False), hsrl.item_logits(level_logp, codes), jnp.zeros(4, bool), 2,
                          jnp.float32(0.0))
    np.testing.assert_array_equal(np.asarray(slate)[0], np.argsort(-scores)[:2])  # items 1 (0.56) and 3 (0.24)


def test_policy_contexts_follow_the_soft_residual():
    """c_l = LayerNorm(c_{l-1} - p_l E_l), checked against NumPy with the module's own weights."""
    pol = hsrl.SIDPolicy(width=4, levels=2, codes=3, hidden=8)
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 6))
    p = pol.init(jax.random.PRNGKey(1), x)
    ctx, logp = pol.apply(p, x)
    assert ctx.shape == (5, 3, 4) and logp.shape == (5, 2, 3)
    w = jax.tree.map(np.asarray, p["params"])
    c = np.asarray(ctx[:, 0])
    for lvl in range(2):
        logits = c @ w[f"head_{lvl}"]["kernel"] + w[f"head_{lvl}"]["bias"]
        pr = np.exp(logits - logits.max(1, keepdims=True))
        pr /= pr.sum(1, keepdims=True)
        np.testing.assert_allclose(np.exp(np.asarray(logp[:, lvl])), pr, rtol=1e-5, atol=1e-6)
        r = c - pr @ w[f"tokens_{lvl}"]
        r = (r - r.mean(1, keepdims=True)) / np.sqrt(r.var(1, keepdims=True) + 1e-6)
        c = r * w[f"norm_{lvl}"]["scale"] + w[f"norm_{lvl}"]["bias"]
        np.testing.assert_allclose(np.asarray(ctx[:, lvl + 1]), c, rtol=1e-4, atol=1e-5)


def test_critic_is_the_mean_of_the_per_level_values():
    from purerec.agents.nets import MLP

    critic = MLP(8, 1)
    ctx = jax.random.normal(jax.random.PRNGKey(3), (2, 4, 5))  # 2 states, L + 1 = 4 contexts
    p = critic.init(jax.random.PRNGKey(4), ctx)
    by_hand = np.mean([[float(critic.apply(p, ctx[b, lv])[0]) for lv in range(4)] for b in range(2)], axis=1)
    np.testing.assert_allclose(np.asarray(hsrl.critic_value(critic, p, ctx)), by_hand, rtol=1e-5)


def test_level_entropy_by_hand():
    _, p1, p2, level_logp = _toy()
    want = -(p1 * np.log(p1)).sum() - (p2 * np.log(p2)).sum()
    assert float(hsrl.level_entropy(level_logp)[0]) == pytest.approx(want, rel=1e-6)


# ---- the agent on worlds ---------------------------------------------------------------------------
def _tiny(kind="hsrl", **over):
    from purerec.config import apply_overrides
    from conftest import small_config

    return apply_overrides(small_config(), {
        "agent.kind": kind, "train.num_envs": 16, "train.rollout_len": 5, "train.total_updates": 2,
        "train.chunk_updates": 2, "train.stage1_sessions": 32, "encoder.train_steps": 20, "hsrl.codes": 8,
        "replay.min_size": 64, "replay.batch_size": 32, "replay.grad_steps": 2, **over}).validate()


@pytest.mark.slow  # a trained policy on a changed world (~25 s, CI time)
def test_new_items_at_test_time_need_no_retraining(small_worlds):
    """10% of the test world's items replaced by unseen embeddings: the trained policy acts on it
    (the new items get codes from the train codebooks) and can recommend them."""
    from purerec.run.loop import init_key, make_train, stage1_key
    from purerec.sim.env import make_params
    from purerec.sim.rollout import rollout

    cfg = _tiny()
    train, test = small_worlds
    fns = make_train(cfg, make_params(train, cfg))
    frozen, _ = fns.stage1(stage1_key(jax.random.PRNGKey(0)))
    s = fns.init(init_key(jax.random.PRNGKey(0)), frozen)
    s, _ = jax.jit(fns.update)(frozen, s)
    pp = fns.agent.policy_params(frozen, s)
    n = test.n_items
    new = np.random.default_rng(9).choice(n, n // 10, replace=False)
    emb = np.asarray(test.item_emb).copy()
    emb[new] = np.random.default_rng(10).normal(size=(len(new), emb.shape[1])) * emb.std(0)
    world = test.replace(item_emb=jnp.asarray(emb, jnp.float32))
    params = make_params(world, cfg)
    traj = rollout(jax.random.PRNGKey(1), fns.agent.act.sample, params, 64, 5, pp, None, fns.agent.init_carry(64))
    assert np.isfinite(np.asarray(traj["reward"])).all()
    codes = np.asarray(hsrl.world_codes(world.item_emb, jnp.asarray(hsrl.codebook(cfg, np.asarray(train.item_emb)).centres),
                                        True))
    assert codes.shape == (n, cfg.hsrl.levels + 1) and codes.min() >= 0 and codes.max() < cfg.hsrl.codes
    shown = np.asarray(traj["slates"]).reshape(-1)
    assert np.isin(shown, new).any()  # sampled slates reach the unseen items


@pytest.mark.slow  # learning margins (CI time): HSRL's updates run in the fast tier's contract and head tests
@pytest.mark.parametrize("update, frozen", [("faithful", True), ("ppo", False), ("ppo", True)])
def test_learning_finds_the_probe_worlds_best_items_and_a_frozen_learner_does_not(update, frozen):
    """The contract's probe world (4 liked items of 40): trained HSRL (the faithful update in the
    contract test, ppo here) reaches the best slate's reward; with its learning rates 0 it stays
    near random (its initial codes-only softmax knows nothing of the user)."""
    from purerec.config import apply_overrides
    from purerec.run import evaluation
    from purerec.run.loop import make_train
    from purerec.sim.env import make_params
    from test_contract import N_USERS, probe_config, probe_world

    over = {"hsrl.update": update}
    if frozen:
        over.update({"hsrl.actor_lr": 0.0, "hsrl.critic_lr": 0.0})
    cfg = apply_overrides(probe_config("hsrl"), over).validate()
    params = make_params(probe_world(), cfg)
    fns = make_train(cfg, params)
    fz, state, _, _ = jax.jit(fns.train)(jax.random.PRNGKey(0))
    row = evaluation.test_protocol(fns.agent.act.greedy, params, cfg.eval, fns.agent.policy_params(fz, state),
                                   fns.agent.init_carry(N_USERS))
    best = 1 / (1 + np.exp(-3.0))
    if frozen:
        assert row["R_each"] < 0.3 * best, row["R_each"]
    else:
        assert row["R_each"] > 0.8 * best, row["R_each"]
