"""A platform with memory (``platform.loop``, ``purerec.sim.platform``): exposure counts and the
mass they move, relabelling against the world's own rule, session shards, bit-identity with the
static world at rho = 1, the loop's sign, FCPO's cost labels and the config's errors."""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import small_config
from purerec.config import ConfigError, load_config
from purerec.data.datasets import get_worlds
from purerec.sim import env as E, platform as PL
from purerec.sim.policies import balanced_policy, most_popular_policy, random_policy
from purerec.sim.rollout import rollout
from purerec.sim.world import popular_flags


def loop_config(cfg=None, **pf):
    cfg = cfg or small_config()
    return dataclasses.replace(cfg, platform=dataclasses.replace(cfg.platform, loop=True, **pf)).validate()


@pytest.fixture(scope="module")
def worlds():
    return get_worlds(small_config(), use_cache=False)


def _np_gini(x):
    x = np.sort(np.asarray(x, np.float64))
    n = len(x)
    return float(np.sum((2 * np.arange(1, n + 1) - n - 1) * x) / (n * x.sum()))


def test_counts_mass_and_window_by_hand():
    """Counts are the slates' items (B K in all), the mass moves by rho toward the counts' shares
    with its total kept, and a relabel reports its flips, turnover and the window's Gini."""
    pop0 = jnp.array([8.0, 1.0, 4.0, 2.0, 0.0, 5.0])  # labels: top 2 = items 0, 5
    world = _toy_world(pop0)
    plat = PL.init(world)
    slates = jnp.array([[1, 4], [4, 2], [1, 4]])  # B = 3, K = 2
    n = np.bincount(np.asarray(slates).ravel(), minlength=6).astype(np.float64)
    assert float(PL.exposure_counts(slates, 6).sum()) == 6.0
    rho, mass = 0.5, float(pop0.sum())
    new, info = PL.advance(plat, slates, jnp.float32(rho), jnp.float32(mass), 2, relabel_every=1)
    want = rho * np.asarray(pop0) + (1 - rho) * n / n.sum() * mass
    np.testing.assert_allclose(np.asarray(new.pop), want, rtol=1e-6)
    np.testing.assert_allclose(float(new.pop.sum()), mass, rtol=1e-6)  # the shares sum to 1
    # want = [4, 1.5, 2.67, 1, 3, 2.5]: the new top 2 are items 0 and 4; item 5 leaves the group
    np.testing.assert_array_equal(np.asarray(new.popular), [True, False, False, False, True, False])
    assert int(info.flips) == 2 and float(info.turnover) == pytest.approx(0.5)
    assert float(info.gini_window) == pytest.approx(_np_gini(n), abs=1e-6)
    assert float(info.gini_pop) == pytest.approx(_np_gini(want), abs=1e-6)
    np.testing.assert_array_equal(np.asarray(new.window), 0.0)  # a new window starts
    # between relabels the labels hold and the window fills
    held, info2 = PL.advance(plat, slates, jnp.float32(rho), jnp.float32(mass), 2, relabel_every=3)
    np.testing.assert_array_equal(np.asarray(held.popular), np.asarray(world.popular))
    np.testing.assert_array_equal(np.asarray(held.window), n)
    assert not bool(info2.relabelled) and int(info2.flips) == 0


def _toy_world(pop):
    n = pop.shape[0]
    z = jnp.zeros((n, 2))
    return dataclasses.replace(
        _empty_world(n), item_pop=pop, popular=jnp.asarray(popular_flags(np.asarray(pop), 2 / n)), true_item=z,
        item_emb=z)


def _empty_world(n):
    from purerec.sim.world import World

    z = jnp.zeros((n,))
    return World(true_user=jnp.zeros((1, 2)), true_item=jnp.zeros((n, 2)), item_emb=jnp.zeros((n, 2)),
                 item_tags=jnp.zeros((n, 1), bool), item_pop=z, popular=jnp.zeros((n,), bool), item_log_reward=z,
                 item_log_true=z, user_ids=jnp.zeros((1,), jnp.int32), item_ids=jnp.arange(n))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_relabel_is_the_worlds_rule_ties_included(seed):
    rng = np.random.default_rng(seed)
    pop = rng.integers(0, 6, size=500).astype(np.float32)  # many ties
    for frac in (0.2, 0.37):
        want = popular_flags(pop, frac)
        got = np.asarray(PL.relabel(jnp.asarray(pop), int(want.sum())))
        np.testing.assert_array_equal(got, want)


def test_two_session_shards_give_the_one_platform_state():
    """The counts are summed over the shards: two shards of a batch move the platform exactly as
    the whole batch does, and every shard holds the same state."""
    pop0 = jnp.asarray(np.random.default_rng(3).integers(1, 50, 40).astype(np.float32))
    world = _empty_world(40).replace(item_pop=pop0, popular=jnp.asarray(popular_flags(np.asarray(pop0), 0.2)))
    slates = jax.random.randint(jax.random.PRNGKey(0), (8, 5), 0, 40)
    args = (jnp.float32(0.9), pop0.sum(), 8, 1)
    whole, _ = PL.advance(PL.init(world), slates, *args)
    shard = lambda s: PL.advance(PL.init(world), s, *args, total=lambda x: jax.lax.psum(x, "s"))[0]
    halves = jax.vmap(shard, axis_name="s")(slates.reshape(2, 4, 5))
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(halves)):
        np.testing.assert_array_equal(np.asarray(b)[0], np.asarray(a))
        np.testing.assert_array_equal(np.asarray(b)[1], np.asarray(a))


@pytest.mark.parametrize("policy", [random_policy, most_popular_policy, balanced_policy])
def test_rho_one_is_bit_identical_to_the_static_world(worlds, policy):
    cfg = small_config()
    static = rollout(jax.random.PRNGKey(3), policy, E.make_params(worlds[1], cfg), 64, 30)
    loop = rollout(jax.random.PRNGKey(3), policy, E.make_params(worlds[1], loop_config(rho=1.0, relabel_every=3)),
                   64, 30)
    assert set(loop) == set(static) | {"platform", "platform_end"}
    for k in static:
        np.testing.assert_array_equal(np.asarray(static[k]), np.asarray(loop[k]), err_msg=k)
    assert int(np.asarray(loop["platform"].flips).sum()) == 0
    # and with rho < 1 the sessions do change
    moved = rollout(jax.random.PRNGKey(3), policy, E.make_params(worlds[1], loop_config(rho=0.9, relabel_every=3)),
                    64, 30)
    assert not np.array_equal(np.asarray(static["reward"]), np.asarray(moved["reward"]))


def test_loop_off_leaves_run_ids_and_env_identity_unchanged():
    from purerec.config import env_identity
    from purerec.run.sweep import _cfg_hash

    cfg = small_config()
    off = dataclasses.replace(cfg, platform=dataclasses.replace(cfg.platform, rho=0.5, relabel_every=7))
    assert _cfg_hash(off) == _cfg_hash(cfg) and "platform" not in env_identity(off)
    on = loop_config(cfg)
    assert _cfg_hash(on) != _cfg_hash(cfg) and env_identity(on)["platform"]["loop"] is True


def test_the_loop_has_the_right_sign(worlds):
    """Conformity 0.8: most-popular concentrates the exposure mass above the logs' Gini and never
    changes a label; random spreads it below the logs' Gini and flips labels."""
    cfg = loop_config(rho=0.98, relabel_every=10)
    params = E.make_params(worlds[1], cfg)
    assert cfg.feedback.conformity == 0.8
    logs_gini = _np_gini(np.asarray(worlds[1].item_pop))
    out = {}
    for name, pol in (("most_popular", most_popular_policy), ("random", random_policy)):
        tr = rollout(jax.random.PRNGKey(0), pol, params, 64, 200)
        out[name] = jax.tree.map(np.asarray, tr["platform"])
    mp, rnd = out["most_popular"], out["random"]
    assert mp.gini_pop[-1] > logs_gini + 0.05 and mp.flips.sum() == 0
    assert rnd.gini_pop[-1] < logs_gini - 0.05 and rnd.flips.sum() > 0
    assert rnd.turnover.max() > 0 and mp.turnover.max() == 0


@pytest.mark.slow  # three A2C programs (~40 s); the env-level bit-identity above stays in the fast tier
def test_agent_runs_on_the_loop_and_logs_its_curves(tmp_path):
    """An agent's updates on a loop world: its logs carry the platform's curves, and at rho = 1
    every other curve is bit-identical to the static world's (rho is traced: one program)."""
    from test_trainer import train_config

    from purerec.run.hyper import hyper_of
    from purerec.run.loop import make_train
    base = train_config(total_updates=2, chunk_updates=1, seeds=(1,), num_envs=32, rollout_len=16)
    base = dataclasses.replace(base, agent=dataclasses.replace(base.agent, kind="a2c"))
    train_w, _ = get_worlds(base)
    run = lambda cfg, train: jax.tree.map(np.asarray, train(jax.random.PRNGKey(5), hyper_of(cfg))[2])
    program = lambda cfg: jax.jit(make_train(cfg, E.make_params(train_w, cfg)).train)
    static = run(base, program(base))
    rho1 = loop_config(base, rho=1.0, relabel_every=4)
    train = program(rho1)  # rho 1 and 0.9: one program
    logs = {"rho1": run(rho1, train), "loop": run(loop_config(base, rho=0.9, relabel_every=4), train)}
    for k, v in static.items():
        np.testing.assert_array_equal(v, logs["rho1"][k], err_msg=k)
    for k in ("gini_window", "gini_total", "gini_pop", "label_flips", "turnover"):
        assert k in logs["loop"] and k not in static
    assert logs["rho1"]["label_flips"].sum() == 0 and logs["loop"]["label_flips"].sum() > 0
    assert not np.array_equal(logs["loop"]["R_cum"], static["R_cum"])


@pytest.mark.slow  # two FCPO programs (~25-45 s)
def test_fcpo_cost_labels():
    """FCPO's cost counts the platform's current labels, or the logs' with cost_labels = frozen:
    the two differ once labels flip, and on the static world the option changes nothing."""
    from test_trainer import train_config

    from purerec.run.loop import make_train
    base = train_config(total_updates=2, chunk_updates=1, seeds=(1,), num_envs=32, rollout_len=16)
    base = dataclasses.replace(base, agent=dataclasses.replace(base.agent, kind="fcpo"))
    train_w, _ = get_worlds(base)
    out = {}
    for labels in ("current", "frozen"):
        cfg = loop_config(base, rho=0.5, relabel_every=1, cost_labels=labels)
        fns = make_train(cfg, E.make_params(train_w, cfg))
        out[labels] = jax.tree.map(np.asarray, jax.jit(fns.train)(jax.random.PRNGKey(2))[2])
    # the same rollout (the first update's cost is on its own rollout): the costs differ
    np.testing.assert_array_equal(out["current"]["Len"][0], out["frozen"]["Len"][0])
    assert out["current"]["label_flips"][0] > 0
    assert out["current"]["cost"][0] != out["frozen"]["cost"][0]


@pytest.mark.parametrize("field,value,fix", [("rho", 1.5, "in [0, 1]"), ("relabel_every", 0, "an integer in"),
                                             ("cost_labels", "old", "one of")])
def test_bad_platform_fields_are_named_errors(field, value, fix):
    cfg = small_config()
    with pytest.raises(ConfigError, match=rf"platform\.{field}.*{re.escape(fix)}"):
        dataclasses.replace(cfg, platform=dataclasses.replace(cfg.platform, **{field: value})).validate()


def test_loop_presets_are_the_static_worlds_plus_the_platform():
    for w in ("kuairec", "kuairand"):
        static, loop = load_config(f"envs/{w}.toml"), load_config(f"envs/{w}-loop.toml")
        assert loop.platform.loop and not static.platform.loop
        assert dataclasses.replace(loop, platform=static.platform) == static


def test_horizon_metrics_by_hand():
    """Two users over a horizon of 2 sessions: slot 0 ends at t 1 (comes back) and t 3 (its
    horizon is done: later steps do not count); slot 1 ends at t 0 and does not come back."""
    done = np.zeros((6, 2), bool)
    done[[1, 3, 5], 0] = True
    done[[0, 2], 1] = True
    returns = np.zeros((6, 2), bool)
    returns[[1, 3], 0] = True
    returns[2, 1] = True  # after the user left: ignored
    r = np.arange(12, dtype=np.float32).reshape(6, 2) / 10
    from purerec.sim.metrics import horizon_metrics

    got = {k: float(v) for k, v in horizon_metrics(jnp.asarray(r), jnp.asarray(done), jnp.asarray(returns), 2).items()}
    # slot 0 counts t 0..3, slot 1 only t 0
    assert got["user_R_true"] == pytest.approx((r[:4, 0].sum() + r[0, 1]) / 2)
    assert got["user_sessions"] == pytest.approx((2 + 1) / 2)
    assert got["user_Len"] == pytest.approx((4 + 1) / 2)
    # sessions that could be followed by another (the first of each user): 1 of 2 came back
    assert got["return_rate"] == pytest.approx(0.5)


def test_store_profiles_keeps_the_later_slot_and_only_ended_sessions():
    from purerec.sim.platform import store_profiles

    prefs = jnp.zeros((4, 2))
    users = jnp.array([1, 3, 1, 2])
    profiles = jnp.arange(8, dtype=jnp.float32).reshape(4, 2) + 1
    ended = jnp.array([True, False, True, True])
    out = np.asarray(store_profiles(prefs, users, profiles, ended))
    np.testing.assert_array_equal(out, [[0, 0], [5, 6], [7, 8], [0, 0]])


def persist_config(**pf):
    cfg = small_config(dynamics="attraction")
    return dataclasses.replace(cfg, platform=dataclasses.replace(cfg.platform, loop=True, persist="user",
                                                                   **pf)).validate()


def test_users_come_back_with_the_profile_their_last_session_left():
    cfg = persist_config(rho=1.0)
    world = get_worlds(cfg, use_cache=False)[1]
    params = E.make_params(world, cfg).replace(same_user=True)
    obs, state = E.batch_reset(jax.random.PRNGKey(0), params, 8)
    step = jax.jit(E.batch_step)
    slates = jnp.tile(jnp.arange(cfg.env.slate_size), (8, 1))
    u0 = np.asarray(world.true_user)
    saw_end = False
    for t in range(cfg.env.max_len):
        before = state
        obs, state, _, term, trunc, info = step(jax.random.PRNGKey(t + 1), state, slates, params)
        done = np.asarray(term | trunc)
        for b in np.flatnonzero(done):
            saw_end = True
            user = int(info["last_user"][b])
            last = np.asarray(info["last_pref"][b])
            assert not np.allclose(last, u0[user])  # the profile moved
            np.testing.assert_array_equal(np.asarray(state.platform.prefs[user]), last)  # stored
            assert int(state.sessions.user[b]) == user  # the same user's next session (same_user)...
            np.testing.assert_array_equal(np.asarray(state.sessions.pref[b]), np.asarray(before.platform.prefs[user]))
        # ...starts from the table as it stood when it began
    assert saw_end
    # without persist the next session starts from the true preference
    cfg0 = dataclasses.replace(cfg, platform=dataclasses.replace(cfg.platform, persist="none")).validate()
    p0 = E.make_params(world, cfg0).replace(same_user=True)
    assert E.batch_reset(jax.random.PRNGKey(0), p0, 2)[1].platform.prefs is None


def test_persist_needs_the_loop_and_moving_preferences():
    cfg = small_config()
    with pytest.raises(ConfigError, match=r"platform\.persist"):
        dataclasses.replace(cfg, platform=dataclasses.replace(cfg.platform, loop=True, persist="user")).validate()


def test_horizon_protocol_follows_each_user(worlds):
    from purerec.run.evaluation import test_protocol

    cfg = persist_config(horizon=3)
    world = get_worlds(cfg, use_cache=False)[1]
    params = E.make_params(world, cfg)
    ev = dataclasses.replace(cfg.eval, n_sessions=64, repeats=1)
    row = test_protocol(random_policy, params, ev)
    assert 1.0 <= row["user_sessions"] <= 3.0 and 0.0 < row["return_rate"] < 1.0
    assert row["user_Len"] >= row["Len"] - 1e-6 and row["user_R_true"] > 0
    again = test_protocol(random_policy, params, ev)
    assert again == row  # same seed, same numbers


def test_gymnasium_adapter_refuses_a_loop_world(worlds):
    pytest.importorskip("gymnasium")
    from purerec.gym_adapter import PurerecVectorEnv

    with pytest.raises(ConfigError, match=r"platform\.loop"):
        PurerecVectorEnv(E.make_params(worlds[1], loop_config()), num_envs=4)


@pytest.mark.slow  # a whole HRL run with two shards (~25 s, CI time); the fast tier checks 1 vs 2 shards on the env
def test_session_shards_share_one_platform_in_a_run():
    """HRL with two session shards (vmapped on one device, as a run with fewer devices than shards):
    the platform counts every shard's slates (summed over the shards), so its exposures are all
    the sessions' and its mass keeps the logs' total."""
    from test_trainer import train_config

    from purerec.run.experiment import _stage2_programs, seed_batcher, SESSIONS
    from purerec.run.loop import make_train

    cfg = loop_config(train_config(session_shards=2, seeds=(1,), total_updates=2, chunk_updates=1, num_envs=32,
                                   rollout_len=8), rho=0.9, relabel_every=4)
    train_w, _ = get_worlds(cfg)
    params = E.make_params(train_w, cfg)
    fns = make_train(cfg, params, axis_name=SESSIONS)
    key = jax.random.PRNGKey(4)
    frozen, _ = jax.jit(fns.stage1)(key)
    keys, frozen1 = key[None], jax.tree.map(lambda x: x[None], frozen)
    init_v, chunk_v, _, _ = _stage2_programs(fns, seed_batcher("map"), 2, n_devices=1)
    state, logs = chunk_v(init_v(keys, frozen1), frozen1)
    plat = state.env_state.platform
    steps = cfg.train.rollout_len * cfg.train.chunk_updates
    assert float(plat.total.sum()) == cfg.train.num_envs * cfg.env.slate_size * steps  # both shards' slates
    assert int(plat.t[0]) == steps
    np.testing.assert_allclose(float(plat.pop.sum()), float(params.pop_mass), rtol=1e-4)
    assert float(np.asarray(logs["label_flips"]).sum()) > 0
