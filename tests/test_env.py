"""Environment invariants, exit rules on hand-built worlds, and the reference policies."""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purerec.config import Config, EnvConfig, FeedbackConfig
from purerec.run.evaluation import evaluate
from purerec.sim import abandonment, env as E, metrics as M
from purerec.sim.env import make_params
from purerec.sim.policies import most_popular_policy, oracle_policy, random_policy
from purerec.sim.rollout import rollout
from purerec.sim.world import World

B = 160  # sessions in the batched invariant checks
T = 40  # steps: more than max_len (30), so every slot auto-resets at least once
N_EVAL = 256

_step_env = jax.jit(E.step_env)
_step = jax.jit(E.step)
_temper_update = jax.jit(abandonment.temper_update)


@partial(jax.jit, static_argnames=("n", "n_steps"))
def _trace(key, params, n, n_steps):
    """Random-policy batched run that keeps everything: obs, states before/after, info."""
    k0, k1 = jax.random.split(key)
    obs, state = E.batch_reset(k0, params, n)

    def body(carry, k):
        obs, state = carry
        ka, ke = jax.random.split(k)
        slates = jax.vmap(random_policy, in_axes=(0, 0, 0, None))(jax.random.split(ka, n), obs, state, params)
        obs2, state2, reward, term, trunc, info = E.batch_step(ke, state, slates, params)
        out = {"prev_state": state, "slates": slates, "obs": obs2, "state": state2, "reward": reward,
               "term": term, "trunc": trunc, "fb": info["feedback"], "true_fb": info["true_feedback"],
               "true_reward": info["true_reward"], "n_popular": info["n_popular"],
               "last_obs": info["last_obs"], "episode_len": info["episode_len"]}
        return (obs2, state2), out

    return jax.lax.scan(body, (obs, state), jax.random.split(k1, n_steps))[1]


def _np(tree):
    return jax.tree.map(np.asarray, tree)


@pytest.fixture(scope="module")
def trace(small_params):
    return _np(_trace(jax.random.key(7), small_params, B, T))


@pytest.fixture(scope="module")
def clean_params(small_cfg, small_worlds):
    cfg = dataclasses.replace(small_cfg, feedback=FeedbackConfig(conformity=0.0, noise_std=0.0)).validate()
    return make_params(small_worlds[1], cfg)


@pytest.fixture(scope="module")
def evals(small_params):
    key = jax.random.key(3)
    return {name: evaluate(key, pol, small_params, N_EVAL)
            for name, pol in [("random", random_policy), ("most_popular", most_popular_policy),
                              ("oracle", oracle_policy)]}


# --------------------------------------------------------------------------------------------
# Batched invariants on the small synthetic world
# --------------------------------------------------------------------------------------------


def test_trace_has_ends_of_both_kinds_and_nothing_longer_than_max_len(trace, small_params):
    done = trace["term"] | trace["trunc"]
    assert done.any(axis=0).all(), "every slot must end within T > max_len steps"
    assert trace["term"].any()
    assert not (trace["term"] & trace["trunc"]).any()
    # Truncation exactly when the session reaches max_len without terminating.
    reached = trace["prev_state"].t + 1 >= small_params.max_len
    np.testing.assert_array_equal(trace["trunc"], reached & ~trace["term"])
    assert (trace["prev_state"].t < small_params.max_len).all()
    np.testing.assert_array_equal(trace["episode_len"], trace["prev_state"].t + 1)


def test_rewards_and_feedback_in_unit_interval(trace):
    for k in ("reward", "fb", "true_fb", "true_reward"):
        assert np.isfinite(trace[k]).all()
        assert (trace[k] >= 0).all() and (trace[k] <= 1).all(), k


def test_reward_is_mean_of_feedback(trace):
    np.testing.assert_allclose(trace["reward"], trace["fb"].mean(-1), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(trace["true_reward"], trace["true_fb"].mean(-1), rtol=1e-6, atol=1e-7)


def test_n_popular_matches_world_flags(trace, small_worlds):
    popular = np.asarray(small_worlds[1].popular)
    np.testing.assert_array_equal(trace["n_popular"], popular[trace["slates"]].sum(-1))


def test_ended_sessions_auto_reset(trace, small_params):
    done = trace["term"] | trace["trunc"]
    assert done.sum() > B // 2
    obs, st = trace["obs"], trace["state"]
    assert (obs.t[done] == 0).all()
    assert (~obs.valid[done]).all()
    assert (obs.items[done] == 0).all() and (obs.feedback[done] == 0).all()
    assert (st.t[done] == 0).all()
    np.testing.assert_array_equal(st.temper[done], np.float32(small_params.temper_start))
    assert float(small_params.temper_start) == 30.0  # temper_init = 0 -> start at max_len
    assert (st.hist_items[done] == -1).all()
    assert (st.n_shown[done] == 0).all() and (st.n_popular[done] == 0).all()
    assert (st.ret[done] == 0).all()
    # The final observation of an ended session is kept in info['last_obs'].
    last = trace["last_obs"]
    np.testing.assert_array_equal(last.t[done], trace["prev_state"].t[done] + 1)
    assert last.valid[done].any(axis=-1).all()


def test_continuing_sessions_advance(trace, small_params):
    done = trace["term"] | trace["trunc"]
    cont = ~done
    prev, st, obs = trace["prev_state"], trace["state"], trace["obs"]
    np.testing.assert_array_equal(st.t[cont], prev.t[cont] + 1)
    np.testing.assert_array_equal(st.user[cont], prev.user[cont])
    np.testing.assert_array_equal(obs.t, st.t)
    np.testing.assert_array_equal(st.n_shown[cont], st.t[cont] * small_params.slate_size)
    np.testing.assert_allclose(st.ret[cont], prev.ret[cont] + trace["reward"][cont], rtol=1e-6, atol=1e-6)
    # Temper rule: a session that continues has temper >= 1.
    assert (st.temper[cont] >= 1.0).all()
    # Observation window: min(t * K, W) valid entries, the newest slate last, with its feedback.
    w, k = small_params.obs_window, small_params.slate_size
    np.testing.assert_array_equal(obs.valid[cont].sum(-1), np.minimum(st.t[cont] * k, w))
    np.testing.assert_array_equal(obs.items[cont][:, -k:], trace["slates"][cont])
    np.testing.assert_array_equal(obs.feedback[cont][:, -k:], trace["fb"][cont])
    # For non-ended steps info['last_obs'] is the returned observation itself.
    np.testing.assert_array_equal(trace["last_obs"].items[cont], obs.items[cont])


def test_no_item_id_out_of_range(trace, small_params):
    n = small_params.world.n_items
    for items in (trace["obs"].items, trace["last_obs"].items, trace["slates"]):
        assert items.min() >= 0 and items.max() < n
    assert trace["state"].user.min() >= 0 and trace["state"].user.max() < small_params.world.n_users


def test_random_slates_have_distinct_items(trace, small_params):
    s = np.sort(trace["slates"], axis=-1)
    assert s.shape[-1] == small_params.slate_size
    assert (np.diff(s, axis=-1) > 0).all()
    # ... and are spread over the catalogue (uniform: every one of 150 items shown).
    assert len(np.unique(trace["slates"])) == small_params.world.n_items


def test_exposures_counted_equal_steps_times_slate(small_params, evals):
    # Same static arguments as evaluate() in the `evals` fixture: reuses its compiled rollout.
    n, t = N_EVAL, small_params.max_len
    traj = rollout(jax.random.key(0), random_policy, small_params, n, t, None)
    k = small_params.slate_size
    assert traj["slates"].shape == (t, n, k)
    exp = M.exposure_counts(traj["slates"], jnp.ones((t, n), bool), small_params.world.n_items)
    assert float(exp.sum()) == t * n * k
    active = M.first_session_mask(traj["done"])
    exp = M.exposure_counts(traj["slates"], active, small_params.world.n_items)
    assert float(exp.sum()) == k * int(active.sum())


def test_rollout_is_deterministic(small_params, evals):
    n, t = N_EVAL, small_params.max_len  # the compiled rollout of the `evals` fixture
    a = _np(rollout(jax.random.key(5), random_policy, small_params, n, t, None))
    b = _np(rollout(jax.random.key(5), random_policy, small_params, n, t, None))
    c = _np(rollout(jax.random.key(6), random_policy, small_params, n, t, None))
    assert set(a) >= {"reward", "done", "slates", "n_popular", "true_reward", "terminated"}
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert not np.array_equal(a["slates"], c["slates"])
    assert not np.array_equal(a["reward"], c["reward"])


def test_trace_is_deterministic(trace, small_params):
    again = _np(_trace(jax.random.key(7), small_params, B, T))
    for k in ("reward", "fb", "slates", "term", "trunc"):
        np.testing.assert_array_equal(trace[k], again[k], err_msg=k)
    np.testing.assert_array_equal(trace["state"].temper, again["state"].temper)
    np.testing.assert_array_equal(trace["state"].user, again["state"].user)


def _assert_trees_match(a, b):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        if np.issubdtype(x.dtype, np.floating):
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)
        else:
            np.testing.assert_array_equal(x, y)


def test_jit_matches_no_jit(small_params):
    """jax.jit(step_env / step) agree with calling the functions un-jitted (op by op)."""
    params = small_params
    key = jax.random.key(11)
    k_reset, key = jax.random.split(key)
    _, state_e = E.reset(k_reset, params)
    state_j = state_e
    rng = np.random.default_rng(0)
    for i in range(3):
        if i == 2:  # jump to the last step of the session: the third step crosses an auto-reset
            state_j = state_j.replace(t=jnp.int32(params.max_len - 1))
            state_e = state_e.replace(t=jnp.int32(params.max_len - 1))
        k_env, key = jax.random.split(key)
        slate = jnp.asarray(rng.choice(params.world.n_items, params.slate_size, replace=False), jnp.int32)
        out_j = _step_env(k_env, state_j, slate, params)
        out_e = E.step_env(k_env, state_e, slate, params)
        _assert_trees_match(out_j, out_e)
        res_j = _step(k_env, state_j, slate, params)
        res_e = E.step(k_env, state_e, slate, params)
        _assert_trees_match(res_j, res_e)
        state_j, state_e = res_j[1], res_e[1]
        assert bool(res_j[3] | res_j[4]) == (i == 2)
    assert int(state_j.t) == 0 and float(state_j.temper) == float(params.temper_start)


def test_clean_feedback_equals_truth(clean_params):
    tr = _np(_trace(jax.random.key(8), clean_params, B, T))  # same shapes: no recompilation
    np.testing.assert_array_equal(tr["fb"], tr["true_fb"])
    np.testing.assert_allclose(tr["reward"], tr["true_reward"], rtol=1e-6)
    # and the history keeps the same values in both channels
    np.testing.assert_array_equal(tr["state"].hist_feedback, tr["state"].hist_true)


def test_conformity_without_noise_is_exact_mixture(small_params):
    params = small_params.replace(noise_std=jnp.float32(0.0))
    tr = _np(_trace(jax.random.key(9), params, B, T))
    w = float(params.conformity) * np.asarray(params.world.pop_norm)[tr["slates"]]
    np.testing.assert_allclose(tr["fb"], (1 - w) * tr["true_fb"] + w, rtol=1e-5, atol=1e-6)
    assert (tr["fb"] >= tr["true_fb"] - 1e-6).all()  # conformity only pulls towards 1


def test_contamination_monotone_in_popularity(trace, small_params):
    """On average, observed minus true feedback grows with the item's logged popularity."""
    pop = np.asarray(small_params.world.pop_norm)
    gap = (trace["fb"] - trace["true_fb"]).ravel()
    items = trace["slates"].ravel()
    order = np.argsort(pop, kind="stable")
    groups = np.array_split(order, 5)  # popularity quintiles of the catalogue
    means = [gap[np.isin(items, g)].mean() for g in groups]
    assert all(b > a for a, b in zip(means, means[1:])), means
    assert np.corrcoef(pop[items], gap)[0, 1] > 0.3
    assert means[-1] > 0.1 > means[0] - 0.05


# --------------------------------------------------------------------------------------------
# Reference policies
# --------------------------------------------------------------------------------------------


def test_ad_in_unit_interval(evals):
    for name, row in evals.items():
        for k in ("AD", "AD_exposure", "AD_item", "Gini", "coverage", "long_tail_share"):
            assert 0.0 <= row[k] <= 1.0, (name, k, row[k])
        assert 1.0 <= row["Len"] <= 30.0
        assert row["R_each"] == pytest.approx(row["R_cum"] / row["Len"], rel=1e-5)


def test_most_popular_is_fully_unbalanced(evals, small_params):
    row = evals["most_popular"]
    assert row["AD_exposure"] == pytest.approx(1.0)
    assert row["long_tail_share"] == 0.0
    k, n = small_params.slate_size, small_params.world.n_items
    assert row["coverage"] == pytest.approx(k / n)
    assert row["Gini"] == pytest.approx(1.0 - k / n, abs=1e-5)  # K items share all exposure equally
    slate = np.asarray(most_popular_policy(None, None, None, small_params))
    pop = np.asarray(small_params.world.item_pop)
    assert set(slate) == set(np.argsort(-pop, kind="stable")[:k])
    assert np.asarray(small_params.world.popular)[slate].all()


def test_oracle_beats_random(evals):
    assert evals["oracle"]["R_cum"] > evals["random"]["R_cum"] + 1.0
    assert evals["oracle"]["R_cum_true"] > evals["random"]["R_cum_true"] + 1.0
    assert evals["oracle"]["R_each"] > evals["random"]["R_each"]


def test_random_policy_is_close_to_uniform(evals, small_params):
    row = evals["random"]
    assert row["coverage"] == 1.0
    assert row["Gini"] < 0.15
    frac = float(np.mean(np.asarray(small_params.world.popular)))
    assert row["long_tail_share"] == pytest.approx(1.0 - frac, abs=0.02)


# --------------------------------------------------------------------------------------------
# Exit rules on hand-built worlds
# --------------------------------------------------------------------------------------------


def tiny_world(r, pop=None, popular=None, tags=None) -> World:
    """One user whose true response to item i is r[i] (D = 1: true_item = logit(r), user = 1)."""
    r = np.asarray(r, np.float64)
    n = len(r)
    pop = np.zeros(n) if pop is None else np.asarray(pop, np.float64)
    popular = np.zeros(n, bool) if popular is None else np.asarray(popular, bool)
    tags = np.eye(n, dtype=bool)[:, :max(n, 1)] if tags is None else np.asarray(tags, bool)
    return World(
        true_user=jnp.ones((1, 1), jnp.float32),
        true_item=jnp.asarray(np.log(r / (1 - r))[:, None], jnp.float32),
        item_emb=jnp.zeros((n, 2), jnp.float32),
        item_tags=jnp.asarray(tags),
        item_pop=jnp.asarray(pop, jnp.float32),
        popular=jnp.asarray(popular),
        item_log_reward=jnp.zeros(n, jnp.float32),
        item_log_true=jnp.zeros(n, jnp.float32),
        user_ids=jnp.arange(1, dtype=jnp.int32),
        item_ids=jnp.arange(n, dtype=jnp.int32),
    )


def tiny_params(world: World, conformity=0.0, noise_std=0.0, **env) -> E.EnvParams:
    e = dict(slate_size=2, obs_window=3, max_len=30)
    e.update(env)
    cfg = Config(env=EnvConfig(**e), feedback=FeedbackConfig(conformity=conformity, noise_std=noise_std))
    return make_params(world, cfg.validate())


def run_slates(params, slates, auto_reset=False):
    """Play fixed slates from a reset; returns per-step (state, reward, terminated, truncated, info)."""
    # Un-jitted (op by op): each tiny params variant has its own static fields, and compiling the
    # step for every variant costs more than running these few steps eagerly.
    key = jax.random.key(0)
    _, state = E.reset(key, params)
    assert int(state.user) == 0
    out = []
    for i, s in enumerate(slates):
        fn = E.step if auto_reset else E.step_env
        _, state, reward, term, trunc, info = fn(jax.random.key(100 + i), state, jnp.asarray(s, jnp.int32), params)
        out.append((state, float(reward), bool(term), bool(trunc), info))
    return out


R4 = [0.9, 0.5, 0.8, 0.2]
POP4 = [True, True, False, False]
TEMPER_SLATES = [[0, 2], [0, 1], [2, 3], [2, 3], [2, 3], [0, 2]]


def ref_temper(r, popular, slates, start, offset=2.0, thr=0.3, penalty=1.0, scope="session"):
    """NumPy reference of the temper rule: list of (temper, leaves) after each step.

    ``scope``: p = popular share of this step's slate (``slate``) or of all items shown so far
    in the session (``session``)."""
    temper, shown, n_pop, out = start, 0, 0, []
    for s in slates:
        mean_r = float(np.mean([r[i] for i in s]))
        slate_pop = sum(bool(popular[i]) for i in s)
        shown += len(s)
        n_pop += slate_pop
        p = slate_pop / len(s) if scope == "slate" else n_pop / shown
        temper += min(max(mean_r - offset, -2.0), 0.0)
        if abs(2 * p - 1) >= thr:
            temper -= penalty
        out.append((temper, temper < 1.0))
    return out


# By hand (offset 2, penalty 1 when |2p - 1| >= 0.3), temper_init 10, for each fair_scope:
#   session (p = popular share of all items shown so far):
#    1. [0,2] r=.85 p=1/2  (0)   -> 10 - 1.15          = 8.85
#    2. [0,1] r=.70 p=3/4  (.5)  -> 8.85 - 1.30 - 1    = 6.55
#    3. [2,3] r=.50 p=3/6  (0)   -> 6.55 - 1.50        = 5.05
#    4. [2,3] r=.50 p=3/8  (.25) -> 5.05 - 1.50        = 3.55
#    5. [2,3] r=.50 p=3/10 (.4)  -> 3.55 - 1.50 - 1    = 1.05   (>= 1: stays)
#    6. [0,2] r=.85 p=4/12 (1/3) -> 1.05 - 1.15 - 1    = -1.10  (< 1: leaves)
#   slate (p = popular share of this step's slate only):
#    1. [0,2] r=.85 p=1/2 (0)    -> 10 - 1.15          = 8.85
#    2. [0,1] r=.70 p=1   (1)    -> 8.85 - 1.30 - 1    = 6.55
#    3. [2,3] r=.50 p=0   (1)    -> 6.55 - 1.50 - 1    = 4.05
#    4. [2,3] r=.50 p=0   (1)    -> 4.05 - 1.50 - 1    = 1.55
#    5. [2,3] r=.50 p=0   (1)    -> 1.55 - 1.50 - 1    = -0.95  (< 1: leaves)
#    6. [0,2] r=.85 p=1/2 (0)    -> -0.95 - 1.15       = -2.10  (step_env keeps going)
HAND_TEMPER = {
    "session": ([8.85, 6.55, 5.05, 3.55, 1.05, -1.10], [False] * 5 + [True]),
    "slate": ([8.85, 6.55, 4.05, 1.55, -0.95, -2.10], [False] * 4 + [True, True]),
}


@pytest.mark.parametrize("scope", ["session", "slate"])
def test_temper_rule_hand_trajectory(scope):
    params = tiny_params(tiny_world(R4, popular=POP4), temper_init=10.0, fair_scope=scope)
    assert params.fair_scope == scope
    steps = run_slates(params, TEMPER_SLATES)
    expected, leaves = HAND_TEMPER[scope]
    ref = ref_temper(R4, POP4, TEMPER_SLATES, 10.0, scope=scope)
    np.testing.assert_allclose([t for t, _ in ref], expected, atol=1e-9)
    assert [leave for _, leave in ref] == leaves
    np.testing.assert_allclose([float(s.temper) for s, *_ in steps], expected, atol=1e-5)
    assert [term for _, _, term, _, _ in steps] == leaves
    assert not any(trunc for *_, trunc, _ in steps)
    np.testing.assert_allclose([rw for _, rw, *_ in steps], [0.85, 0.7, 0.5, 0.5, 0.5, 0.85], atol=1e-6)
    # The session's running counts are kept whatever the scope.
    assert [int(s.n_popular) for s, *_ in steps] == [1, 3, 3, 3, 3, 4]
    assert int(steps[-1][0].n_shown) == 12
    assert float(steps[-1][0].ret) == pytest.approx(0.85 + 0.7 + 0.5 * 3 + 0.85, abs=1e-5)


def test_default_fair_scope_is_slate():
    assert EnvConfig().fair_scope == "slate"
    params = tiny_params(tiny_world(R4, popular=POP4), temper_init=10.0)
    assert params.fair_scope == "slate"
    steps = run_slates(params, TEMPER_SLATES[:5])
    np.testing.assert_allclose([float(s.temper) for s, *_ in steps], HAND_TEMPER["slate"][0][:5], atol=1e-5)


def _random_temper_case(scope):
    """Longer random trajectories with K = 4 (balanced slates possible): (env tempers, exits, reference)."""
    rng = np.random.default_rng(5)
    n = 8
    r = rng.uniform(0.05, 0.95, n)
    popular = np.arange(n) < 3
    slates = [rng.choice(n, 4, replace=False).tolist() for _ in range(12)]
    params = tiny_params(tiny_world(r, popular=popular), slate_size=4, exit_rule="temper", temper_init=20.0,
                         max_len=100, fair_scope=scope, fair_threshold=0.5, fair_penalty=0.75)
    steps = run_slates(params, slates)
    ref = ref_temper(r, popular, slates, 20.0, thr=0.5, penalty=0.75, scope=scope)
    return [float(s.temper) for s, *_ in steps], [term for _, _, term, _, _ in steps], ref


@pytest.mark.parametrize("scope", ["session", "slate"])
def test_temper_rule_random_slates_match_numpy(scope):
    tempers, exits, ref = _random_temper_case(scope)
    np.testing.assert_allclose(tempers, [t for t, _ in ref], atol=1e-4)
    assert exits == [leave for _, leave in ref]


def test_temper_rule_scopes_differ_on_random_slates():
    """The random trajectories above are not a case where the two rules happen to agree."""
    (a, exit_a, _), (b, exit_b, _) = _random_temper_case("session"), _random_temper_case("slate")
    assert not np.allclose(a, b, atol=1e-3)
    # With temper_init 20 the slate rule's user leaves within the 12 steps, the session rule's does not.
    assert not any(exit_a) and any(exit_b)


def test_imbalance_counts_per_scope():
    n, p = abandonment.imbalance_counts("slate", 10, jnp.int32(3), jnp.int32(40), jnp.int32(25))
    assert (int(n), int(p)) == (10, 3)
    n, p = abandonment.imbalance_counts("session", 10, jnp.int32(3), jnp.int32(40), jnp.int32(25))
    assert (int(n), int(p)) == (40, 25)
    with pytest.raises(ValueError, match="fair_scope"):
        abandonment.imbalance_counts("batch", 10, jnp.int32(3), jnp.int32(40), jnp.int32(25))


def test_temper_rule_auto_resets_after_exit():
    params = tiny_params(tiny_world(R4, popular=POP4), temper_init=10.0, fair_scope="session")
    steps = run_slates(params, TEMPER_SLATES + [[0, 2]], auto_reset=True)
    assert steps[5][2] and not steps[5][3]
    st = steps[5][0]
    assert int(st.t) == 0 and float(st.temper) == 10.0 and int(st.n_shown) == 0
    assert float(steps[6][0].temper) == pytest.approx(8.85, abs=1e-5)  # new session, fresh temper


def test_temper_rule_auto_resets_after_exit_slate_scope():
    params = tiny_params(tiny_world(R4, popular=POP4), temper_init=10.0, fair_scope="slate")
    steps = run_slates(params, TEMPER_SLATES[:5] + [[0, 1]], auto_reset=True)
    assert steps[4][2] and not steps[4][3]
    st = steps[4][0]
    assert int(st.t) == 0 and float(st.temper) == 10.0 and int(st.n_shown) == 0 and int(st.n_popular) == 0
    # New session: [0, 1] is all popular -> 10 - 1.30 - 1.
    assert float(steps[5][0].temper) == pytest.approx(7.70, abs=1e-5)


@pytest.mark.parametrize("scope,exit_step", [("session", 6), ("slate", 5)])
def test_temper_exit_at_max_len_is_terminated_not_truncated(scope, exit_step):
    params = tiny_params(tiny_world(R4, popular=POP4), temper_init=10.0, max_len=exit_step, fair_scope=scope)
    steps = run_slates(params, TEMPER_SLATES[:exit_step])
    assert [(term, trunc) for _, _, term, trunc, _ in steps][-1] == (True, False)
    assert not any(term or trunc for _, _, term, trunc, _ in steps[:-1])


def test_temper_start_defaults_to_max_len():
    params = tiny_params(tiny_world(R4, popular=POP4), max_len=7)
    assert float(params.temper_start) == 7.0
    _, state = E.reset(jax.random.key(0), params)
    assert float(state.temper) == 7.0


def _tu(temper, reward, shown, pop, offset=2.0, thr=0.3, pen=1.0):
    f = jnp.float32
    t, leave = _temper_update(f(temper), f(reward), jnp.int32(shown), jnp.int32(pop), f(offset), f(thr), f(pen))
    return float(t), bool(leave)


def test_temper_update_clip_penalty_and_exit_boundaries():
    # Upper clip at 0: a reward above the offset never raises temper.
    assert _tu(5.0, 1.0, 4, 2, offset=0.0) == (5.0, False)
    # Lower clip at -2.
    assert _tu(5.0, 0.5, 4, 2, offset=5.0) == (3.0, False)
    # Fairness penalty at exactly |2p - 1| == threshold (p = 3/4, threshold 0.5): applied (>=).
    assert _tu(5.0, 1.0, 4, 3, thr=0.5) == (3.0, False)
    assert _tu(5.0, 1.0, 4, 1, thr=0.5) == (3.0, False)  # p = 1/4, symmetric
    assert _tu(5.0, 1.0, 4, 2, thr=0.5) == (4.0, False)  # balanced: no penalty
    assert _tu(5.0, 1.0, 4, 4, thr=0.5, pen=0.0) == (4.0, False)  # zero penalty
    assert _tu(5.0, 1.0, 4, 4, thr=0.5, pen=2.5) == (1.5, False)
    # Exit exactly when temper < 1: 1.0 stays, 0.5 leaves.
    assert _tu(2.0, 1.0, 4, 2) == (1.0, False)
    assert _tu(2.0, 0.5, 4, 2) == (0.5, True)


TAGS6 = np.array([[1, 0, 0],  # item 0: A
                  [0, 1, 0],  # item 1: B
                  [0, 0, 1],  # item 2: C
                  [1, 0, 0],  # item 3: A
                  [0, 1, 0],  # item 4: B
                  [0, 0, 1]], bool)  # item 5: C
TAG_SLATES = [[0, 3], [1, 2], [4, 5], [0, 3], [1, 5], [3, 2]]


def ref_tag_exit(slates, tags, window, threshold):
    hist, out = [], []
    for t, s in enumerate(slates):
        recent = hist[-window:]
        counts = tags[recent].sum(0) if recent else np.zeros(tags.shape[1], int)
        new = tags[s].any(0)
        out.append(t > 0 and bool((new & (counts > threshold)).any()))
        hist.extend(s)
    return out


@pytest.mark.parametrize("obs_window", [2, 8])  # history shorter / longer than the tag window
@pytest.mark.parametrize("threshold,expected_exit", [(1, 5), (0, 2), (2, None)])
def test_tag_repeat_rule_hand_trajectory(obs_window, threshold, expected_exit):
    # tag_window = 4 items = the last two slates. With threshold 1 (exit if a new tag occurs > 1 times):
    #  t=0 [0,3] A,A: never at t=0.
    #  t=1 [1,2] B,C: window [0,3] -> A2           -> stay
    #  t=2 [4,5] B,C: window [0,3,1,2] -> A2 B1 C1 -> stay
    #  t=3 [0,3] A:   window [1,2,4,5] -> B2 C2    -> stay (A's 2 are out of the window)
    #  t=4 [1,5] B,C: window [4,5,0,3] -> A2 B1 C1 -> stay
    #  t=5 [3,2] A,C: window [0,3,1,5] -> A2       -> leave
    world = tiny_world([0.5] * 6, tags=TAGS6)
    params = tiny_params(world, exit_rule="tag_repeat", tag_window=4, tag_threshold=threshold,
                         obs_window=obs_window)
    assert params.history_len == max(obs_window, 4)
    ref = ref_tag_exit(TAG_SLATES, TAGS6, 4, threshold)
    n = len(TAG_SLATES) if expected_exit is None else expected_exit + 1
    steps = run_slates(params, TAG_SLATES[:n])
    got = [term for _, _, term, _, _ in steps]
    assert got == ref[:n]
    want = [False] * n
    if expected_exit is not None:
        want[expected_exit] = True
    assert got == want
    assert not any(trunc for *_, trunc, _ in steps)
    # The temper is not touched by the tag rule.
    assert all(float(s.temper) == 30.0 for s, *_ in steps)


def test_tag_repeat_never_exits_at_first_step():
    world = tiny_world([0.5] * 6, tags=TAGS6)
    params = tiny_params(world, exit_rule="tag_repeat", tag_window=4, tag_threshold=0)
    (_, _, term, _, _), = run_slates(params, [[0, 3]])
    assert not term
    assert not bool(abandonment.tag_repeat_exit(jnp.int32(0), jnp.asarray([0, 3, 0, 3]), jnp.asarray([0]),
                                                jnp.asarray(TAGS6), 4, jnp.int32(0)))
    assert bool(abandonment.tag_repeat_exit(jnp.int32(1), jnp.asarray([-1, -1, 0, 3]), jnp.asarray([3]),
                                            jnp.asarray(TAGS6), 4, jnp.int32(1)))
    # Empty history slots (-1) are not counted as item 0.
    assert not bool(abandonment.tag_repeat_exit(jnp.int32(1), jnp.asarray([-1, -1, -1, 3]), jnp.asarray([3]),
                                                jnp.asarray(TAGS6), 4, jnp.int32(1)))


def test_none_rule_truncates_at_max_len():
    params = tiny_params(tiny_world(R4, popular=POP4), exit_rule="none", max_len=5)
    slates = [[0, 1]] * 5
    steps = run_slates(params, slates)
    assert [term for _, _, term, _, _ in steps] == [False] * 5
    assert [trunc for *_, trunc, _ in steps] == [False] * 4 + [True]
    assert [int(s.t) for s, *_ in steps] == [1, 2, 3, 4, 5]
    assert [int(info["episode_len"]) for *_, info in steps] == [1, 2, 3, 4, 5]
    # Auto-reset: after the truncated step the next session starts; 5 more steps truncate again.
    steps = run_slates(params, slates * 2, auto_reset=True)
    assert [trunc for *_, trunc, _ in steps] == ([False] * 4 + [True]) * 2
    assert int(steps[4][0].t) == 0 and int(steps[5][0].t) == 1


def test_hand_feedback_with_conformity():
    # pop_norm = [1, .5, 0, 0]; w = 0.5 * pop_norm; o = (1 - w) r + w.
    world = tiny_world(R4, pop=[10, 5, 0, 0], popular=POP4)
    params = tiny_params(world, conformity=0.5, exit_rule="none")
    (_, reward, _, _, info), = run_slates(params, [[0, 1]])
    np.testing.assert_allclose(np.asarray(info["true_feedback"]), [0.9, 0.5], atol=1e-6)
    np.testing.assert_allclose(np.asarray(info["feedback"]), [0.95, 0.625], atol=1e-6)
    assert reward == pytest.approx((0.95 + 0.625) / 2, abs=1e-6)
    assert float(info["true_reward"]) == pytest.approx(0.7, abs=1e-6)
    assert int(info["n_popular"]) == 2


def test_observation_window_hand():
    params = tiny_params(tiny_world(R4, popular=POP4), exit_rule="none", obs_window=3)
    _, state = E.reset(jax.random.key(0), params)
    obs = E.observe(state, params)
    assert not np.asarray(obs.valid).any() and int(obs.t) == 0
    for i, s in enumerate([[0, 1], [2, 3]]):
        obs, state, *_ = E.step_env(jax.random.key(i), state, jnp.asarray(s), params)
    np.testing.assert_array_equal(np.asarray(obs.items), [1, 2, 3])
    np.testing.assert_array_equal(np.asarray(obs.valid), [True, True, True])
    np.testing.assert_allclose(np.asarray(obs.feedback), [0.5, 0.8, 0.2], atol=1e-6)
    tobs = E.true_observation(state, params)
    np.testing.assert_allclose(np.asarray(tobs.feedback), [0.5, 0.8, 0.2], atol=1e-6)
    assert int(obs.t) == 2
