"""A2C and TD3 baselines: determinism, finiteness, learning signals, TD3's delayed actor and
replay warm-up, and acting on a world with another item set."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import small_config
from purerec.agents import get as get_spec
from purerec.config import Config, ConfigError
from purerec.run.hyper import hyper_of
from purerec.sim.env import make_params
from purerec.state.stage1 import make_stage1

KINDS = ("a2c", "td3")


def tiny_config(kind: str, **sections) -> Config:
    cfg = small_config()
    cfg = dataclasses.replace(
        cfg,
        agent=dataclasses.replace(cfg.agent, kind=kind),
        train=dataclasses.replace(cfg.train, num_envs=32, rollout_len=8, stage1_sessions=128, seeds=(1,)),
        encoder=dataclasses.replace(cfg.encoder, train_steps=100),
        replay=dataclasses.replace(cfg.replay, capacity=4096, min_size=256, batch_size=64, grad_steps=8),
    )
    for name, changes in sections.items():
        cfg = dataclasses.replace(cfg, **{name: dataclasses.replace(getattr(cfg, name), **changes)})
    return cfg.validate()


@pytest.fixture(scope="module")
def worlds_params(small_worlds):
    cfg = tiny_config("a2c")
    return make_params(small_worlds[0], cfg), make_params(small_worlds[1], cfg)


@pytest.fixture(scope="module")
def frozen(worlds_params):
    # Stage I does not read the agents' sections: one Frozen serves both kinds.
    return jax.jit(make_stage1(tiny_config("a2c"), worlds_params[0]))(jax.random.key(0))[0]


def build(kind, p_train, **sections):
    cfg = tiny_config(kind, **sections)
    return cfg, get_spec(kind).make(cfg, p_train)


def updates_fn(agent, frozen, n):
    """One jitted program: n updates from a state."""
    return jax.jit(lambda S: jax.lax.scan(lambda S, _: agent.update(frozen, S), S, None, length=n))


def leaves_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module", params=KINDS)
def trained(request, worlds_params, frozen):
    """12 updates, run twice from the same state. TD3 with gamma 0: its critics regress the
    reward, so their loss must fall (A2C keeps its gamma)."""
    kind = request.param
    cfg, agent = build(kind, worlds_params[0])
    hyper = hyper_of(cfg)
    if kind == "td3":
        hyper = {**hyper, "td3.gamma": jnp.float32(0.0)}
    S0 = jax.jit(agent.init)(jax.random.key(3), frozen, hyper)
    run = updates_fn(agent, frozen, 12)
    S1, logs1 = run(S0)
    _, logs2 = run(S0)
    return kind, agent, S1, jax.device_get(logs1), jax.device_get(logs2)


def test_update_is_deterministic_finite_and_critic_learns(trained):
    kind, agent, S1, logs1, logs2 = trained
    assert set(logs1) >= {"Len", "R_cum", "R_each", "AD", "Fair", "episodes", "tail_share", "critic_loss",
                          "actor_loss"}
    for k in logs1:
        assert logs1[k].shape == (12,) and logs1[k].dtype == np.float32, k
        assert np.isfinite(logs1[k]).all(), k
        np.testing.assert_array_equal(logs1[k], logs2[k], err_msg=k)
    assert int(S1.update) == 12
    c = logs1["critic_loss"]
    assert c[-3:].mean() < 0.7 * c[:3].mean(), c


@pytest.fixture(scope="module")
def td3_step(worlds_params, frozen):
    """TD3 with 32 x 8 = 256 transitions per update and min_size 512 (the first update only fills
    the buffer), then one gradient step per update; the actor and the targets move on every 2nd
    one only. (cfg, agent, jitted init, jitted single update)."""
    cfg, agent = build("td3", worlds_params[0], replay={"min_size": 512, "grad_steps": 1}, td3={"policy_delay": 2})
    return cfg, agent, jax.jit(agent.init), jax.jit(lambda S: agent.update(frozen, S))


def test_td3_waits_for_the_buffer_and_delays_the_actor(td3_step, frozen):
    cfg, agent, init, step = td3_step
    S0 = init(jax.random.key(5), frozen, hyper_of(cfg))
    S1, logs1 = step(S0)
    assert float(logs1["learning"]) == 0.0 and int(S1.grad_step) == 0
    assert leaves_equal(S1.critic.params, S0.critic.params) and leaves_equal(S1.actor.params, S0.actor.params)
    S2, logs2 = step(S1)  # gradient step 1 (not a multiple of 2): critics move, actor and targets wait
    assert float(logs2["learning"]) == 1.0 and int(S2.grad_step) == 1
    assert not leaves_equal(S2.critic.params, S1.critic.params)
    assert leaves_equal(S2.actor.params, S1.actor.params) and leaves_equal(S2.actor.opt, S1.actor.opt)
    assert leaves_equal(S2.actor_target, S1.actor_target) and leaves_equal(S2.critic_target, S1.critic_target)
    S3, _ = step(S2)  # gradient step 2: the actor and all three targets move
    assert not leaves_equal(S3.actor.params, S2.actor.params)
    assert not leaves_equal(S3.actor_target, S2.actor_target)
    assert not leaves_equal(S3.critic_target, S2.critic_target)
    S4, _ = step(S3)  # step 3: the actor waits again, the critics move
    assert leaves_equal(S4.actor.params, S3.actor.params)
    assert not leaves_equal(S4.critic.params, S3.critic.params)


def np_mlp(p, x, n_hidden: int = 2):
    """The project's tanh MLP / critic in float64 NumPy: Dense_0 .. Dense_{n_hidden}, tanh between."""
    h = np.asarray(x, np.float64)
    for i in range(n_hidden + 1):
        h = h @ np.asarray(p[f"Dense_{i}"]["kernel"], np.float64) + np.asarray(p[f"Dense_{i}"]["bias"], np.float64)
        h = np.tanh(h) if i < n_hidden else h
    return h


def test_td3_target_is_the_smoothed_clipped_double_q_target(td3_step, worlds_params, frozen):
    """gamma 0.9 (the other tests use 0, where no bootstrap term is seen): the second update's one
    gradient step regresses on y = r + gamma (1 - done) min(Q1', Q2')(x', a~), a~ = actor'(x') +
    clip(N(0, policy_noise), +-noise_clip): its logged mean over the minibatch of 64 against
    NumPy (the target critics evaluated in float64 from their parameters). Target smoothing shows:
    with policy_noise 0 the logged target is the unsmoothed one, and the two differ."""
    from purerec.agents import replay
    from purerec.agents.a2c import HyperActor
    from purerec.state.purifier import make_observer

    cfg, agent, init, step = td3_step
    p_train, _ = worlds_params
    actor = HyperActor(make_observer(cfg).state_dim, p_train.world.item_emb.shape[1], cfg.td3.hidden,
                       cfg.agent.pop_scale)
    buffer = replay.make_buffer(cfg.replay)
    h = {**hyper_of(cfg), "td3.gamma": jnp.float32(0.9), "td3.policy_noise": jnp.float32(0.5),
         "td3.noise_clip": jnp.float32(0.3)}

    def hand_target(S1, S2, noise_std, clip):
        # The update's keys: (key, k_roll, k_last, k_learn) = split(S.key, 4); one key per gradient
        # step from k_learn, each split into (minibatch, smoothing noise). Targets: S1's (no step yet).
        k_learn = jax.random.split(S1.key, 4)[3]
        k_s, k_n = jax.random.split(jax.random.split(k_learn, 1)[0])
        b = jax.device_get(buffer.sample(S2.buffer, k_s).experience)
        a_next = np.asarray(actor.apply(S1.actor_target, jnp.asarray(b["x2"])), np.float64)
        a_next = a_next + np.clip(noise_std * np.asarray(jax.random.normal(k_n, a_next.shape), np.float64), -clip, clip)
        xa = np.concatenate([b["x2"], a_next], axis=1)
        q1 = np_mlp(S1.critic_target["q1"]["params"]["Critic_0"], xa)[:, 0]
        q2 = np_mlp(S1.critic_target["q2"]["params"]["Critic_0"], xa)[:, 0]
        assert np.any(b["done"] == 0)  # the bootstrap term is present
        return float(np.mean(b["r"] + 0.9 * (1.0 - b["done"]) * np.minimum(q1, q2)))

    means = {}
    for noise in (0.5, 0.0):
        S1, _ = step(init(jax.random.key(5), frozen, {**h, "td3.policy_noise": jnp.float32(noise)}))
        S2, logs = step(S1)
        assert float(logs["learning"]) == 1.0 and int(S2.grad_step) == 1
        want = hand_target(S1, S2, noise, 0.3)
        np.testing.assert_allclose(float(logs["target_mean"]), want, rtol=1e-5, atol=1e-6, err_msg=str(noise))
        means[noise] = want
    # Same minibatch (its key does not depend on the noise): the smoothing alone moves the target.
    assert abs(means[0.5] - means[0.0]) > 1e-3, means


def test_td3_replay_next_input_is_the_next_steps_input(td3_step, worlds_params, frozen):
    """The replay alignment x'[i] = the next step's input, over two updates (512 transitions)."""
    from offpolicy_checks import check_next_inputs

    cfg, agent, init, step = td3_step
    S = init(jax.random.key(5), frozen, hyper_of(cfg))
    for _ in range(2):
        S, _ = step(S)
    assert check_next_inputs(cfg, frozen, worlds_params[0], S, "x2") == 512


def test_acts_on_a_world_with_another_item_set(trained, worlds_params, frozen):
    from purerec.sim.env import batch_reset

    kind, agent, S, _, _ = trained
    p_train, p_test = worlds_params
    assert p_test.world.n_items != p_train.world.n_items
    n, K = 16, p_test.slate_size
    obs, env_state = batch_reset(jax.random.key(7), p_test, n)
    pp = agent.policy_params(frozen, S)
    carry = agent.init_carry(n)
    greedy = jax.jit(jax.vmap(agent.act.greedy, in_axes=(0, 0, 0, None, None, 0)))
    sample = jax.jit(jax.vmap(agent.act.sample, in_axes=(0, 0, 0, None, None, 0)))
    keys = lambda seed: jax.random.split(jax.random.key(seed), n)
    g1, c1 = greedy(keys(1), obs, env_state, p_test, pp, carry)
    g2, _ = greedy(keys(2), obs, env_state, p_test, pp, carry)
    s1, _ = sample(keys(1), obs, env_state, p_test, pp, carry)
    s2, _ = sample(keys(2), obs, env_state, p_test, pp, carry)
    for slates in (g1, s1):
        slates = np.asarray(slates)
        assert slates.shape == (n, K) and slates.dtype == np.int32
        assert ((slates >= 0) & (slates < p_test.world.n_items)).all()
        assert all(len(set(row)) == K for row in slates)
    np.testing.assert_array_equal(g1, g2)  # greedy ignores the key
    assert not np.array_equal(s1, s2)  # sample explores
    assert c1.shape == (n,)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_learning_beats_frozen_learner(kind, worlds_params, frozen):
    """Probe: Stage I's query zeroed, so the warm-started actor ranks items by -kappa * popularity
    (the least popular first, a poor policy). Trained, the agent's reward per step must clearly
    beat the same agent with learning rates 0."""
    p_train, _ = worlds_params
    head = jax.tree.map(jnp.zeros_like, frozen.feedback_head)
    probe = frozen.replace(feedback_head=head)
    sections = {"a2c": {"action_std": 0.3}} if kind == "a2c" else {"td3": {"explore_std": 0.3}}
    cfg, agent = build(kind, p_train, **sections)
    hyper = hyper_of(cfg)
    off = {**hyper, f"{kind}.actor_lr": jnp.float32(0.0), f"{kind}.critic_lr": jnp.float32(0.0)}
    on = {**hyper, f"{kind}.actor_lr": jnp.float32(3e-3)}
    r = {}
    run = updates_fn(agent, probe, 25)
    for name, h in (("on", on), ("off", off)):
        _, logs = run(agent.init(jax.random.key(8), probe, h))
        r[name] = float(np.mean(logs["R_each"][-5:]))
    assert r["on"] > r["off"] + 0.05, r


@pytest.mark.parametrize("kind", KINDS)
def test_no_session_shards(kind, worlds_params):
    with pytest.raises(ConfigError, match="train.session_shards"):
        get_spec(kind).make(tiny_config(kind), worlds_params[0], axis_name="shards")
