"""A2C baseline (general RL, the KuaiSim lineage; no fairness term).

What is taken from KuaiSim (``code/model/agent/A2C.py`` with ``OneStageHyperPolicy_with_DotScore``
and ``VCritic``; see ``shared/reference/public-code-facts.md`` §2.1):

* the **hyper-action**: the actor outputs the coefficients a = [q, -kappa] (f32[d + 1]) of a
  linear scorer over the item basis (``purerec.agents.nets.item_basis``: item embeddings and scaled
  log-popularity), scores = basis @ a over **all** items, and the slate is the deterministic
  **top-K** of the scores. Every per-item score is a function of item features, so the policy
  acts on a world with a different item set (the test world).
  That top-K is the native head; any other head of ``[slate]`` composes the slate from the same
  scores (``purerec.agents.heads.of_hyper_action``), and a learned tail share adds one coordinate to a
  (share = sigmoid of it, 0.5 at the start) with its own Gaussian std, learned by the same loss.
* the networks' roles: an actor head on the state giving the hyper-action and a state-value
  critic V(x), trained as advantage actor-critic on the env reward (gamma 0.9 by default).

What differs, on purpose:

* exploration is a diagonal Gaussian on the hyper-action, mean = actor(x), state-independent
  learned log-std starting at ``a2c.action_std`` (KuaiSim adds positive-only U[0, 0.1) noise,
  which has no usable density);
* the update is synchronous on-policy A2C (Mnih et al. 2016): a rollout of ``train.rollout_len``
  steps of ``train.num_envs`` sessions, GAE(``a2c.gamma``, ``a2c.gae_lambda``) advantages, then
  one pass of ``a2c.minibatches`` shuffled minibatches, one gradient step each, loss
  ``purerec.agents.losses.a2c`` with the Gaussian log-density of the *stored* hyper-action and the
  Gaussian entropy (no PPO ratio, no clipping). KuaiSim instead learns off-policy from a replay
  buffer; its bugs (a) the inverted done mask that bootstraps only on terminal transitions,
  (b) V(s) taken from the target critic so that the online critic is never trained, (c) log-probs
  of the current policy's top-K instead of the stored action and (d) a softmax over all items
  read as a slate probability, are **not** reproduced.
* the state is purerec's shared one (``purerec.state.purifier``: Stage-I encoder, purifier per
  ``state.purifier``) plus the session context, not KuaiSim's Transformer; the actor's linear
  query q = W s + b is warm-started from Stage I's feedback predictor (as HRL's worker is), so
  the first slates rank items by predicted feedback; a small MLP on x = [s, context] (output
  initialised near 0) adds a state- and context-dependent correction to [q, -kappa].
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from purerec.agents import heads, losses, optim, returns
from purerec.agents.base import Acts, Agent, env_params, no_session_shards
from purerec.agents.nets import Critic, gaussian_entropy, gaussian_log_prob, item_basis, LOG_STD_MAX, LOG_STD_MIN, MLP
from purerec.core.errors import ConfigError
from purerec.core.fields import Sections
from purerec.sim import env as E
from purerec.sim.rollout import rollout_stats, unroll
from purerec.state.purifier import Frozen, make_observer


class HyperActor(nn.Module):
    """The hyper-action's mean [q + dq, -kappa + dk] (f32[..., emb_dim + 1]) from x = [s, context].

    q = W s + b (``query``, warm-started from Stage I's feedback head), kappa = exp(log_pop_scale)
    starts at ``init_pop_scale``; [dq, dk] = MLP(x) with a near-zero output layer. With
    ``init_std`` it also returns the state-independent Gaussian log-std (A2C); without, only the
    mean (TD3's deterministic actor)."""

    state_dim: int
    emb_dim: int
    hidden: int
    init_pop_scale: float = 0.05
    init_std: float | None = None
    share_dims: int = 0  # 1 under a learned tail (``purerec.agents.heads.Head.share_dims``): the share's logit

    @property
    def action_dim(self) -> int:
        return self.emb_dim + 1 + self.share_dims

    @nn.compact
    def __call__(self, x):
        s = x[..., : self.state_dim]
        q = nn.Dense(self.emb_dim, name="query")(s)
        kappa = jnp.exp(self.param("log_pop_scale", nn.initializers.constant(math.log(self.init_pop_scale)), ()))
        parts = [q, jnp.broadcast_to(-kappa, q.shape[:-1] + (1,))]
        if self.share_dims:  # the tail share's logit starts at 0 (share 0.5) from the residual alone
            parts.append(jnp.zeros(q.shape[:-1] + (self.share_dims,), q.dtype))
        mean = jnp.concatenate(parts, axis=-1) + MLP(self.hidden, self.action_dim, name="residual")(x)
        if self.init_std is None:
            return mean
        raw = self.param("log_std", nn.initializers.constant(math.log(self.init_std)), (self.action_dim,))
        return mean, jnp.broadcast_to(jnp.clip(raw, LOG_STD_MIN, LOG_STD_MAX), mean.shape)


def warm_start(actor_params: dict, frozen: Frozen) -> dict:
    """The actor's query layer := Stage I's feedback-head query (when the shapes fit)."""
    src = frozen.feedback_head["params"]["Dense_0"]
    dst = actor_params["params"]["query"]
    if jax.tree.map(jnp.shape, src) != jax.tree.map(jnp.shape, dst):
        return actor_params
    return {**actor_params, "params": {**actor_params["params"], "query": src}}


@struct.dataclass
class A2CState:
    actor: optim.Learner
    critic: optim.Learner
    obs: E.Obs
    env_state: E.EnvState
    key: jax.Array
    update: jax.Array  # i32 updates done
    hyper: dict


class A2CCore(NamedTuple):
    """A2C's pieces, for agents that drive its update with another env step (DORL).

    ``learn(frozen, S, ep, step=E.batch_step, rollout_params=None) -> (S, logs, Transition)``:
    one A2C update whose rollout is ``unroll(..., rollout_params or ep, ..., step=step)``; ``ep``
    (the real env's params) is what the observer reads (item embeddings, popular flags)."""

    init: Callable
    learn: Callable
    policy_params: Callable
    act: Acts
    observer: Any


def make(cfg: Sections, params: E.EnvParams, axis_name: str | None = None) -> Agent:
    no_session_shards(cfg, axis_name, "a2c")
    core = build(cfg, params)

    def update(frozen: Frozen, S: A2CState):
        S, logs, _ = core.learn(frozen, S, env_params(params, S.hyper))
        return S, logs

    return Agent(init=core.init, update=update, policy_params=core.policy_params, act=core.act,
                 init_carry=lambda n: jnp.zeros((n,)), state_specs=None)


def build(cfg: Sections, params: E.EnvParams) -> A2CCore:
    """A2C's init, parametrised update (``A2CCore.learn``), policy params and acts."""
    c = cfg.a2c
    B, T, K = cfg.train.num_envs, cfg.train.rollout_len, params.slate_size
    observer = make_observer(cfg)
    emb_dim = params.world.item_emb.shape[1]
    head = heads.resolve(cfg)
    actor = HyperActor(observer.state_dim, emb_dim, c.hidden, cfg.agent.pop_scale, c.action_std, head.share_dims)
    critic = Critic(c.hidden)
    tx = optim.adam(c.max_grad_norm)
    train_basis = item_basis(params.world.item_emb, params.world.item_pop, "dot")
    n = B * T
    if n % c.minibatches:
        raise ConfigError("a2c.minibatches", c.minibatches, f"a divisor of num_envs * rollout_len ({n})")
    n_mb, mb_size = c.minibatches, n // c.minibatches

    def init(key: jax.Array, frozen: Frozen, hyper: dict) -> A2CState:
        k_env, k_a, k_c, k_run = jax.random.split(key, 4)
        obs, env_state = E.batch_reset(k_env, env_params(params, hyper), B)
        x0 = jnp.zeros((1, observer.input_dim))
        actor_p = warm_start(actor.init(k_a, x0), frozen)
        return A2CState(actor=optim.learner(actor_p, tx), critic=optim.learner(critic.init(k_c, x0), tx),
                        obs=obs, env_state=env_state, key=k_run, update=jnp.int32(0), hyper=hyper)

    def loss_fn(p, mb, h):
        actor_p, critic_p = p
        mean, ls = actor.apply(actor_p, mb["x"])
        logp = gaussian_log_prob(mb["a"], mean, ls)
        v = critic.apply(critic_p, mb["x"])
        return losses.a2c(logp, mb["adv"], v, mb["target"], gaussian_entropy(ls), h["a2c.vf_coef"],
                          h["a2c.ent_coef"])

    def learn(frozen: Frozen, S: A2CState, ep: E.EnvParams, step: Callable = E.batch_step, rollout_params=None):
        h = S.hyper
        key, k_roll, k_last, k_perm = jax.random.split(S.key, 4)

        def policy(k, obs, env_state, carry):
            k_s, k_a = jax.random.split(k)
            _, x = observer.inputs(frozen, k_s, obs, ep)
            mean, ls = actor.apply(S.actor.params, x)
            a = mean + jnp.exp(ls) * jax.random.normal(k_a, mean.shape)
            v = critic.apply(S.critic.params, x)
            slates = heads.of_hyper_action(head, a, train_basis, ep.world.popular, K, h["slate.tail_share"])
            return slates, carry, {"x": x, "a": a, "v": v}

        (obs, env_state, _), tr = unroll(k_roll, policy, ep if rollout_params is None else rollout_params, S.obs,
                                          S.env_state, (), T, step=step)
        _, x_last = observer.inputs(frozen, k_last, obs, ep)
        v_last = critic.apply(S.critic.params, x_last)
        adv, target = returns.gae(tr.reward, tr.extras["v"], tr.done, v_last, h["a2c.gamma"], h["a2c.gae_lambda"])
        batch = {"x": tr.extras["x"], "a": tr.extras["a"], "adv": adv, "target": target}
        batch = jax.tree.map(lambda z: z.reshape((n,) + z.shape[2:]), batch)
        perm = jax.random.permutation(k_perm, n)
        mbs = jax.tree.map(lambda z: z[perm].reshape((n_mb, mb_size) + z.shape[1:]), batch)

        def minibatch(carry, mb):
            a_l, c_l = carry
            (_, parts), (ga, gc) = jax.value_and_grad(loss_fn, has_aux=True)((a_l.params, c_l.params), mb, h)
            return (optim.step(h["a2c.actor_lr"], ga, a_l, tx), optim.step(h["a2c.critic_lr"], gc, c_l, tx)), parts

        (actor_l, critic_l), parts = jax.lax.scan(minibatch, (S.actor, S.critic), mbs)
        logs = rollout_stats(tr, K, B)
        logs.update({f"{k}_loss" if k != "entropy" else k: jnp.mean(v) for k, v in parts.items()})
        logs["action_std"] = jnp.mean(jnp.exp(jnp.clip(actor_l.params["params"]["log_std"], LOG_STD_MIN, LOG_STD_MAX)))
        logs["value"] = jnp.mean(tr.extras["v"])
        S = S.replace(actor=actor_l, critic=critic_l, obs=obs, env_state=env_state, key=key, update=S.update + 1)
        return S, jax.tree.map(lambda z: z.astype(jnp.float32), logs), tr

    def policy_params(frozen: Frozen, S: A2CState) -> Any:
        return frozen, S.actor.params, S.hyper["slate.tail_share"]

    return A2CCore(init=init, learn=learn, policy_params=policy_params, act=hyper_acts(observer, actor, head),
                   observer=observer)


def hyper_acts(observer, actor, head: heads.Head) -> Acts:
    """Acting with a Gaussian hyper-action over the item basis (A2C, FCPO): policy params are
    (frozen, actor params, the fixed tail share); greedy takes the mean, sample draws from
    N(mean, exp(log_std)²); the slate is the head's (``purerec.agents.heads.of_hyper_action``)."""

    def act(sample: bool):
        def act_fn(key, obs, env_state, p: E.EnvParams, pp, carry):
            frozen, actor_p, fixed_share = pp
            k_s, k_a = jax.random.split(key)
            basis = item_basis(p.world.item_emb, p.world.item_pop, "dot")
            _, x = observer.inputs(frozen, k_s, obs, p)
            mean, ls = actor.apply(actor_p, x)
            a = mean + jnp.exp(ls) * jax.random.normal(k_a, mean.shape) if sample else mean
            return heads.of_hyper_action(head, a, basis, p.world.popular, p.slate_size, fixed_share), carry

        return act_fn

    return Acts(greedy=act(False), sample=act(True))
