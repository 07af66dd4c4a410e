"""DNaIR and SAC4IR baselines (``purerec.agents.dnair`` / ``purerec.agents.sac4ir``): novelty bonus,
duplicate-free exploration, determinism, finite logs and falling critic losses, the temperature's
direction, acting on a world with another item count, and learning against a frozen learner."""

from __future__ import annotations

import dataclasses
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import small_config
from offpolicy_checks import check_next_inputs
from purerec.agents import get as get_spec
from purerec.agents.dnair import distinct_outside, epsilon_slate, novelty
from purerec.config import Config, ConfigError
from purerec.run.hyper import hyper_of
from purerec.sim.env import batch_reset, make_params
from purerec.state.stage1 import make_stage1

N_UPDATES = 12


def agent_config(kind: str) -> Config:
    cfg = small_config()
    return dataclasses.replace(
        cfg,
        agent=dataclasses.replace(cfg.agent, kind=kind),
        train=dataclasses.replace(cfg.train, num_envs=64, rollout_len=16, seeds=(1,), stage1_sessions=256,
                                  total_updates=N_UPDATES, chunk_updates=N_UPDATES, run_dir="unused"),
        encoder=dataclasses.replace(cfg.encoder, train_steps=200),
        replay=dataclasses.replace(cfg.replay, capacity=8192, batch_size=128, grad_steps=16, min_size=1024),
    ).validate()


@pytest.fixture(scope="module")
def worlds_params(small_worlds):
    cfg = agent_config("dnair")
    return make_params(small_worlds[0], cfg), make_params(small_worlds[1], cfg)


@pytest.fixture(scope="module")
def frozen(worlds_params):
    # Stage I does not depend on the agent kind (neither agent purifies its state).
    return jax.jit(make_stage1(agent_config("dnair"), worlds_params[0]))(jax.random.key(0))[0]


def make_runner(kind: str, p_train, frozen):
    cfg = agent_config(kind)
    agent = get_spec(kind).make(cfg, p_train)

    @jax.jit
    def run(key, hyper):
        s = agent.init(key, frozen, hyper)
        return jax.lax.scan(lambda s, _: agent.update(frozen, s), s, None, length=N_UPDATES)

    return cfg, agent, run


@pytest.fixture(scope="module")
def dnair(worlds_params, frozen):
    return make_runner("dnair", worlds_params[0], frozen)


@pytest.fixture(scope="module")
def sac4ir(worlds_params, frozen):
    return make_runner("sac4ir", worlds_params[0], frozen)


def test_novelty_bonus_matches_numpy():
    pop = np.array([0.0, 10.0, 3.0, 100.0, 40.0], np.float32)
    log_reward = np.array([0.0, 0.5, 1.0, 0.8, 0.25], np.float32)
    world = types.SimpleNamespace(item_pop=jnp.asarray(pop), item_log_reward=jnp.asarray(log_reward))
    q = (log_reward * pop + 1) / (pop + 2)
    pop01 = (pop - pop.min()) / (pop.max() - pop.min())
    expect = q / np.log10(pop01 + 1.1)
    np.testing.assert_allclose(novelty(world), expect, rtol=1e-5)
    slate = np.array([3, 0, 2])
    np.testing.assert_allclose(novelty(world)[slate].mean(), np.mean(expect[slate]), rtol=1e-5)
    # the never-exposed item: q = 1/2 over log10(1.1)
    np.testing.assert_allclose(expect[0], 0.5 / math.log10(1.1), rtol=1e-6)


def test_exploration_is_duplicate_free_and_outside_top_k():
    n, k = 20, 10
    excluded = jnp.array([19, 3, 7, 0, 12, 5, 8, 15, 1, 10], jnp.int32)
    drawn = np.asarray(distinct_outside(jax.random.key(3), excluded, n))
    # with n = 2K the draws are exactly the complement
    assert sorted(drawn.tolist()) == sorted(set(range(n)) - set(excluded.tolist()))
    q = jax.random.normal(jax.random.key(1), (300,))
    top = set(np.asarray(jax.lax.top_k(q, k)[1]).tolist())
    for seed in range(5):
        s = np.asarray(epsilon_slate(jax.random.key(seed), q, k, jnp.float32(1.0)))
        assert len(set(s.tolist())) == k and not (set(s.tolist()) & top) and s.min() >= 0 and s.max() < 300
        half = np.asarray(epsilon_slate(jax.random.key(seed), q, k, jnp.float32(0.5)))
        assert len(set(half.tolist())) == k
    np.testing.assert_array_equal(epsilon_slate(jax.random.key(0), q, k, jnp.float32(0.0)), jax.lax.top_k(q, k)[1])
    # uniform over the complement: every non-top item gets drawn
    many = jax.vmap(lambda kk: distinct_outside(kk, jnp.arange(k), 40))(jax.random.split(jax.random.key(5), 400))
    counts = np.bincount(np.asarray(many).ravel(), minlength=40)
    assert counts[:k].sum() == 0 and counts[k:].min() > 60


@pytest.mark.parametrize("kind", ["dnair", "sac4ir"])
def test_session_shards_rejected(kind, worlds_params):
    with pytest.raises(ConfigError, match="session_shards"):
        get_spec(kind).make(agent_config(kind), worlds_params[0], axis_name="shards")


def _check_run(name, runner, critic_key, extra):
    cfg, agent, run = runner
    h = hyper_of(cfg)
    s, logs = run(jax.random.key(7), h)
    s2, logs2 = run(jax.random.key(7), h)
    for k in logs:  # same key -> identical numbers
        np.testing.assert_array_equal(np.asarray(logs[k]), np.asarray(logs2[k]), err_msg=k)
    for k, v in logs.items():
        v = np.asarray(v)
        assert v.shape == (N_UPDATES,) and np.all(np.isfinite(v)), k
    for k in ("Len", "R_cum", "R_each", "AD", "episodes", critic_key, *extra):
        assert k in logs, k
    assert np.all(np.asarray(logs[f"{name}_learned"]) == 1.0)  # B * T = 1024 = min_size: learns from update 1
    loss = np.asarray(logs[critic_key])
    assert loss[1:4].mean() < loss[0], loss
    return cfg, agent, s, logs


def test_dnair_update(dnair, worlds_params, frozen):
    cfg, agent, s, logs = _check_run("dnair", dnair, "dnair_loss", ("dnair_bonus", "dnair_reward_shaped"))
    # replay alignment: x'[i] is the next step's input (12 x 1024 transitions: the 8192-row ring wrapped)
    assert check_next_inputs(cfg, frozen, worlds_params[0], s, "x_next") == 8192
    # the shaped reward is the env reward plus novelty_weight x the slate's mean novelty
    np.testing.assert_allclose(np.asarray(logs["dnair_reward_shaped"]),
                               np.asarray(logs["R_each"]) + cfg.dnair.novelty_weight * np.asarray(logs["dnair_bonus"]),
                               rtol=1e-4)
    assert int(s.update) == N_UPDATES


def test_sac4ir_update(sac4ir, worlds_params, frozen):
    cfg, _, s, _ = _check_run("sac4ir", sac4ir, "sac4ir_critic_loss",
                              ("sac4ir_alpha", "sac4ir_entropy", "sac4ir_actor_loss"))
    assert check_next_inputs(cfg, frozen, worlds_params[0], s, "x_next") == 8192  # replay alignment


def test_sac4ir_temperature_direction(sac4ir):
    cfg, agent, run = sac4ir
    h = hyper_of(cfg)
    a0 = math.exp(cfg.sac4ir.init_log_alpha)
    h_fast = {**h, "sac4ir.alpha_lr": jnp.float32(3e-3)}
    _, logs = run(jax.random.key(1), h_fast)
    ent, alpha = np.asarray(logs["sac4ir_entropy"]), np.asarray(logs["sac4ir_alpha"])
    n = 400  # train world's items
    assert np.all(ent > cfg.sac4ir.target_entropy_ratio * math.log(n))  # near-uniform policy
    assert alpha[-1] < a0 and np.all(np.diff(alpha) < 0)  # entropy above the target: alpha falls
    # target = log N, above any policy's entropy: alpha rises
    _, logs = run(jax.random.key(1), {**h_fast, "sac4ir.target_entropy_ratio": jnp.float32(1.0)})
    alpha = np.asarray(logs["sac4ir_alpha"])
    assert alpha[-1] > a0 and np.all(np.diff(alpha) > 0)


@pytest.mark.parametrize("kind", ["dnair", "sac4ir"])
def test_act_on_test_world(kind, dnair, sac4ir, worlds_params, frozen):
    cfg, agent, run = dnair if kind == "dnair" else sac4ir
    p_train, p_test = worlds_params
    assert p_test.world.n_items != p_train.world.n_items
    s = jax.jit(agent.init)(jax.random.key(2), frozen, hyper_of(cfg))
    pp = agent.policy_params(frozen, s)
    obs, st = batch_reset(jax.random.key(4), p_test, 8)
    carry = agent.init_carry(8)
    keys = jax.random.split(jax.random.key(9), 8)
    for act, deterministic in ((agent.act.greedy, True), (agent.act.sample, False)):
        f = jax.jit(jax.vmap(act, in_axes=(0, 0, 0, None, None, 0)))
        slates, c = f(keys, obs, st, p_test, pp, carry)
        slates = np.asarray(slates)
        assert slates.shape == (8, cfg.env.slate_size) and slates.dtype == np.int32
        assert slates.min() >= 0 and slates.max() < p_test.world.n_items
        assert all(len(set(row.tolist())) == cfg.env.slate_size for row in slates)
        if deterministic:
            again, _ = f(jax.random.split(jax.random.key(10), 8), obs, st, p_test, pp, carry)
            np.testing.assert_array_equal(slates, np.asarray(again))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dnair", "sac4ir"])
def test_learning_beats_frozen_learner(kind, dnair, sac4ir):
    """Trained R_each over the last updates beats the same agent with learning rates 0
    (DNaIR without its novelty bonus, which trades R_each for long-tail exposure)."""
    cfg, agent, run = dnair if kind == "dnair" else sac4ir
    h = hyper_of(cfg)
    if kind == "dnair":
        h = {**h, "dnair.novelty_weight": jnp.float32(0.0), "dnair.lr": jnp.float32(3e-3)}
        frozen_h = {**h, "dnair.lr": jnp.float32(0.0)}
    else:
        h = {**h, "sac4ir.actor_lr": jnp.float32(1e-3), "sac4ir.critic_lr": jnp.float32(1e-3)}
        frozen_h = {**h, "sac4ir.actor_lr": jnp.float32(0.0), "sac4ir.critic_lr": jnp.float32(0.0),
                    "sac4ir.alpha_lr": jnp.float32(0.0)}
    _, logs = run(jax.random.key(3), h)
    _, logs0 = run(jax.random.key(3), frozen_h)
    trained, still = np.asarray(logs["R_each"])[-4:].mean(), np.asarray(logs0["R_each"])[-4:].mean()
    assert trained > still + 0.03, (trained, still)
