"""TD3 baseline (Fujimoto et al. 2018; general RL, no fairness term).

Action. A deterministic actor (``purerec.agents.a2c.HyperActor`` without a log-std) maps x =
[s, context] to a = [q, -kappa] in f32[d + 1]: a query in item-embedding space and a popularity
weight, the coefficients of a linear scorer over the item basis (``purerec.agents.nets.item_basis``);
the slate is the top-K of basis @ a (KuaiSim's hyper-action, §2.2 of
``shared/reference/public-code-facts.md``). The action is **not** tanh-bounded: top-K is
invariant to the scale of a, the warm-started query (Stage I's feedback predictor, as in A2C and
HRL) already has a natural scale (|q| ~ 2 on the KuaiRec-like world) that a tanh would distort,
and the popularity weight needs to reach values well above 1 to let long-tail items into the
slate. Exploration: a + N(0, ``td3.explore_std``) (the training rollout and ``act.sample``);
``act.greedy`` uses the actor's output. Other slate heads (``[slate]``) compose the slate from the same scores
(``purerec.agents.heads.of_hyper_action``); a learned tail share is one more action coordinate (the
share = its sigmoid), seen by the critics like the others.

Learning (one ``update``): a rollout of ``train.rollout_len`` steps of ``train.num_envs``
sessions, its B x T transitions (x, a, r, done, x') added to a flashbax replay buffer
(``purerec.agents.replay``; x' = the next step's x, the final observation's for the last step; done =
the session ended for whatever reason, and since the observation after a done is the next
session's reset observation the target never bootstraps through it), then, once the buffer holds
``replay.min_size`` transitions, ``replay.grad_steps`` gradient steps on minibatches of
``replay.batch_size``: target policy smoothing a~ = actor'(x') + clip(N(0, policy_noise),
+-noise_clip), clipped double-Q target y = r + gamma (1 - done) min(Q1', Q2')(x', a~), both
critics MSE; every ``td3.policy_delay``-th gradient step (counted over the whole run) the actor
step on -mean Q1(x, actor(x)) and the Polyak(``td3.tau``) update of the three target networks.

Fixed with respect to the public KuaiSim port (``code/model/agent/TD3.py``): it updates the actor
at every step (no policy delay) and its target uses (gamma * done + not done) (the done mask is
inverted: it discounts only terminal transitions and bootstraps undiscounted through every other
one); it also smooths the target with its positive-only exploration noise. Here the actor is
delayed, the done mask is the standard one and the smoothing noise is TD3's clipped Gaussian.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from purerec.agents import heads, losses, optim, replay
from purerec.agents.a2c import HyperActor, warm_start
from purerec.agents.base import Acts, Agent, env_params, no_session_shards
from purerec.agents.nets import Critic, item_basis
from purerec.core.errors import ConfigError
from purerec.core.fields import Sections
from purerec.sim import env as E
from purerec.sim.rollout import rollout_stats, unroll
from purerec.state.purifier import Frozen, make_observer


class QCritic(nn.Module):
    """Q(x, a): an MLP on [x, a]."""

    hidden: int

    @nn.compact
    def __call__(self, x, a):
        return Critic(self.hidden)(jnp.concatenate([x, a], axis=-1))


@struct.dataclass
class TD3State:
    actor: optim.Learner
    critic: optim.Learner  # params {"q1": ..., "q2": ...}
    actor_target: Any
    critic_target: Any
    buffer: Any  # flashbax buffer state
    obs: E.Obs
    env_state: E.EnvState
    key: jax.Array
    update: jax.Array  # i32 updates done
    grad_step: jax.Array  # i32 gradient steps done (the policy delay counts these)
    hyper: dict


def make(cfg: Sections, params: E.EnvParams, axis_name: str | None = None) -> Agent:
    no_session_shards(cfg, axis_name, "td3")
    c = cfg.td3
    B, T, K = cfg.train.num_envs, cfg.train.rollout_len, params.slate_size
    if B * T > cfg.replay.capacity:
        raise ConfigError("replay.capacity", cfg.replay.capacity,
                          f">= num_envs * rollout_len ({B * T}): one update's transitions must fit")
    observer = make_observer(cfg)
    emb_dim = params.world.item_emb.shape[1]
    head = heads.resolve(cfg)
    actor = HyperActor(observer.state_dim, emb_dim, c.hidden, cfg.agent.pop_scale, share_dims=head.share_dims)
    critic = QCritic(c.hidden)
    tx = optim.adam(c.max_grad_norm)
    buffer = replay.make_buffer(cfg.replay)
    train_basis = item_basis(params.world.item_emb, params.world.item_pop, "dot")
    dx, da = observer.input_dim, actor.action_dim

    def init(key: jax.Array, frozen: Frozen, hyper: dict) -> TD3State:
        k_env, k_a, k_1, k_2, k_run = jax.random.split(key, 5)
        obs, env_state = E.batch_reset(k_env, env_params(params, hyper), B)
        x0, a0 = jnp.zeros((1, dx)), jnp.zeros((1, da))
        actor_p = warm_start(actor.init(k_a, x0), frozen)
        critic_p = {"q1": critic.init(k_1, x0, a0), "q2": critic.init(k_2, x0, a0)}
        item = {"x": jnp.zeros((dx,)), "a": jnp.zeros((da,)), "r": jnp.zeros(()), "done": jnp.zeros(()),
                "x2": jnp.zeros((dx,))}
        return TD3State(actor=optim.learner(actor_p, tx), critic=optim.learner(critic_p, tx), actor_target=actor_p,
                        critic_target=critic_p, buffer=buffer.init(item), obs=obs, env_state=env_state, key=k_run,
                        update=jnp.int32(0), grad_step=jnp.int32(0), hyper=hyper)

    def critic_loss(cp, b, y):
        q1 = critic.apply(cp["q1"], b["x"], b["a"])
        q2 = critic.apply(cp["q2"], b["x"], b["a"])
        return losses.mse(q1, y) + losses.mse(q2, y), q1

    def actor_loss(ap, cp, x):
        return -jnp.mean(critic.apply(cp["q1"], x, actor.apply(ap, x)))

    def grad_step(h, buf, carry, key):
        act_l, crit_l, act_t, crit_t, g = carry
        k_s, k_n = jax.random.split(key)
        b = buffer.sample(buf, k_s).experience
        a_next = actor.apply(act_t, b["x2"])
        noise = jnp.clip(h["td3.policy_noise"] * jax.random.normal(k_n, a_next.shape),
                         -h["td3.noise_clip"], h["td3.noise_clip"])
        a_next = a_next + noise
        y = losses.td3_target(b["r"], b["done"], critic.apply(crit_t["q1"], b["x2"], a_next),
                              critic.apply(crit_t["q2"], b["x2"], a_next), h["td3.gamma"])
        (c_loss, q1), gc = jax.value_and_grad(critic_loss, has_aux=True)(crit_l.params, b, y)
        crit_l = optim.step(h["td3.critic_lr"], gc, crit_l, tx)
        delayed = (g + 1) % c.policy_delay == 0

        def policy_step(args):
            act_l, act_t, crit_t = args
            a_loss, ga = jax.value_and_grad(actor_loss)(act_l.params, crit_l.params, b["x"])
            act_l = optim.step(h["td3.actor_lr"], ga, act_l, tx)
            tau = h["td3.tau"]
            return (act_l, optim.polyak(act_t, act_l.params, tau), optim.polyak(crit_t, crit_l.params, tau)), a_loss

        def hold(args):
            return args, jnp.float32(0.0)

        (act_l, act_t, crit_t), a_loss = jax.lax.cond(delayed, policy_step, hold, (act_l, act_t, crit_t))
        logs = {"critic_loss": c_loss, "actor_loss": a_loss, "actor_steps": delayed.astype(jnp.float32),
                "q_mean": jnp.mean(q1), "target_mean": jnp.mean(y)}
        return (act_l, crit_l, act_t, crit_t, g + 1), logs

    def learn(S: TD3State, key: jax.Array):
        h = S.hyper
        carry = (S.actor, S.critic, S.actor_target, S.critic_target, S.grad_step)
        carry, logs = jax.lax.scan(lambda cr, k: grad_step(h, S.buffer, cr, k), carry,
                                   jax.random.split(key, cfg.replay.grad_steps))
        act_l, crit_l, act_t, crit_t, g = carry
        n_actor = jnp.maximum(logs["actor_steps"].sum(), 1.0)
        out = {"critic_loss": logs["critic_loss"].mean(), "actor_loss": logs["actor_loss"].sum() / n_actor,
               "q_mean": logs["q_mean"].mean(), "target_mean": logs["target_mean"].mean(),
               "learning": jnp.float32(1.0)}
        return S.replace(actor=act_l, critic=crit_l, actor_target=act_t, critic_target=crit_t, grad_step=g), out

    def skip(S: TD3State, key: jax.Array):
        zero = jnp.float32(0.0)
        return S, {"critic_loss": zero, "actor_loss": zero, "q_mean": zero, "target_mean": zero, "learning": zero}

    def update(frozen: Frozen, S: TD3State):
        h = S.hyper
        ep = env_params(params, h)
        key, k_roll, k_last, k_learn = jax.random.split(S.key, 4)

        def policy(k, obs, env_state, carry):
            k_s, k_a = jax.random.split(k)
            _, x = observer.inputs(frozen, k_s, obs, ep)
            mean = actor.apply(S.actor.params, x)
            a = mean + h["td3.explore_std"] * jax.random.normal(k_a, mean.shape)
            slates = heads.of_hyper_action(head, a, train_basis, ep.world.popular, K, h["slate.tail_share"])
            return slates, carry, {"x": x, "a": a, "a_norm": jnp.linalg.norm(mean, axis=-1)}

        (obs, env_state, _), tr = unroll(k_roll, policy, ep, S.obs, S.env_state, (), T)
        _, x_last = observer.inputs(frozen, k_last, obs, ep)
        x = tr.extras["x"]
        items = {"x": x, "a": tr.extras["a"], "r": tr.reward, "done": tr.done.astype(jnp.float32),
                 "x2": jnp.concatenate([x[1:], x_last[None]], axis=0)}
        items = jax.tree.map(lambda z: z.reshape((B * T,) + z.shape[2:]), items)
        S = S.replace(buffer=buffer.add(S.buffer, items), obs=obs, env_state=env_state, key=key)
        S, learn_logs = jax.lax.cond(buffer.can_sample(S.buffer), learn, skip, S, k_learn)
        logs = rollout_stats(tr, K, B)
        logs.update(learn_logs)
        logs["action_norm"] = jnp.mean(tr.extras["a_norm"])
        logs["kappa"] = -jnp.mean(actor.apply(S.actor.params, x_last)[:, emb_dim])
        S = S.replace(update=S.update + 1)
        return S, jax.tree.map(lambda z: z.astype(jnp.float32), logs)

    def policy_params(frozen: Frozen, S: TD3State) -> Any:
        return frozen, S.actor.params, S.hyper["td3.explore_std"], S.hyper["slate.tail_share"]

    def act(sample: bool):
        def act_fn(key, obs, env_state, p: E.EnvParams, pp, carry):
            frozen, actor_p, explore_std, fixed_share = pp
            k_s, k_a = jax.random.split(key)
            basis = item_basis(p.world.item_emb, p.world.item_pop, "dot")
            _, x = observer.inputs(frozen, k_s, obs, p)
            a = actor.apply(actor_p, x)
            if sample:
                a = a + explore_std * jax.random.normal(k_a, a.shape)
            return heads.of_hyper_action(head, a, basis, p.world.popular, p.slate_size, fixed_share), carry

        return act_fn

    return Agent(init=init, update=update, policy_params=policy_params, act=Acts(greedy=act(False), sample=act(True)),
                 init_carry=lambda n: jnp.zeros((n,)), state_specs=None)
