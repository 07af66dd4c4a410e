"""Reference policies (balanced, balanced_oracle) and the test protocol (distinct users, repeats,
action rules), against NumPy computations on the small synthetic world."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purerec.config import EvalConfig
from purerec.run import evaluation
from purerec.sim import env as E
from purerec.sim.policies import (REFERENCE_POLICIES, balanced_oracle_policy, balanced_policy, balanced_split,
                              most_popular_policy, random_policy)
from purerec.sim.slate import grouped_top_k

N_KEYS = 1024


def _np_truth(world, user: int) -> np.ndarray:
    """r*(user, i) for every item, in float64 NumPy."""
    logits = np.asarray(world.true_item, np.float64) @ np.asarray(world.true_user[user], np.float64)
    return 1.0 / (1.0 + np.exp(-logits))


@pytest.mark.parametrize("k", [10, 7, 1])
def test_balanced_split_is_ceil_half_popular(k):
    n_pop, n_tail = balanced_split(k)
    assert n_pop == math.ceil(k / 2) and n_pop + n_tail == k


@pytest.fixture(scope="module", params=[10, 7])
def balanced_slates(request, small_params):
    params = small_params.replace(slate_size=request.param)
    keys = jax.random.split(jax.random.PRNGKey(42), N_KEYS)
    slates = jax.jit(jax.vmap(lambda k: balanced_policy(k, None, None, params)))(keys)
    return params, np.asarray(slates)


def test_balanced_slates_are_the_most_popular_plus_distinct_long_tail(balanced_slates):
    params, slates = balanced_slates
    k = params.slate_size
    n_pop = math.ceil(k / 2)
    pop = np.asarray(params.world.item_pop, np.float64)
    popular = np.asarray(params.world.popular)
    order = np.argsort(-pop, kind="stable")
    assert pop[order[n_pop - 1]] > pop[order[n_pop]], "the top ceil(K/2) must be well defined on this world"
    top = set(order[:n_pop].tolist())
    assert popular[list(top)].all()
    assert slates.shape == (N_KEYS, k)
    for s in slates:
        assert len(set(s.tolist())) == k  # distinct items
        assert popular[s].sum() == n_pop
        assert set(s[popular[s]].tolist()) == top  # exactly the ceil(K/2) most popular items
        tail = s[~popular[s]]
        assert len(set(tail.tolist())) == k - n_pop


def test_balanced_long_tail_part_is_uniform_and_key_dependent(balanced_slates):
    params, slates = balanced_slates
    popular = np.asarray(params.world.popular)
    tails = [tuple(sorted(s[~popular[s]].tolist())) for s in slates]
    assert len(set(tails)) > 0.9 * len(tails)  # the long-tail part changes with the key
    assert len(set(tails[:16])) == 16
    tail_items = np.flatnonzero(~popular)
    counts = np.bincount(np.concatenate([np.asarray(t) for t in tails]), minlength=popular.shape[0])
    assert counts[popular].sum() == 0
    # Uniform over the long tail: every tail item drawn, no item far above its expected count.
    expected = N_KEYS * len(tails[0]) / len(tail_items)
    assert (counts[tail_items] > 0).all()
    assert counts[tail_items].max() < 3 * expected
    chi2 = np.sum((counts[tail_items] - expected) ** 2 / expected)
    assert chi2 < 2 * len(tail_items), chi2  # df = n_tail - 1: a loose bound that a biased draw fails


def test_balanced_oracle_takes_the_top_of_each_group_by_truth(small_params):
    params = small_params
    world = params.world
    k = params.slate_size
    n_pop, n_tail = balanced_split(k)
    popular = np.asarray(world.popular)
    pop_idx, tail_idx = np.flatnonzero(popular), np.flatnonzero(~popular)
    users = jnp.arange(world.n_users)
    _, states = jax.vmap(E.reset_user, in_axes=(0, None))(users, params)
    slates = np.asarray(jax.jit(jax.vmap(lambda s: balanced_oracle_policy(None, None, s, params)))(states))
    checked = 0
    for u in range(world.n_users):
        r = _np_truth(world, u)
        rp, rt = np.sort(r[pop_idx])[::-1], np.sort(r[tail_idx])[::-1]
        if rp[n_pop - 1] - rp[n_pop] < 1e-5 or rt[n_tail - 1] - rt[n_tail] < 1e-5:
            continue  # a near-tie at a group's boundary: float32 may break it either way
        want_pop = pop_idx[np.argsort(-r[pop_idx], kind="stable")[:n_pop]]
        want_tail = tail_idx[np.argsort(-r[tail_idx], kind="stable")[:n_tail]]
        s = slates[u]
        assert set(s[popular[s]].tolist()) == set(want_pop.tolist()), u
        assert set(s[~popular[s]].tolist()) == set(want_tail.tolist()), u
        # ... popular part first, each part best first (where float32 can tell the order).
        if min(np.min(-np.diff(rp[:n_pop])), np.min(-np.diff(rt[:n_tail]))) > 1e-5:
            np.testing.assert_array_equal(s[:n_pop], want_pop)
            np.testing.assert_array_equal(s[n_pop:], want_tail)
        checked += 1
    assert checked > 0.9 * world.n_users
    # Different users, different slates (it reads the hidden user).
    assert len({tuple(s) for s in slates.tolist()}) > world.n_users // 2


def test_grouped_top_k_against_numpy():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=40).astype(np.float32)
    popular = rng.random(40) < 0.4
    for n_tail in range(0, 7):
        got = np.asarray(grouped_top_k(jnp.asarray(scores), jnp.asarray(popular), jnp.int32(n_tail), 6))
        pidx, tidx = np.flatnonzero(popular), np.flatnonzero(~popular)
        want = np.concatenate([pidx[np.argsort(-scores[pidx])[:6 - n_tail]], tidx[np.argsort(-scores[tidx])[:n_tail]]])
        np.testing.assert_array_equal(got, want)


def test_balanced_policies_are_never_unbalanced_in_the_env(small_params):
    ev = EvalConfig(n_sessions=64, repeats=1, seed=5)
    for name in ("balanced", "balanced_oracle"):
        row = evaluation.test_protocol(REFERENCE_POLICIES[name], small_params, ev)
        assert row["AD"] == 0.0 and row["AD_exposure"] == 0.0, name
        assert row["long_tail_share"] == pytest.approx(0.5), name


# --------------------------------------------------------------------------------------------
# The test protocol
# --------------------------------------------------------------------------------------------


def test_n_test_sessions_is_capped_at_the_users(small_params):
    n_users = small_params.world.n_users
    assert n_users == 120
    assert evaluation.n_test_sessions(EvalConfig(n_sessions=4096), small_params) == n_users
    assert evaluation.n_test_sessions(EvalConfig(n_sessions=50), small_params) == 50
    assert evaluation.n_test_sessions(EvalConfig(n_sessions=n_users), small_params) == n_users


def _capture_users(monkeypatch):
    """Record the ``users`` the test protocol hands to each repeat's rollout."""
    captured = []
    real = evaluation.rollout

    def spy(key, policy, params, n, n_steps, policy_params=None, users=None, carry=None):
        jax.debug.callback(lambda u: captured.append(np.asarray(u).copy()), users)
        return real(key, policy, params, n, n_steps, policy_params, users, carry)

    monkeypatch.setattr(evaluation, "rollout", spy)
    return captured


@pytest.mark.parametrize("n_sessions", [4096, 50])
def test_protocol_sessions_have_distinct_users(small_params, monkeypatch, n_sessions):
    captured = _capture_users(monkeypatch)

    def fresh_random(key, obs, state, params):  # a new function: traced afresh under the spy
        return random_policy(key, obs, state, params)

    ev = EvalConfig(n_sessions=n_sessions, repeats=2, seed=31)
    row = evaluation.test_protocol(fresh_random, small_params, ev)
    jax.effects_barrier()
    n = min(n_sessions, small_params.world.n_users)
    assert len(captured) == 2
    for users in captured:
        assert users.shape == (n,)
        assert len(np.unique(users)) == n  # distinct
        assert users.min() >= 0 and users.max() < small_params.world.n_users
    if n == small_params.world.n_users:
        np.testing.assert_array_equal(np.sort(captured[0]), np.arange(n))
        assert not np.array_equal(captured[0], captured[1])  # another order per repeat
    else:
        assert set(captured[0].tolist()) != set(captured[1].tolist())  # each repeat its own users
    assert 1.0 <= row["Len"] <= small_params.max_len


EV50 = EvalConfig(n_sessions=50, repeats=3, seed=7)  # shared: one compiled protocol for several tests


def test_protocol_repeats_follow_their_seeds(small_params):
    """Repeat r uses PRNGKey(seed + r): its users and run are one ``evaluate`` call with those users."""
    ev = EV50
    per_rep = jax.device_get(evaluation.test_metrics(random_policy, small_params, ev))
    for r in range(ev.repeats):
        k_users, k_run = jax.random.split(jax.random.PRNGKey(ev.seed + r))
        users = jax.random.permutation(k_users, small_params.world.n_users)[:50]
        row = evaluation.evaluate(k_run, random_policy, small_params, 50, users=users)
        for name in ("Len", "R_cum", "AD", "Gini"):
            assert float(per_rep[name][r]) == pytest.approx(row[name], rel=1e-6, abs=1e-7), (r, name)
    row = evaluation.test_protocol(random_policy, small_params, ev)
    for name in ("Len", "R_cum", "AD"):
        assert row[name] == pytest.approx(float(np.mean(per_rep[name])), rel=1e-6)
        assert row[f"{name}_repeat_std"] == pytest.approx(float(np.std(per_rep[name])), rel=1e-5, abs=1e-9)
    assert row["Len_repeat_std"] > 0 and row["R_cum_repeat_std"] > 0  # repeats differ


def test_protocol_is_deterministic_and_seed_dependent(small_params):
    ev = EV50
    a = evaluation.test_protocol(random_policy, small_params, ev)
    b = evaluation.test_protocol(random_policy, small_params, ev)
    c = evaluation.test_protocol(random_policy, small_params, dataclasses.replace(ev, seed=ev.seed + 100))
    assert a == b
    assert a["Len"] != c["Len"] and a["R_cum"] != c["R_cum"]


def test_eval_action_leaves_a_deterministic_policy_unchanged(small_params):
    """most_popular ignores eval.action: both rules give identical metrics (same users, same noise)."""
    ev = EvalConfig(n_sessions=50, repeats=2, seed=3, action="greedy")
    greedy = evaluation.test_protocol(most_popular_policy, small_params, ev)
    sample = evaluation.test_protocol(most_popular_policy, small_params, dataclasses.replace(ev, action="sample"))
    assert greedy == sample
    assert greedy["AD"] == 1.0  # and it is the most-popular row (sanity)
