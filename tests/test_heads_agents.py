"""Every agent on every slate head it supports: a few updates run, and the slates it then acts
with (greedy and sampled) keep the head's popular / long-tail split. The heads' pieces that the
baselines use (hyper-action slates, epsilon-greedy slates, BCQ's thresholded slates) are checked
against plain NumPy on small cases."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purerec.agents import heads
from purerec.agents.bcq import bcq_slate
from purerec.config import AGENTS, DISCRETE_SLATE_AGENTS
from purerec.run.hyper import frozen_config
from test_benchmark_protocol import _tiny

GROUPED_FIXED = heads.Head("grouped", False)
GROUPED_LEARNED = heads.Head("grouped", True)


def np_grouped(scores, popular, n_tail, k):
    """The top k - n_tail popular items then the top n_tail long-tail items, in NumPy."""
    pop = [i for i in np.argsort(-scores, kind="stable") if popular[i]][: k - n_tail]
    tail = [i for i in np.argsort(-scores, kind="stable") if not popular[i]][:n_tail]
    return np.array(pop + tail)


def test_hyper_action_slates_read_the_learned_share_from_the_extra_coordinate():
    rng = np.random.default_rng(0)
    n, d, k = 40, 4, 10
    basis = rng.normal(size=(n, d + 1)).astype(np.float32)
    popular = np.arange(n) % 3 == 0
    a = rng.normal(size=(d + 1,)).astype(np.float32)
    scores = basis @ a
    # top-K: the extra coordinate does not exist and the slate is the top K of basis @ a
    got = heads.of_hyper_action(heads.Head("topk", False), jnp.asarray(a), jnp.asarray(basis), jnp.asarray(popular),
                                k, 0.5)
    np.testing.assert_array_equal(np.sort(np.asarray(got)), np.sort(np.argsort(-scores)[:k]))
    # fixed share 0.3: 3 long-tail items
    got = heads.of_hyper_action(GROUPED_FIXED, jnp.asarray(a), jnp.asarray(basis), jnp.asarray(popular), k, 0.3)
    np.testing.assert_array_equal(np.asarray(got), np_grouped(scores, popular, 3, k))
    # learned: share = sigmoid(a[d + 1]); logit(0.7) gives 7 long-tail items
    a_l = np.concatenate([a, [np.log(0.7 / 0.3)]]).astype(np.float32)
    got = heads.of_hyper_action(GROUPED_LEARNED, jnp.asarray(a_l), jnp.asarray(basis), jnp.asarray(popular), k, 0.3)
    np.testing.assert_array_equal(np.asarray(got), np_grouped(scores, popular, 7, k))


def test_group_values_are_the_best_slates_item_sums_per_share_choice():
    rng = np.random.default_rng(3)
    n, k = 25, 5
    v = rng.normal(size=(2, n)).astype(np.float32)
    popular = rng.uniform(size=n) < 0.4
    got = np.asarray(heads.group_values(jnp.asarray(v), jnp.asarray(popular), k))
    for b in range(2):
        pop = np.sort(v[b][popular])[::-1]
        tail = np.sort(v[b][~popular])[::-1]
        want = [pop[: k - j].sum() + tail[:j].sum() for j in range(k + 1)]
        np.testing.assert_allclose(got[b], want, rtol=1e-5, atol=1e-5)
        # and the slate of choice j holds exactly j long-tail items whose values sum to want[j]
        for j in range(k + 1):
            slate = np.asarray(heads.slate_of_choice(GROUPED_LEARNED, jnp.asarray(v[b]), jnp.asarray(popular), k,
                                                     0.5, jnp.int32(j)))
            assert (~popular[slate]).sum() == j
            np.testing.assert_allclose(v[b][slate].sum(), want[j], rtol=1e-5, atol=1e-5)
            assert int(heads.tail_slots(jnp.asarray(slate), jnp.asarray(popular))) == j


def test_bcq_share_choice_takes_the_best_allowed_choice():
    from purerec.agents.bcq import share_choice

    rng = np.random.default_rng(4)
    n, k = 20, 3
    q = rng.normal(size=n).astype(np.float32)
    logits = np.full(n, 0.0, np.float32)  # every item allowed
    popular = np.arange(n) < 8
    qs = np.array([0.0, 5.0, 0.0, 0.0], np.float32)  # choice 1 has a large Q
    ls = np.array([0.0, -10.0, 0.0, 0.0], np.float32)  # but the imitation head rules it out at tau 0.3
    gv = np.asarray(heads.group_values(jnp.asarray(q), jnp.asarray(popular), k))
    j = int(share_choice(jnp.asarray(qs), jnp.asarray(ls), jnp.asarray(q), jnp.asarray(logits), jnp.asarray(popular),
                         k, jnp.float32(0.3)))
    want = max((0, 2, 3), key=lambda i: qs[i] + gv[i])
    assert j == want
    j_all = int(share_choice(jnp.asarray(qs), jnp.asarray(np.zeros(4, np.float32)), jnp.asarray(q),
                             jnp.asarray(logits), jnp.asarray(popular), k, jnp.float32(0.3)))
    assert j_all == int(np.argmax(qs + gv))


def test_grouped_epsilon_greedy_replaces_inside_each_group():
    n, k = 60, 10
    popular = np.arange(n) < 15
    scores = np.random.default_rng(1).normal(size=n).astype(np.float32)
    greedy = np_grouped(scores, popular, 4, k)
    seen_replaced = 0
    for s in range(200):
        slate = np.asarray(heads.epsilon_greedy(GROUPED_FIXED, jax.random.PRNGKey(s), jnp.asarray(scores),
                                                jnp.asarray(popular), k, 0.4, 0.5))
        assert len(set(slate.tolist())) == k
        assert (~popular[slate]).sum() == 4  # the split survives the replacements
        np.testing.assert_array_equal(popular[slate], popular[greedy])  # slot by slot
        seen_replaced += int((slate != greedy).sum())
    assert 0.4 < seen_replaced / (200 * k) < 0.6  # epsilon = 0.5 of the slots
    # epsilon 0: the greedy slate itself
    slate = heads.epsilon_greedy(GROUPED_FIXED, jax.random.PRNGKey(0), jnp.asarray(scores), jnp.asarray(popular),
                                 k, 0.4, 0.0)
    np.testing.assert_array_equal(np.asarray(slate), greedy)


def test_bcq_grouped_slate_ranks_allowed_items_first_within_each_group():
    n, k = 30, 4
    rng = np.random.default_rng(2)
    q = rng.normal(size=n).astype(np.float32)
    logits = rng.normal(size=n).astype(np.float32)
    popular = np.arange(n) % 2 == 0
    tau = 0.5
    kth = np.sort(logits)[-k]
    ok = logits - kth >= np.log(tau)
    slate = np.asarray(bcq_slate(jnp.asarray(q), jnp.asarray(logits), k, jnp.float32(tau), GROUPED_FIXED,
                                 jnp.asarray(popular), jnp.float32(0.5)))
    for group, n_slots in ((popular, 2), (~popular, 2)):
        idx = np.flatnonzero(group)
        order = sorted(idx, key=lambda i: (not ok[i], -q[i]))[:n_slots]  # allowed first, then by Q
        assert set(slate[np.isin(slate, idx)].tolist()) == set(order)


def _cases():
    out = []
    for kind in AGENTS:
        for head, tail in (("native", "auto"), ("grouped", "fixed"), ("grouped", "learned")):
            fast = (kind, head, tail) in {("a2c", "grouped", "learned"), ("dnair", "grouped", "learned")}
            out.append(pytest.param(kind, head, tail, marks=() if fast else pytest.mark.slow,
                                    id=f"{kind}-{head}-{tail}"))
    return out


@pytest.mark.parametrize("kind, head, tail", _cases())
def test_every_agent_trains_and_acts_on_each_head(kind, head, tail, small_worlds):
    """A few updates with each head; then greedy and sampled slates of the trained policy (and,
    under a learned tail, of the frozen twin, whose share is the initial 0.5) have the head's split."""
    from purerec.run.loop import init_key, make_train, stage1_key
    from purerec.sim.env import make_params
    from purerec.sim.rollout import rollout

    share = 0.3
    cfg = _tiny(kind, **{"slate.head": head, "slate.tail": tail, "slate.tail_share": share})
    resolved = heads.resolve(cfg)
    k = cfg.env.slate_size
    hyper_action = kind not in DISCRETE_SLATE_AGENTS  # a learned share starts at sigmoid(0) = 0.5
    for c, trained in ((cfg, True), (frozen_config(cfg), False)):
        if not trained and not (resolved.learned and hyper_action):
            continue
        fns = make_train(c, make_params(small_worlds[0], c))
        test_params = make_params(small_worlds[1], c)

        def run(key):
            frozen, _ = fns.stage1(stage1_key(key))
            s0 = fns.init(init_key(key), frozen)
            s2, logs = jax.lax.scan(lambda s, _: fns.update(frozen, s), s0, None, length=3)
            pp = fns.agent.policy_params(frozen, s2)
            trajs = [rollout(jax.random.PRNGKey(3), act, test_params, 8, 5, pp, None, fns.agent.init_carry(8))
                     for act in (fns.agent.act.greedy, fns.agent.act.sample)]
            return logs, trajs

        logs, trajs = jax.jit(run)(jax.random.PRNGKey(5))
        assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(logs))
        for traj, greedy in zip(trajs, (True, False)):
            n_tail = k - np.asarray(traj["n_popular"])
            if resolved.rule == "grouped" and not resolved.learned:
                assert (n_tail == round(k * share)).all()
            elif resolved.learned and not trained and greedy:
                # the greedy share of the initial policy: sigmoid of a near-zero residual, about 0.5
                assert (np.abs(n_tail - round(k * 0.5)) <= 1).all() and np.mean(n_tail == 5) > 0.5
            else:
                assert ((n_tail >= 0) & (n_tail <= k)).all()
        if resolved.rule == "grouped":
            # the training rollouts kept the split too (their long-tail share is logged per update)
            if not resolved.learned:
                np.testing.assert_allclose(np.asarray(logs["tail_share"]), round(k * share) / k, atol=1e-6)
