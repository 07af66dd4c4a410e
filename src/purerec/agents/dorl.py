"""DORL baseline (Gao et al. 2023, "Alleviating Matthew Effect of Offline Reinforcement Learning in
Interactive Recommendation"; model-based offline RL): a learned user model fitted on the logs, a
policy trained online *in the learned model* with a penalised, entropy-rewarded reward, evaluated
in the real test world.

* ``init`` (inside the compiled program, from init's key): the train world's logs
  (``purerec.sim.logs.collect``: ``offline.sessions`` sessions x ``env.max_len`` steps of the logging
  policy), the ensemble of ``dorl.models`` heteroscedastic user models fitted on them and the P_E
  tables (``purerec.agents.user_model``: the readings of the DeepFM members, maxvar and P_E are written
  there), then A2C's state (``purerec.agents.a2c``; section ``a2c``).
* ``update``: A2C's update (``a2c.build(...).learn``: GAE(``a2c.gamma``, ``a2c.gae_lambda``), one
  pass of minibatches) with the rollout driven by the model env (``user_model.batch_step``, the
  real env's reset/step signature): reward max(0, r^ - lambda_var maxvar + lambda_ent P_E - r_min)
  with the traced ``dorl.*`` lambdas, exits by the env's abandonment rule on r^. The DORL authors
  train A2C on one item per step; purerec's slate version is A2C's Gaussian hyper-action over the
  item basis with a top-K slate.
* logs: ``rollout_stats`` of the rollout -- **the learned model's** sessions (Len, R_cum are
  model lengths and shaped returns, not the real world's) -- plus A2C's losses and the model's
  ``model_nll`` (the ensemble's NLL on the logs after the fit), ``r_hat`` (mean predicted
  reward), ``maxvar`` and ``P_E`` (means over the rollout's steps).
* ``act.greedy`` / ``act.sample``: A2C's, in the real env (the test protocol's world).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from purerec.agents import a2c, user_model as U
from purerec.agents.base import Agent, env_params, no_session_shards
from purerec.core.fields import Sections
from purerec.sim import env as E
from purerec.sim.logs import collect
from purerec.state.purifier import Frozen


@struct.dataclass
class DORLState:
    a2c: a2c.A2CState
    fitted: U.Fitted


def make(cfg: Sections, params: E.EnvParams, axis_name: str | None = None) -> Agent:
    no_session_shards(cfg, axis_name, "dorl")
    d = cfg.dorl
    core = a2c.build(cfg, params)
    um = U.make_user_model(cfg, core.observer, params.world.item_emb.shape[1] + 1)

    def model_params(frozen: Frozen, S: DORLState, ep: E.EnvParams) -> U.ModelParams:
        h = S.a2c.hyper
        return U.ModelParams(env=ep, frozen=frozen, fitted=S.fitted, lambda_var=h["dorl.lambda_var"],
                             lambda_ent=h["dorl.lambda_ent"], r_min=h["dorl.r_min"], model=um)

    def init(key: jax.Array, frozen: Frozen, hyper: dict) -> DORLState:
        k_logs, k_fit, k_a2c = jax.random.split(key, 3)
        ep = env_params(params, hyper)
        logs = collect(k_logs, ep, cfg.offline.sessions, params.max_len)
        fitted, _ = U.fit_model(um, k_fit, frozen, ep, logs, d.model_lr, d.model_steps, d.model_batch)
        return DORLState(a2c=core.init(k_a2c, frozen, hyper), fitted=fitted)

    def update(frozen: Frozen, S: DORLState):
        ep = env_params(params, S.a2c.hyper)
        mp = model_params(frozen, S, ep)
        S_a2c, logs, tr = core.learn(frozen, S.a2c, ep, step=U.batch_step, rollout_params=mp)
        x = tr.extras["x"]
        _, r_hat, maxvar, p_e = jax.vmap(jax.vmap(U.penalties, in_axes=(None, 0, 0, 0, 0)),
                                         in_axes=(None, 0, 0, 0, 0))(
            mp, x, tr.obs.items[..., -1:], tr.obs.valid[..., -1:], tr.slate)
        logs.update({"model_nll": S.fitted.nll, "r_hat": jnp.mean(r_hat), "maxvar": jnp.mean(maxvar),
                     "P_E": jnp.mean(p_e)})
        logs = jax.tree.map(lambda z: jnp.asarray(z, jnp.float32), logs)
        return S.replace(a2c=S_a2c), logs

    def policy_params(frozen: Frozen, S: DORLState) -> Any:
        return core.policy_params(frozen, S.a2c)

    return Agent(init=init, update=update, policy_params=policy_params, act=core.act,
                 init_carry=lambda n: jnp.zeros((n,)), state_specs=None)
