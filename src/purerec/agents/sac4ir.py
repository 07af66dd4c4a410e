"""SAC4IR (Shi et al., ICWS 2023; fairness-aware): discrete soft actor-critic over items with
twin critics and an automatic temperature (``purerec.config.SAC4IRConfig``).

We follow the sibling KuaiSim port (HG4PFG ``model/agent/SAC.py``, ``OneStagePolicy_Sac``; see
shared/reference/public-code-facts.md section 2.7), with these choices:

* **Logits and Q over all items via item features**, as the test world has other items than the
  train world: no per-item-id output layer. With x = [state, context]
  (``purerec.state.purifier.Observer.inputs``) and f_i = ``nets.item_basis(item_emb, item_pop, "dot")``
  = [embedding, log-popularity in [0, 1]] (built from ``params.world`` wherever it is needed):
  actor logits(x, i) = phi_a(x) . f_i, pi(i | x) = softmax over the world's items; twin critics
  Q_j(x, i) = v_j(x) + phi_j(x) . f_i, and Polyak-averaged target critics (``tau``).
* **Slates**: in training and in ``act.sample``, K distinct items drawn without replacement from
  pi (``purerec.agents.heads.sample``, Plackett-Luce); ``act.greedy`` = the top-K of pi.
  Under a grouped head (``purerec.agents.heads``) the draws and the greedy slate are per group, in the
  head's split. With a learned tail a share policy over j = 0..K long-tail slots (an MLP of
  K + 1 logits) draws j, with twin share critics Q_s(x, j) on the slate's mean slot reward
  (y = mean_k r_k + gamma (1 - done) V_soft,share(x')) and the same discrete SAC actor loss and
  temperature; greedy j = the share policy's mode.
* **Per-item TD targets** (the port's): slot k's item i_k gets that slot's own observed feedback
  r_k as its reward, y_k = r_k + gamma (1 - done) V_soft(x'), V_soft(x') = sum_i pi(i|x')
  (min(Q1', Q2')(x', i) - alpha log pi(i|x')) (``losses.soft_value``); critic loss = the MSE of
  Q1(x, i_k) and Q2(x, i_k) to y_k over the slots (the port uses Huber).
* **Actor**: ``losses.discrete_sac_actor`` over all items (min of the online critics, held fixed).
* **Temperature**: log alpha learned (starts at ``init_log_alpha``, clamped to [-10, 2]) with
  ``losses.sac_temperature(log_alpha, H, target_entropy)``, target_entropy =
  ``target_entropy_ratio`` x log(N) over the train world's N items; its own Adam and traced lr.
* **Fairness** enters only through the entropy bonus (spreading exposure over items), never
  through the reward: no reward shaping, only the env's own exit rule acts.

Replay (``purerec.config.ReplayConfig``): every update adds its rollout's B x T transitions
(x, slate, per-slot feedback, done, x'), x' the next step's input (the last step's from the final
obs); after a done the next obs is a new session's, which the (1 - done) factor keeps out of the
target. Then ``replay.grad_steps`` gradient steps (critics, actor, temperature, targets) on
uniform minibatches, skipped while the buffer holds fewer than ``replay.min_size`` transitions.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from purerec.agents import heads, losses, optim, replay
from purerec.agents.base import Acts, Agent, env_params, no_session_shards
from purerec.agents.nets import item_basis, item_values, item_values_at, MLP
from purerec.core.fields import Sections
from purerec.sim import env as E
from purerec.sim.rollout import rollout_stats, unroll
from purerec.state.purifier import Frozen, make_observer

LOG_ALPHA_MIN, LOG_ALPHA_MAX = -10.0, 2.0


def item_features(world) -> jax.Array:
    """f32[N, d + 1]: the shared item basis [embedding, log-popularity in [0, 1]]."""
    return item_basis(world.item_emb, world.item_pop, "dot")


def logits_all(actor: MLP, p, x: jax.Array, feats: jax.Array) -> jax.Array:
    """The actor's logits over every item: f32[..., N]."""
    return actor.apply(p, x) @ feats.T


def critic_all(critic: MLP, p, x: jax.Array, feats: jax.Array) -> jax.Array:
    return item_values(critic.apply(p, x), feats)


def critic_at(critic: MLP, p, x: jax.Array, feats: jax.Array, items: jax.Array) -> jax.Array:
    return item_values_at(critic.apply(p, x), feats, items)


@struct.dataclass
class SAC4IRState:
    actor: optim.Learner
    critic: optim.Learner  # {"q1": ..., "q2": ...}
    critic_target: Any
    log_alpha: optim.Learner  # params: f32 scalar
    buffer: Any
    obs: E.Obs
    env_state: E.EnvState
    key: jax.Array
    update: jax.Array  # i32 updates done
    hyper: dict


def make(cfg: Sections, params: E.EnvParams, axis_name: str | None = None) -> Agent:
    no_session_shards(cfg, axis_name, "sac4ir")
    c = cfg.sac4ir
    observer = make_observer(cfg)
    K, B, T = params.slate_size, cfg.train.num_envs, cfg.train.rollout_len
    feats = item_features(params.world)
    n_feat = feats.shape[1]
    actor = MLP(c.hidden, n_feat)
    critic = MLP(c.hidden, n_feat + 1)
    tx = optim.adam(c.max_grad_norm)
    buffer = replay.make_buffer(cfg.replay)
    log_n = math.log(params.world.n_items)
    head = heads.resolve(cfg)
    popular_train = params.world.popular
    # under a learned tail: a soft policy and twin soft critics over the share choice j = 0..K
    # (long-tail slots), learned by the same discrete SAC on the slate's mean per-slot reward
    share_actor = MLP(c.hidden, K + 1) if head.learned else None
    share_critic = MLP(c.hidden, K + 1) if head.learned else None

    def items_of(pa):
        return pa if share_actor is None else pa["items"]

    def init(key: jax.Array, frozen: Frozen, hyper: dict) -> SAC4IRState:
        k_env, k_a, k_q1, k_q2, k_run = jax.random.split(key, 5)
        obs, env_state = E.batch_reset(k_env, env_params(params, hyper), B)
        x0 = jnp.zeros((observer.input_dim,))
        pa = actor.init(k_a, x0[None])
        pq = {"q1": critic.init(k_q1, x0[None]), "q2": critic.init(k_q2, x0[None])}
        if share_actor is not None:
            k_sa, k_s1, k_s2 = jax.random.split(jax.random.fold_in(k_a, 1), 3)
            pa = {"items": pa, "share": share_actor.init(k_sa, x0[None])}
            pq = {**pq, "s1": share_critic.init(k_s1, x0[None]), "s2": share_critic.init(k_s2, x0[None])}
        item = {"x": x0, "slate": jnp.zeros((K,), jnp.int32), "reward": jnp.zeros((K,)),
                "done": jnp.float32(0.0), "x_next": x0}
        return SAC4IRState(actor=optim.learner(pa, tx), critic=optim.learner(pq, tx), critic_target=pq,
                           log_alpha=optim.learner(jnp.float32(c.init_log_alpha), tx), buffer=buffer.init(item),
                           obs=obs, env_state=env_state, key=k_run, update=jnp.int32(0), hyper=hyper)

    def rollout_policy(frozen, pa, ep, share):
        def policy(key, obs, env_state, carry):
            k_s, k_a = jax.random.split(key)
            _, x = observer.inputs(frozen, k_s, obs, ep)
            logits = logits_all(actor, items_of(pa), x, feats)
            keys = jax.random.split(k_a, x.shape[0])
            if share_actor is None:
                slates = jax.vmap(heads.sample, in_axes=(None, 0, 0, None, None, None))(
                    head, keys, logits, popular_train, K, share)
            else:
                k_j, k_a = jax.random.split(k_a)
                j = jax.random.categorical(k_j, share_actor.apply(pa["share"], x))
                slates = jax.vmap(heads.sample, in_axes=(None, 0, 0, None, None, None, 0))(
                    head, keys, logits, popular_train, K, share, j.astype(jnp.float32) / K)
            return slates, carry, x

        return policy

    def grad_step(h, buf, carry, key):
        a, q, q_t, la = carry
        b = buffer.sample(buf, key).experience
        alpha = jnp.exp(la.params)
        # critics: per-slot targets r_k + gamma (1 - done) V_soft(x')
        logp_n = jax.nn.log_softmax(logits_all(actor, items_of(a.params), b["x_next"], feats))
        v_next = losses.soft_value(jnp.exp(logp_n), logp_n, critic_all(critic, q_t["q1"], b["x_next"], feats),
                                   critic_all(critic, q_t["q2"], b["x_next"], feats), alpha)
        y = losses.td_target(b["reward"], b["done"][:, None], v_next[:, None], h["sac4ir.gamma"])

        if share_actor is not None:  # the share's soft value at x' and its target on the mean slot reward
            logp_sn = jax.nn.log_softmax(share_actor.apply(a.params["share"], b["x_next"]))
            v_share = losses.soft_value(jnp.exp(logp_sn), logp_sn, share_critic.apply(q_t["s1"], b["x_next"]),
                                        share_critic.apply(q_t["s2"], b["x_next"]), alpha)
            y_share = losses.td_target(b["reward"].mean(-1), b["done"], v_share, h["sac4ir.gamma"])
            j = heads.tail_slots(b["slate"], popular_train)[:, None]

        def critic_loss(p):
            l1 = losses.mse(critic_at(critic, p["q1"], b["x"], feats, b["slate"]), y)
            l2 = losses.mse(critic_at(critic, p["q2"], b["x"], feats, b["slate"]), y)
            if share_actor is not None:
                for name in ("s1", "s2"):
                    l1 = l1 + losses.mse(jnp.take_along_axis(share_critic.apply(p[name], b["x"]), j, -1)[:, 0],
                                         y_share)
            return l1 + l2

        lq, gq = jax.value_and_grad(critic_loss)(q.params)
        q = optim.step(h["sac4ir.critic_lr"], gq, q, tx)
        # actor on the updated critics
        q1 = critic_all(critic, q.params["q1"], b["x"], feats)
        q2 = critic_all(critic, q.params["q2"], b["x"], feats)

        def actor_loss(p):
            logp = jax.nn.log_softmax(logits_all(actor, items_of(p), b["x"], feats))
            loss, ent = losses.discrete_sac_actor(jnp.exp(logp), logp, q1, q2, alpha)
            if share_actor is not None:  # the share policy on its own critics (its entropy is not targeted)
                logp_s = jax.nn.log_softmax(share_actor.apply(p["share"], b["x"]))
                loss = loss + losses.discrete_sac_actor(
                    jnp.exp(logp_s), logp_s, share_critic.apply(q.params["s1"], b["x"]),
                    share_critic.apply(q.params["s2"], b["x"]), alpha)[0]
            return loss, ent

        (la_loss, ent), ga = jax.value_and_grad(actor_loss, has_aux=True)(a.params)
        a = optim.step(h["sac4ir.actor_lr"], ga, a, tx)
        target_entropy = h["sac4ir.target_entropy_ratio"] * log_n
        lt, gt = jax.value_and_grad(losses.sac_temperature)(la.params, ent, target_entropy)
        la = optim.step(h["sac4ir.alpha_lr"], gt, la, tx)
        la = la.replace(params=jnp.clip(la.params, LOG_ALPHA_MIN, LOG_ALPHA_MAX))
        q_t = optim.polyak(q_t, q.params, h["sac4ir.tau"])
        logs = {"sac4ir_critic_loss": lq, "sac4ir_actor_loss": la_loss, "sac4ir_entropy": ent,
                "sac4ir_alpha": jnp.exp(la.params), "sac4ir_alpha_loss": lt, "sac4ir_q": y.mean()}
        return (a, q, q_t, la), logs

    def update(frozen: Frozen, S: SAC4IRState):
        h = S.hyper
        ep = env_params(params, h)
        key, k_roll, k_last, k_learn = jax.random.split(S.key, 4)
        policy = rollout_policy(frozen, S.actor.params, ep, h["slate.tail_share"])
        (obs, env_state, _), tr = unroll(k_roll, policy, ep, S.obs, S.env_state, jnp.zeros((B,)), T)
        _, x_last = observer.inputs(frozen, k_last, obs, ep)
        buf = replay.add_rollout(buffer, S.buffer, tr.extras, x_last, slate=tr.slate, reward=tr.feedback,
                                 done=tr.done.astype(jnp.float32))

        def idle(carry):
            zero = jnp.float32(0.0)
            logs = {k: zero for k in ("sac4ir_critic_loss", "sac4ir_actor_loss", "sac4ir_entropy",
                                      "sac4ir_alpha_loss", "sac4ir_q")}
            return {**logs, "sac4ir_alpha": jnp.exp(carry[3].params)}

        (a, q, q_t, la), logs, learned = replay.learn_when_ready(
            buffer, buf, lambda b, cr, k: grad_step(h, b, cr, k), (S.actor, S.critic, S.critic_target, S.log_alpha),
            k_learn, cfg.replay.grad_steps, idle)
        logs = {**rollout_stats(tr, K, B), **logs, "sac4ir_learned": learned}
        S = S.replace(actor=a, critic=q, critic_target=q_t, log_alpha=la, buffer=buf, obs=obs, env_state=env_state,
                      key=key, update=S.update + 1)
        return S, logs

    def policy_params(frozen: Frozen, S: SAC4IRState):
        return frozen, S.actor.params, S.hyper["slate.tail_share"]

    def logits_of(key, obs, p: E.EnvParams, pp):
        """(item logits f32[N], share logits f32[K + 1] or None)."""
        frozen, pa = pp[:2]
        _, x = observer.inputs(frozen, key, obs, p)
        share_logits = None if share_actor is None else share_actor.apply(pa["share"], x)
        return logits_all(actor, items_of(pa), x, item_features(p.world)), share_logits

    def greedy(key, obs, env_state, p: E.EnvParams, pp, carry):
        logits, sl = logits_of(key, obs, p, pp)
        j = None if sl is None else jnp.argmax(sl)
        return heads.slate_of_choice(head, logits, p.world.popular, p.slate_size, pp[2], j), carry

    def sample(key, obs, env_state, p: E.EnvParams, pp, carry):
        k_s, k_a = jax.random.split(key)
        logits, sl = logits_of(k_s, obs, p, pp)
        share = None
        if sl is not None:
            k_j, k_a = jax.random.split(k_a)
            share = jax.random.categorical(k_j, sl).astype(jnp.float32) / p.slate_size
        return heads.sample(head, k_a, logits, p.world.popular, p.slate_size, pp[2], share), carry

    return Agent(init=init, update=update, policy_params=policy_params, act=Acts(greedy=greedy, sample=sample),
                 init_carry=lambda n: jnp.zeros((n,)), state_specs=None)
