"""The env under ``env.dynamics = "attraction"``: opt-in, bit-identical to the static world when
nothing attracts, and moving the profile the way ``purerec.sim.dynamics`` says when it does."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purerec.config import AttractionConfig, ConfigError
from purerec.data.datasets import get_worlds
from purerec.sim import dynamics as DY, env as E
from purerec.sim.policies import oracle_policy, random_policy
from purerec.sim.rollout import rollout
from tests.conftest import small_config


def dyn_config(**att):
    cfg = small_config(dynamics="attraction")
    return dataclasses.replace(cfg, attraction=dataclasses.replace(cfg.attraction, **att)).validate()


@pytest.fixture(scope="module")
def worlds():
    return get_worlds(dyn_config(), use_cache=False)


def _traj(cfg, world, policy=random_policy, n=64, seed=3):
    params = E.make_params(world, cfg)
    return rollout(jax.random.PRNGKey(seed), policy, params, n, cfg.env.max_len)


@pytest.mark.parametrize("mode", ["pick", "mean"])
@pytest.mark.parametrize("policy", [random_policy, oracle_policy])
def test_zero_attraction_is_bit_identical_to_the_static_world(worlds, mode, policy):
    static = _traj(small_config(), worlds[1], policy)
    moving = _traj(dyn_config(alpha_h=0.0, alpha_nh=0.0, mode=mode), worlds[1], policy)
    for k in static:
        np.testing.assert_array_equal(np.asarray(static[k]), np.asarray(moving[k]), err_msg=k)
    # and with attraction the sessions do change
    drifting = _traj(dyn_config(mode=mode), worlds[1], policy)
    assert not np.array_equal(np.asarray(static["true_reward"]), np.asarray(drifting["true_reward"]))


def test_harm_labels_are_a_taste_region_shared_by_both_worlds(worlds):
    train, test = worlds
    h_tr, h_te = np.asarray(train.harmful), np.asarray(test.harmful)
    assert abs(h_tr.mean() - 0.2) < 0.01
    # an item in both worlds has one label
    common, i_tr, i_te = np.intersect1d(np.asarray(train.item_ids), np.asarray(test.item_ids), return_indices=True)
    assert len(common) > 50
    np.testing.assert_array_equal(h_tr[i_tr], h_te[i_te])
    # the region: harmful items project further along the harm direction than any safe item
    d = DY.harm_direction(train.true_item.shape[1] - 2, 0)
    proj = np.asarray(train.true_item)[:, :-2] @ d
    assert proj[h_tr].min() >= proj[~h_tr].max()
    # the static world has no labels
    assert get_worlds(small_config(), use_cache=False)[0].harmful is None


def test_one_step_moves_the_profile_by_the_attraction_rule(worlds):
    cfg = dyn_config(mode="pick")
    params = E.make_params(worlds[1], cfg)
    _, st = E.reset_user(jnp.int32(5), params)
    slate = jnp.arange(cfg.env.slate_size, dtype=jnp.int32) * 3
    key = jax.random.PRNGKey(0)
    _, st2, _, _, _, info = E.step_env(key, st, slate, params)
    u0 = np.asarray(worlds[1].true_user[5])
    V = np.asarray(worlds[1].true_item)
    move = np.asarray(st2.pref) - u0
    # pick mode: u1 = u0 + alpha_v (v - u0) for some item v with the alpha of its label
    alpha = np.where(np.asarray(worlds[1].harmful), 0.5, 0.25)
    err = np.abs(alpha[:, None] * (V - u0[None, :]) - move[None, :]).max(1)
    v = int(np.argmin(err))
    assert err[v] < 1e-5
    assert bool(info["dynamics"].harm_pick) == bool(worlds[1].harmful[v])
    assert bool(info["dynamics"].clicked) == (v in set(np.asarray(slate).tolist()))
    # mean mode: the expected step of the choice model at u0
    cfgm = dyn_config(mode="mean")
    pm = E.make_params(worlds[1], cfgm)
    _, stm = E.reset_user(jnp.int32(5), pm)
    _, stm2, _, _, _, infom = E.step_env(key, stm, slate, pm)
    logits = V @ u0
    s = np.exp(logits - logits.max())
    c = float(pm.premium_c) * np.exp(-logits.max())
    sl = np.asarray(slate)
    p = c / (s[sl].sum() + c) * s / s.sum()
    p[sl] += s[sl] / (s[sl].sum() + c)
    a = alpha * p
    expect = u0 + a @ V - a.sum() * u0 + 0.2 * (u0 - u0)
    np.testing.assert_allclose(np.asarray(stm2.pref), expect, atol=1e-4)
    assert abs(float(infom["dynamics"].p_clk) - s[sl].sum() / (s[sl].sum() + c)) < 1e-5


def test_pick_and_mean_modes_agree_on_harm_per_step(worlds):
    """Over many sessions, the first step's harm probability is the same in both modes (it reads
    u0), and after a few steps the mean harm of pick-mode sessions is within 3 standard errors of
    the mean mode's (the mean step is the expectation of the pick step)."""
    out = {}
    for mode in ("pick", "mean"):
        cfg = dataclasses.replace(dyn_config(mode=mode), env=dataclasses.replace(dyn_config().env, exit_rule="none",
                                                                                  dynamics="attraction"))
        params = E.make_params(worlds[1], cfg)
        users = jnp.arange(4096) % worlds[1].n_users
        obs, st = jax.vmap(E.reset_user, in_axes=(0, None))(users, params)
        slate = jnp.arange(cfg.env.slate_size, dtype=jnp.int32)
        step = jax.jit(jax.vmap(E.step_env, in_axes=(0, 0, None, None)))
        key = jax.random.PRNGKey(1)
        hs = []
        for t in range(3):
            key, k = jax.random.split(key)
            _, st, _, _, _, info = step(jax.random.split(k, 4096), st, slate, params)
            hs.append(np.asarray(info["dynamics"].p_h))
        out[mode] = hs
    np.testing.assert_allclose(out["pick"][0], out["mean"][0], rtol=1e-6)
    last_pick, last_mean = out["pick"][2], out["mean"][2]
    se = last_pick.std() / np.sqrt(len(last_pick))
    assert abs(last_pick.mean() - last_mean.mean()) < 3 * se + 1e-6


def test_attraction_config_is_validated():
    with pytest.raises(ConfigError, match="attraction.beta"):
        AttractionConfig(alpha_h=0.9, beta=0.2).validate()
    with pytest.raises(ConfigError, match="attraction.mode"):
        AttractionConfig(mode="expected").validate()
    with pytest.raises(ConfigError, match="env.dynamics"):
        small_config(dynamics="drift")


def test_penalised_reward_subtracts_lambda_per_harmful_pick(worlds):
    cfg = dyn_config(reward="penalised", harm_lambda=7.0)
    params = E.make_params(worlds[1], cfg)
    _, st = jax.jit(jax.vmap(E.reset_user, in_axes=(0, None)))(jnp.arange(64), params)
    slate = jnp.argsort(-worlds[1].harmful.astype(jnp.int32))[:cfg.env.slate_size]  # harmful items first
    _, st2, reward, _, _, info = jax.jit(jax.vmap(E.step_env, in_axes=(0, 0, None, None)))(
        jax.random.split(jax.random.PRNGKey(2), 64), st, slate, params)
    harm = np.asarray(info["dynamics"].harm_pick)
    assert harm.any() and not harm.all()
    np.testing.assert_allclose(np.asarray(reward), np.asarray(info["feedback"]).mean(1) - 7.0 * harm, atol=1e-6)
    # the exit rule and the session return read the feedback, the return the penalised reward
    np.testing.assert_allclose(np.asarray(st2.ret), np.asarray(reward), atol=1e-6)


@pytest.mark.parametrize("kind", [pytest.param(k, marks=() if k in ("hrl", "a2c") else pytest.mark.slow)
                                  for k in ("hrl", "a2c", "td3", "dnair", "sac4ir", "bcq", "mofir", "dorl", "fcpo")])
def test_every_agent_trains_and_is_evaluated_under_the_dynamics(kind, worlds):
    """A few updates of each agent in the drifting world with the penalised reward: finite
    training logs, and the test protocol's row carries the harm paper's metrics."""
    from purerec.config import apply_overrides
    from purerec.run.evaluation import test_protocol
    from purerec.run.loop import init_key, make_train, stage1_key
    from test_benchmark_protocol import _tiny

    cfg = apply_overrides(_tiny(kind), {"env.dynamics": "attraction", "attraction.reward": "penalised",
                                        "attraction.harm_lambda": 2.0, "eval.n_sessions": 16, "eval.repeats": 1})
    fns = make_train(cfg, E.make_params(worlds[0], cfg))

    def run(key):
        frozen, _ = fns.stage1(stage1_key(key))
        s0 = fns.init(init_key(key), frozen)
        s2, logs = jax.lax.scan(lambda s, _: fns.update(frozen, s), s0, None, length=2)
        return logs, fns.agent.policy_params(frozen, s2)

    logs, pp = jax.jit(run)(jax.random.PRNGKey(5))
    assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(logs))
    test_params = E.make_params(worlds[1], cfg)
    row = test_protocol(lambda k, o, s, p, pp_, c: fns.agent.act.greedy(k, o, s, p, pp_, c), test_params, cfg.eval,
                        pp, fns.agent.init_carry(16))
    for m in ("CTR", "harm", "harm_picks", "J", "drift"):
        assert np.isfinite(row[m])
    assert 0 < row["CTR"] < 1 and 0 <= row["harm"] < 1 and row["drift"] > 0


def test_stationary_command_refuses_a_static_world_and_bad_numbers(capsys):
    from purerec.cli import main

    assert main(["stationary", "--env", "envs/kuairec.toml"]) == 2
    assert "env.dynamics" in capsys.readouterr().err
    assert main(["stationary", "--users", "0"]) == 2
    assert "--users" in capsys.readouterr().err
    assert main(["stationary", "--lambdas", "x"]) == 2
    assert "--lambdas" in capsys.readouterr().err
    assert main(["stationary", "--help"]) == 0
    assert "grad" in capsys.readouterr().out


def test_the_harm_papers_reference_rows(worlds):
    """With the dynamics on, the reference table adds unif_safe, u0_topk and myopic_topk; none
    shows a harmful item; without attraction myopic = u0 exactly, with it they differ."""
    from purerec.sim.policies import DYNAMICS_REFERENCE_POLICIES, reference_policies

    assert set(reference_policies(small_config())) == {"random", "most_popular", "balanced", "oracle",
                                                       "balanced_oracle"}
    assert set(DYNAMICS_REFERENCE_POLICIES) <= set(reference_policies(dyn_config()))
    harmful = np.asarray(worlds[1].harmful)
    trajs = {}
    for alpha in (0.0, 0.5):
        cfg = dyn_config(alpha_h=alpha, alpha_nh=alpha / 2)
        for name, pol in DYNAMICS_REFERENCE_POLICIES.items():
            trajs[alpha, name] = t = _traj(cfg, worlds[1], pol, n=32)
            assert not harmful[np.asarray(t["slates"])].any()
    for k in ("slates", "reward", "true_reward"):
        np.testing.assert_array_equal(np.asarray(trajs[0.0, "u0_topk"][k]), np.asarray(trajs[0.0, "myopic_topk"][k]))
    assert not np.array_equal(np.asarray(trajs[0.5, "u0_topk"]["slates"]), np.asarray(trajs[0.5, "myopic_topk"]["slates"]))
