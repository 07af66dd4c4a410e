"""The contract every registered agent keeps, parametrized over ``purerec.agents.REGISTRY``.

* A probe world with a known best slate (four items every user likes, two popular and two
  long-tail, among 40): each agent, trained briefly, finds it (greedy R_each near the optimum,
  far above random exposure).
* A run (``purerec.run.experiment.run``) keeps its whole-run contract: ``tests/test_contract_run.py``.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import small_config
from purerec.agents import REGISTRY
from purerec.config import apply_overrides
from purerec.run import evaluation
from purerec.run.loop import make_train
from purerec.sim.env import make_params
from purerec.sim.policies import REFERENCE_POLICIES
from purerec.sim.world import World

KINDS = list(REGISTRY)
N_ITEMS, N_USERS, K = 40, 24, 4
BEST = np.array([0, 1, 20, 21])  # items 0-7 are popular; 0, 1 popular and 20, 21 long-tail


def probe_world() -> World:
    """Every user likes exactly the BEST items (true response sigmoid(3) vs sigmoid(-3)); the
    visible item embedding carries that in its first coordinate, with noise in the others."""
    rng = np.random.default_rng(0)
    good = np.isin(np.arange(N_ITEMS), BEST)
    true_item = np.stack([np.where(good, 1.0, -1.0), np.zeros(N_ITEMS)], 1)
    true_user = np.tile([3.0, 1.0], (N_USERS, 1))
    emb = np.concatenate([np.where(good, 1.0, -1.0)[:, None], 0.3 * rng.normal(size=(N_ITEMS, 3))], 1)
    pop = np.where(np.arange(N_ITEMS) < 8, 100.0, 10.0)
    r = 1 / (1 + np.exp(-(true_item @ true_user[0])))
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    return World(true_user=f32(true_user), true_item=f32(true_item), item_emb=f32(emb),
                 item_tags=jnp.asarray(rng.random((N_ITEMS, 2)) < 0.5), item_pop=f32(pop),
                 popular=jnp.asarray(np.arange(N_ITEMS) < 8), item_log_reward=f32(r), item_log_true=f32(r),
                 user_ids=jnp.arange(N_USERS), item_ids=jnp.arange(N_ITEMS))


def probe_config(kind: str):
    cfg = small_config()
    return apply_overrides(cfg, {
        "agent.kind": kind, "env.slate_size": K, "env.obs_window": 5, "env.max_len": 10, "env.exit_rule": "none",
        "feedback.conformity": 0.0, "feedback.noise_std": 0.01, "train.num_envs": 32, "train.rollout_len": 10,
        "train.total_updates": 20, "train.chunk_updates": 10, "train.stage1_sessions": 64, "train.seeds": [0],
        "encoder.train_steps": 100, "dsrm.steps": 3, "dsrm.train_steps": 50, "dsrm.hidden": 32,
        "replay.capacity": 4096, "replay.batch_size": 64, "replay.min_size": 256, "replay.grad_steps": 32,
        "eval.n_sessions": N_USERS, "eval.repeats": 1,
        # BCQ keeps to the logging policy's support: items at least tau x as likely as its K-th most
        # likely item. The probe's long-tail best items are 11/101 as likely as a popular one, so
        # below the default tau = 0.6; at 0.05 they are in reach (the test is about finding them).
        "bcq.threshold": 0.05}).validate()


# A finding, not a pass: MOFIR (our reading) starts at the probe's best slate (warm-started query,
# grouped slate at share 0.5: greedy R_each 0.95 with its actor frozen) and DDPG's actor drifts away
# from it (0.73 after 20 updates; 0.75 with actor_lr 1e-5). strict: the day it passes, this fails.
# The fast tier probes one hierarchical on-policy learner (HRL), one flat actor-critic (A2C) and one
# off-policy learner (TD3); the other agents' probes (learning margins, 10-70 s each; MOFIR's xfail)
# run in the slow tier (CI time; every agent still trains for an update or two in the fast tier).
FAST_PROBE_KINDS = ("hrl", "a2c", "td3")
PROBE_KINDS = [pytest.param(k, marks=(pytest.mark.xfail(strict=True, reason="MOFIR's actor drifts from the best slate"),
                                      pytest.mark.slow))
               if k == "mofir" else k if k in FAST_PROBE_KINDS else pytest.param(k, marks=pytest.mark.slow)
               for k in KINDS]


@pytest.mark.parametrize("kind", PROBE_KINDS)
def test_every_agent_finds_the_best_slate_of_a_probe_world(kind):
    cfg = probe_config(kind)
    params = make_params(probe_world(), cfg)
    fns = make_train(cfg, params)
    key = jax.random.PRNGKey(0)
    frozen, state, logs, _ = jax.jit(fns.train)(key)
    assert all(np.isfinite(np.asarray(v)).all() for v in logs.values())
    row = evaluation.test_protocol(fns.agent.act.greedy, params, cfg.eval, fns.agent.policy_params(frozen, state),
                                   fns.agent.init_carry(N_USERS))
    rand = evaluation.test_protocol(REFERENCE_POLICIES["random"], params, cfg.eval)
    best = 1 / (1 + np.exp(-3.0))  # every slot a liked item
    assert rand["R_each"] < 0.25 * best
    assert row["R_each"] > 0.8 * best, (kind, row["R_each"], best)
