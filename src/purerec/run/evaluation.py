"""The evaluation protocols: one named protocol, the same for every agent and reference policy.

* ``test`` (``eval.protocol``; HG4PFG's isolated test, the authors' newest code): on the held-out
  test world, ``n_sessions`` **distinct** users (a random subset, capped at the world's users),
  each run from a fresh reset to its **first exit** (``max_len`` steps are rolled, later sessions
  of a slot are masked out by ``purerec.sim.metrics.first_session_mask``); ``repeats`` repeats, repeat
  r with key ``PRNGKey(eval.seed + r)`` (its own users, noise and exploration). A training seed's
  figure is the mean over its repeats; tables give mean +- std over training seeds.
* ``train_report`` (KuaiSim's report, what the DSRM-HRL tables most likely show): the mean of
  the last ``report_updates`` updates' training metrics (exploring rollouts on the train world).

The action rule (``eval.action``: ``greedy`` or ``sample``) is applied identically to every
agent: ``agent.act.greedy`` (each agent's deterministic rule: mean goals and actions, top-K of
Q, ...) or ``agent.act.sample`` (its training policy). Per-session memory (the HRL manager's goal,
held ``manager_interval`` steps) is carried as in training.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from purerec.config import env_sections, EVAL_WORLD_SECTIONS, view, world_sections

from purerec.run.sections import EvalConfig

from purerec.sim import env as E, metrics as M, platform as PL
from purerec.sim.rollout import rollout

REPORT_METRICS = ("Len", "R_each", "R_cum", "AD")


@partial(jax.jit, static_argnames=("ad_form",))
def metrics_of(traj, popular, ad_form: str = "exposure"):
    """Every table metric of one time-major trajectory (first session of each slot)."""
    return M.all_metrics(traj["reward"], traj["true_reward"], traj["done"], traj["slates"],
                         traj["n_popular"], popular, ad_form)


def with_dynamics(out: dict, traj: dict, params: E.EnvParams) -> dict:
    """``out`` plus the preference-dynamics metrics and the platform's long-term fairness figures
    (``purerec.sim.platform.end_stats`` over the rolled steps) when the trajectory has them."""
    if "dynamics" in traj:
        out = {**out, **M.dynamics_metrics(traj["dynamics"], traj["done"], params.harm_lambda)}
    if "platform" in traj:
        out = {**out, **PL.end_stats(traj["platform_end"], traj["platform"])}
    return out


def n_test_sessions(ev: EvalConfig, params: E.EnvParams) -> int:
    """``eval.n_sessions`` capped at the world's users (the sessions' users are distinct)."""
    return min(ev.n_sessions, params.world.n_users)


def test_metrics(policy: Callable, params: E.EnvParams, ev: EvalConfig, policy_params=None, carry=None):
    """Traceable test protocol: per-repeat metric arrays (leading axis ``repeats``).

    ``carry`` (per session, leading axis n) is the initial carry of a policy that has one. With
    users who come back changed (``params.persist``) the same users are also followed over
    ``params.horizon`` sessions each (``purerec.sim.metrics.horizon_metrics``).
    """
    n = n_test_sessions(ev, params)

    def one(r):
        key = jax.random.PRNGKey(ev.seed + r)
        k_users, k_run = jax.random.split(key)
        users = jax.random.permutation(k_users, params.world.n_users)[:n]
        traj = rollout(k_run, policy, params, n, params.max_len, policy_params, users, carry)
        out = with_dynamics(M.all_metrics(traj["reward"], traj["true_reward"], traj["done"], traj["slates"],
                                          traj["n_popular"], params.world.popular, ev.ad_form), traj, params)
        if params.persist:  # the same users followed over the horizon (their own random stream)
            ph = params.replace(same_user=True)
            tr_h = rollout(jax.random.fold_in(k_run, 1), policy, ph, n, params.horizon * params.max_len,
                           policy_params, users, carry)
            out.update(M.horizon_metrics(tr_h["true_reward"], tr_h["done"], tr_h["returns"], params.horizon))
        return out

    return jax.lax.map(one, jnp.arange(ev.repeats))


_test_metrics_jit = jax.jit(test_metrics, static_argnums=(0, 2))


def test_protocol(policy: Callable, params: E.EnvParams, ev: EvalConfig, policy_params=None,
                  carry=None) -> dict[str, float]:
    """The test protocol's row for one policy (one training seed): means over the repeats, and
    each metric's spread over the repeats as ``<metric>_repeat_std``."""
    per_rep = jax.device_get(_test_metrics_jit(policy, params, ev, policy_params, carry))
    row = {k: float(np.mean(v)) for k, v in per_rep.items()}
    row.update({f"{k}_repeat_std": float(np.std(per_rep[k])) for k in REPORT_METRICS})
    return row


def evaluate(key: jax.Array, policy: Callable, params: E.EnvParams, n_sessions: int,
             ad_form: str = "exposure", policy_params=None, users=None, carry=None) -> dict[str, float]:
    """The metrics of ``n_sessions`` complete sessions from one key (users drawn at random unless
    given): the building block, without the protocol's distinct users and repeats."""
    traj = rollout(key, policy, params, n_sessions, params.max_len, policy_params, users, carry)
    return {k: float(v) for k, v in with_dynamics(metrics_of(traj, params.world.popular, ad_form), traj,
                                                  params).items()}


def train_report(logs: dict, report_updates: int) -> dict[str, float]:
    """The ``train_report`` row of one seed: the mean of the last ``report_updates`` values of each
    training curve in ``logs`` (name -> per-update values)."""
    out = {}
    for k in REPORT_METRICS:
        if k in logs:
            v = np.asarray(logs[k], dtype=np.float64)
            out[k] = float(np.mean(v[-report_updates:]))
    return out


def seed_summary(per_seed: dict[str, dict[str, float]]) -> dict:
    """{"per_seed", "mean", "std"}: mean and (population) std over training seeds."""
    names = list(next(iter(per_seed.values())))
    mean = {k: float(np.mean([r[k] for r in per_seed.values()])) for k in names}
    std = {k: float(np.std([r[k] for r in per_seed.values()])) for k in names}
    return {"per_seed": per_seed, "mean": mean, "std": std}


def reference_rows(cfg, verbose: bool = False) -> dict[str, dict[str, float]]:
    """Every reference policy's test-protocol row on ``cfg``'s evaluation world (``eval.split``:
    the test world or the validation users). The rows depend only on
    the world, the dynamics and the protocol, so they are cached next to the worlds (best-effort: a
    cache that cannot be written is warned about and skipped)."""
    import dataclasses
    import hashlib
    import json
    import os

    from purerec.config import env_identity
    from purerec.core.atomic import atomic_write
    from purerec.data.datasets import _fingerprint, cache_dir, get_worlds, warn
    from purerec.sim.policies import REFERENCE_VERSION, reference_policies

    policies = reference_policies(env_sections(cfg))

    ev = dataclasses.asdict(cfg.eval)
    if ev["split"] == "test":  # the key of the rows cached before the validation split existed
        ev.pop("split")
    key = json.dumps([_fingerprint(world_sections(cfg)), dataclasses.asdict(cfg.feedback), env_identity(cfg),
                      ev, sorted(policies), REFERENCE_VERSION], sort_keys=True)
    path = os.path.join(cache_dir(world_sections(cfg)),
                        f"reference-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json")
    try:
        with open(path) as fh:
            cached = json.load(fh)
        return {name: cached[name] for name in policies}  # in the registry's order
    except (OSError, ValueError, KeyError):
        pass
    from purerec.data.validation import eval_world

    train, test = get_worlds(world_sections(cfg), verbose=verbose)
    params = E.make_params(eval_world(view(cfg, EVAL_WORLD_SECTIONS), train, test), env_sections(cfg))
    rows = {name: test_protocol(pol, params, cfg.eval) for name, pol in policies.items()}
    try:  # best-effort: an unwritable cache costs the rows' recomputation next time, nothing else
        atomic_write(path, lambda fh: json.dump(rows, fh, indent=2, sort_keys=True))
    except OSError as e:
        warn(f"could not cache the reference rows in {path} ({e.strerror or e}); carrying on without the cache")
    return rows
