"""The agent at evaluation time: the manager's decision schedule and the action rules.

An initialised HRL agent (no purifier, so its greedy policy is a deterministic function of the
observation) on the small world, with ``manager_interval = 3`` and a wide manager so that sampled
goals visibly differ between decisions.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import small_config
from purerec.agents.nets import Manager
from purerec.config import EvalConfig
from purerec.data.datasets import get_worlds
from purerec.run import evaluation
from purerec.run.loop import make_train
from purerec.sim import env as E, metrics as M
from purerec.sim.env import make_params
from purerec.sim.rollout import rollout
from purerec.state.purifier import make_observer

M_INTERVAL = 3
N = 48  # sessions
T = 24  # steps of the step-by-step loop


@pytest.fixture(scope="module")
def hrl(small_worlds):
    """The initialised agent's pieces: cfg, agent, policy params, test params, train params, frozen, state."""
    cfg = small_config()
    cfg = dataclasses.replace(
        cfg,
        agent=dataclasses.replace(cfg.agent, kind="hrl", manager_interval=M_INTERVAL, manager_std=1.0),
        train=dataclasses.replace(cfg.train, num_envs=16, rollout_len=8, stage1_sessions=32),
        encoder=dataclasses.replace(cfg.encoder, train_steps=30),
        dsrm=dataclasses.replace(cfg.dsrm, steps=3, train_steps=10, hidden=32),
    ).validate()
    train_w, test_w = small_worlds
    p_train, p_test = make_params(train_w, cfg), make_params(test_w, cfg)
    fns = make_train(cfg, p_train)
    key = jax.random.PRNGKey(0)
    frozen, _ = jax.jit(fns.stage1)(key)
    state = jax.jit(fns.init)(key, frozen)
    pp = fns.agent.policy_params(frozen, state)
    return cfg, fns.agent, pp, p_test, p_train, frozen, state


@pytest.fixture(scope="module")
def agent_setup(hrl):
    return hrl[:4]


def _vpolicy(agent, sample):
    act = agent.act.sample if sample else agent.act.greedy
    return jax.jit(jax.vmap(act, in_axes=(0, 0, 0, None, None, 0)))


def _step_by_step(agent_setup, sample: bool, seed: int = 0):
    """Per step: t of the observation acted on, goal before / after, slate, number of popular items."""
    cfg, agent, pp, params = agent_setup
    act = _vpolicy(agent, sample)
    key = jax.random.PRNGKey(seed)
    obs, state = E.batch_reset(key, params, N)
    u = jnp.zeros((N, 2))
    out = []
    step = jax.jit(E.batch_step)
    for i in range(T):
        k_act, k_env = jax.random.split(jax.random.fold_in(key, i))
        slates, u_new = act(jax.random.split(k_act, N), obs, state, params, pp, u)
        out.append({"t": np.asarray(obs.t), "u_old": np.asarray(u), "u": np.asarray(u_new),
                    "slates": np.asarray(slates), "n_pop": np.asarray(params.world.popular)[np.asarray(slates)].sum(-1),
                    "obs": obs})
        obs, state, *_ = step(k_env, state, slates, params)
        u = u_new
    return out


def test_goal_changes_only_at_decision_steps(agent_setup):
    steps = _step_by_step(agent_setup, sample=True)
    ts = np.stack([s["t"] for s in steps])
    assert ts.max() >= 2 * M_INTERVAL  # several decisions per session were seen
    n_decide = n_hold = 0
    for s in steps:
        same = np.all(s["u"] == s["u_old"], axis=-1)
        decide = s["t"] % M_INTERVAL == 0
        # Held exactly between decisions...
        assert same[~decide].all(), s["t"][~decide & ~same]
        # ... and re-drawn (a continuous sample: never equal) at each decision.
        assert not same[decide].any(), s["t"][decide & same]
        n_decide += decide.sum()
        n_hold += (~decide).sum()
    assert n_decide > 0 and n_hold > 0


def test_slate_split_follows_the_held_goal(agent_setup):
    """With the grouped slate rule, a slate's long-tail count is round(K * z_fair / (z_acc + z_fair))."""
    cfg, _, _, params = agent_setup
    k = params.slate_size
    counts = set()
    for s in _step_by_step(agent_setup, sample=True, seed=1):
        z = 1.0 / (1.0 + np.exp(-s["u"].astype(np.float64)))
        x = k * z[:, 1] / (z[:, 0] + z[:, 1])
        clear = np.abs(x - np.floor(x) - 0.5) > 1e-4  # not at a rounding boundary
        want = np.clip(np.round(x), 0, k)
        np.testing.assert_array_equal((k - s["n_pop"])[clear], want[clear])
        counts.update((k - s["n_pop"]).tolist())
    assert len(counts) >= 3  # the goals spread the split


def test_greedy_goal_is_the_manager_mean(agent_setup):
    cfg, agent, pp, params = agent_setup
    frozen, _, manager_actor = pp[:3]
    for s in _step_by_step(agent_setup, sample=False)[: 2 * M_INTERVAL + 1]:
        _, x = make_observer(cfg).inputs(frozen, jax.random.PRNGKey(9), s["obs"], params)  # no purifier
        mean, _ = Manager(cfg.agent.hidden, cfg.agent.manager_std).apply(manager_actor, x)
        decide = s["t"] % M_INTERVAL == 0
        np.testing.assert_allclose(s["u"][decide], np.asarray(mean)[decide], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(s["u"][~decide], s["u_old"][~decide])


def test_evaluation_rollout_keeps_the_decision_schedule(agent_setup):
    """The rollout the test protocol runs (agent.act + carry): within each session's first
    episode, the number of popular items per slate is constant between decisions, and it does
    change at decisions."""
    cfg, agent, pp, params = agent_setup
    users = jnp.arange(N)
    traj = rollout(jax.random.PRNGKey(3), agent.act.sample, params, N, params.max_len, pp, users,
                   agent.init_carry(N))
    n_pop = np.asarray(traj["n_popular"])
    active = np.asarray(M.first_session_mask(traj["done"]))
    changes_at = np.zeros(M_INTERVAL, int)
    for b in range(N):
        L = int(active[:, b].sum())
        for t in range(1, L):
            if n_pop[t, b] != n_pop[t - 1, b]:
                changes_at[t % M_INTERVAL] += 1
    assert changes_at[1:].sum() == 0, changes_at
    assert changes_at[0] > N // 4, changes_at  # the goal does change at decisions


def test_sample_and_greedy_slates_differ_greedy_is_deterministic(agent_setup):
    cfg, agent, pp, params = agent_setup
    obs, state = E.batch_reset(jax.random.PRNGKey(5), params, N)
    u = jnp.zeros((N, 2))
    k1, k2 = (jax.random.split(jax.random.PRNGKey(s), N) for s in (1, 2))
    greedy, sample = _vpolicy(agent, False), _vpolicy(agent, True)
    g1, g2 = (np.asarray(greedy(k, obs, state, params, pp, u)[0]) for k in (k1, k2))
    s1, s2 = (np.asarray(sample(k, obs, state, params, pp, u)[0]) for k in (k1, k2))
    np.testing.assert_array_equal(g1, g2)  # greedy: the same slates whatever the key
    assert (s1 != s2).any(axis=-1).mean() > 0.5  # sampling: most sessions' slates change with the key
    assert (s1 != g1).any(axis=-1).mean() > 0.5  # and differ from the greedy slates


def test_eval_action_changes_a_stochastic_agents_metrics(agent_setup):
    cfg, agent, pp, params = agent_setup
    ev = EvalConfig(n_sessions=N, repeats=1, seed=4)
    carry = jnp.zeros((N, 2))
    g1 = evaluation.test_protocol(agent.act.greedy, params, ev, pp, carry)
    g2 = evaluation.test_protocol(agent.act.greedy, params, ev, pp, carry)
    s1 = evaluation.test_protocol(agent.act.sample, params, ev, pp, carry)
    assert g1 == g2
    assert s1 != g1
    assert s1["AD"] != g1["AD"] and s1["R_cum"] != g1["R_cum"]


def test_evaluate_run_rows_are_each_action_rules(hrl, tmp_path):
    """``experiment.evaluate_run``'s test rows: the greedy row's metrics are ``act.greedy``'s under
    the test protocol, the sample row's ``act.sample``'s (recomputed here), and the two differ.
    (Comparing whole rows cannot show a swap: the greedy row alone carries the fidelity keys.)"""
    from purerec.run.experiment import evaluate_run

    cfg, agent, pp, p_test, p_train, frozen, state = hrl
    cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, n_sessions=N, repeats=1, seed=4),
                              train=dataclasses.replace(cfg.train, seeds=(1,))).validate()
    one_seed = lambda t: jax.tree.map(lambda a: a[None], t)  # the run's seed axis, one seed
    res = evaluate_run(cfg, agent, one_seed(frozen), one_seed(state), p_train, p_test,
                       str(tmp_path / "metrics.jsonl"))
    n = evaluation.n_test_sessions(cfg.eval, p_test)
    seed = str(cfg.train.seeds[0])
    rows = {}
    for rule in ("greedy", "sample"):
        rows[rule] = evaluation.test_protocol(getattr(agent.act, rule), p_test, cfg.eval, pp, agent.init_carry(n))
        got = res["test"][rule]["per_seed"][seed]
        for name in evaluation.REPORT_METRICS:
            np.testing.assert_allclose(got[name], rows[rule][name], rtol=1e-6, err_msg=f"{rule} {name}")
    assert rows["greedy"]["AD"] != rows["sample"]["AD"] and rows["greedy"]["R_cum"] != rows["sample"]["R_cum"]
