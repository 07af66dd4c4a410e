"""MOFIR baseline (Ge et al. 2022, "Toward Pareto Efficient Fairness-Utility Trade-off in
Recommendation through Reinforcement Learning"), **a reading**: the paper has no public code; its
abstract says DDPG modified with a *conditioned network* that takes the preference vector omega as
input and outputs a vector of Q values, one policy for all preferences, the Pareto front obtained
by varying omega. What is implemented here:

* Preference. omega = [1 - w, w], w the weight on fairness. In training, w ~ U[0, 1] is drawn per
  session (the rollout's per-session carry; redrawn at a session's first step, i.e. after the
  previous session ended); at test, ``act.greedy`` uses w = ``mofir.eval_weight`` (a traced field:
  a sweep over it shares one compiled program and draws the Pareto front).
* Action. A deterministic hyper-action a = [q, -kappa, v]: [q, -kappa] as TD3's
  (``purerec.agents.td3``), the coefficients of a linear scorer over the item basis, from
  ``purerec.agents.a2c.HyperActor`` on [x, omega] = [s, context, omega] (its warm-started query
  reads only the state part s, the first ``state_dim`` entries; its residual MLP reads all of it),
  plus [0, 0, v] for a long-tail-share logit v, plus sum_j omega_j head_j(x, omega): one
  correction head per objective (outputs near 0 at the start), mixed by the preference. The
  omega-gated heads are this reading's "conditioned network": with omega only as 2 of ~36 inputs
  to a shared MLP the actor learned no dependence on omega at all in 30-60 updates (greedy slates
  at w = 0 and w = 1 identical), since every minibatch's gradient moved the same shared outputs;
  gated heads give each objective its own output, weighted by omega in both the action and its
  gradient. The slate's long-tail share is sigmoid(4 v) (``SHARE_GAIN``). The slate
  follows the slate head (``purerec.agents.heads``): the default (grouped, learned tail; FLAT's rule)
  holds round(K sigmoid(4 v)) long-tail items and the rest popular, each part the top of its
  group by score; ``native`` / ``topk`` is TD3's top-K of the scores (v unused). Exploration: a + N(0,
  ``mofir.explore_std``) (training and ``act.sample``).

  Why grouped by default (a departure from a plain TD3 top-K): on the KuaiRec-like world the
  top-K slate of a linear scorer over ~10^4 items is a step function of the popularity weight
  (all popular for a_pop > -2.55, all long-tail below -2.95 from the warm start, a mixed slate
  only inside that band), so Fair_t is flat almost everywhere in the action, the fairness critic
  gets no gradient to follow and the trade-off cannot be learned: with top-K (and a shared,
  ungated actor, actor_lr 1e-4, seed 11) every preference gave the same all-popular slate (test
  AD 1, Len 13.65 / R_cum 10.93, below most_popular's 14.01 / 12.25).
* Vector reward. [r_t, Fair_t]: the env reward and Fair_t = -|2 p_t - 1| / 2, p_t the popular share
  of the slate (HRL's per-slate manager reward, ``purerec.agents.hrl``).
* Critic. Q(x, a, omega) in R^2 = [Q_utility, Q_fairness] (one MLP on [x, a, omega] with the
  share logit replaced by the share, two outputs), trained by MSE to the vector TD target
  y = [r, Fair] + gamma (1 - done) Q'(x', mu'(x', omega), omega) (target actor and critic,
  Polyak ``mofir.tau``), the same omega as the stored transition (``vector_td_target``).
* Actor. Maximises the scalarised value omega . Q(x, mu(x, omega), omega) (``scalarised_actor_loss``).
* Learning (DDPG, one ``update``): a rollout of ``train.rollout_len`` steps of ``train.num_envs``
  sessions, its transitions (x, a, omega, [r, Fair], done, x') added to a flashbax replay buffer
  (``purerec.agents.replay``; x' = the next step's x, the final observation's for the last step; done
  ends the bootstrap, since the observation after it is the next session's reset), then, once it
  holds ``replay.min_size``, ``replay.grad_steps`` steps each of: critic, actor, Polyak of both
  targets (no twin critics, no delay, no target smoothing: DDPG, not TD3).

Not in the abstract and chosen here: the transition keeps its own omega (no relabelling of
stored transitions with other preferences); ``act.sample`` explores around eval_weight's action
(the per-session random w is a training device, the test rules act at one chosen preference).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from purerec.agents import heads, optim, replay
from purerec.agents.a2c import HyperActor, warm_start
from purerec.agents.base import Acts, Agent, env_params, no_session_shards
from purerec.agents.nets import item_basis, MLP
from purerec.core.errors import ConfigError
from purerec.core.fields import Sections
from purerec.sim import env as E
from purerec.sim.rollout import rollout_stats, unroll
from purerec.state.purifier import Frozen, make_observer


# The long-tail share is sigmoid(SHARE_GAIN * v): with K = 10 and explore_std 0.1 the noise on v
# moves the slate by about one long-tail slot (0.1 * 4 * sigmoid'(0) * K = 1), as the noise on
# the scorer's coefficients moves its ranking; with gain 1 it would move a quarter of a slot, and
# the actor's v would need 4x the steps to cover the same range of shares.
SHARE_GAIN = 4.0


def preference(w: jax.Array) -> jax.Array:
    """omega = [1 - w, w] (f32[..., 2]) from the fairness weight w (f32[...])."""
    w = jnp.asarray(w, jnp.float32)
    return jnp.stack([1.0 - w, w], axis=-1)


def slate_fairness(n_popular: jax.Array, slate_size: int) -> jax.Array:
    """Fair_t = -|2 p_t - 1| / 2 with p_t = n_popular / K (HRL's per-slate fairness reward)."""
    return -0.5 * jnp.abs(2.0 * n_popular / slate_size - 1.0)


def vector_td_target(reward: jax.Array, done: jax.Array, q_next: jax.Array, gamma: jax.Array) -> jax.Array:
    """y = R + gamma (1 - done) Q'(x', mu'(x', omega), omega): R, q_next f32[B, 2], done [B] (no gradient)."""
    mask = 1.0 - done.astype(reward.dtype)
    return jax.lax.stop_gradient(reward + gamma * mask[:, None] * q_next)


def scalarised_actor_loss(omega: jax.Array, q: jax.Array) -> jax.Array:
    """-mean_b omega_b . Q_b: omega, q f32[B, 2]."""
    return -jnp.mean(jnp.sum(omega * q, axis=-1))


def vector_critic_loss(q: jax.Array, y: jax.Array) -> jax.Array:
    """Mean over the batch of the summed squared TD errors of both objectives: q, y f32[B, 2]."""
    return jnp.mean(jnp.sum((q - y) ** 2, axis=-1))


class PreferenceActor(nn.Module):
    """mu(x, omega) = [q, -kappa, 0] + sum_j omega_j head_j(xo) (f32[..., emb_dim + 2]) from
    xo = [s, context, omega]: ``HyperActor``'s scorer coefficients on xo, plus one correction head
    per objective (an MLP with 2 x (emb_dim + 2) outputs, near 0 at the start), mixed by omega; the
    last coordinate v is the long-tail-share logit."""

    state_dim: int
    emb_dim: int
    hidden: int
    init_pop_scale: float

    @nn.compact
    def __call__(self, xo):
        a = HyperActor(self.state_dim, self.emb_dim, self.hidden, self.init_pop_scale, name="hyper")(xo)
        a = jnp.concatenate([a, jnp.zeros(a.shape[:-1] + (1,), a.dtype)], axis=-1)
        omega = xo[..., -2:]
        heads = MLP(self.hidden, 2 * a.shape[-1], name="heads")(xo).reshape(a.shape[:-1] + (2, a.shape[-1]))
        return a + jnp.einsum("...j,...jd->...d", omega, heads)


class VectorCritic(nn.Module):
    """Q(x, a, omega) = [Q_utility, Q_fairness]: an MLP on [x, a, omega] with two outputs."""

    hidden: int

    @nn.compact
    def __call__(self, x, a, omega):
        # The share coordinate enters as the long-tail share itself (not its logit), so that the
        # critic's slope in it stays informative when the actor pushes the logit far out.
        a = jnp.concatenate([a[..., :-1], jax.nn.sigmoid(SHARE_GAIN * a[..., -1:])], axis=-1)
        h = jnp.concatenate([x, a, omega], axis=-1)
        h = nn.tanh(nn.Dense(self.hidden)(h))
        h = nn.tanh(nn.Dense(self.hidden)(h))
        return nn.Dense(2)(h)


@struct.dataclass
class MOFIRState:
    actor: optim.Learner
    critic: optim.Learner
    actor_target: Any
    critic_target: Any
    buffer: Any  # flashbax buffer state
    obs: E.Obs
    env_state: E.EnvState
    w: jax.Array  # f32[B] each running session's fairness weight
    key: jax.Array
    update: jax.Array  # i32 updates done
    hyper: dict


def make(cfg: Sections, params: E.EnvParams, axis_name: str | None = None) -> Agent:
    no_session_shards(cfg, axis_name, "mofir")
    c = cfg.mofir
    head = heads.resolve(cfg)
    B, T, K = cfg.train.num_envs, cfg.train.rollout_len, params.slate_size
    if B * T > cfg.replay.capacity:
        raise ConfigError("replay.capacity", cfg.replay.capacity,
                          f">= num_envs * rollout_len ({B * T}): one update's transitions must fit")
    observer = make_observer(cfg)
    emb_dim = params.world.item_emb.shape[1]
    actor = PreferenceActor(observer.state_dim, emb_dim, c.hidden, cfg.agent.pop_scale)
    critic = VectorCritic(c.hidden)
    tx = optim.adam(c.max_grad_norm)
    buffer = replay.make_buffer(cfg.replay)
    train_basis = item_basis(params.world.item_emb, params.world.item_pop, "dot")
    dx, da = observer.input_dim, emb_dim + 2

    def slate_of(a, basis, popular, k, fixed_share):
        """The slate of one hyper-action or a batch of them (the run's slate head)."""
        scores = a[..., :-1] @ basis.T
        return heads.compose(head, scores, popular, k, fixed_share, jax.nn.sigmoid(SHARE_GAIN * a[..., -1]))

    def mu(actor_p, x, omega):
        """The actor's hyper-action at preference omega (the query reads x's state part only)."""
        return actor.apply(actor_p, jnp.concatenate([x, omega], axis=-1))

    def init(key: jax.Array, frozen: Frozen, hyper: dict) -> MOFIRState:
        k_env, k_a, k_c, k_w, k_run = jax.random.split(key, 5)
        obs, env_state = E.batch_reset(k_env, env_params(params, hyper), B)
        x0, a0, o0 = jnp.zeros((1, dx)), jnp.zeros((1, da)), jnp.zeros((1, 2))
        actor_p = actor.init(k_a, jnp.concatenate([x0, o0], axis=-1))
        hyper_p = warm_start({"params": actor_p["params"]["hyper"]}, frozen)["params"]
        actor_p = {"params": {**actor_p["params"], "hyper": hyper_p}}
        critic_p = critic.init(k_c, x0, a0, o0)
        item = {"x": jnp.zeros((dx,)), "a": jnp.zeros((da,)), "omega": jnp.zeros((2,)), "r": jnp.zeros((2,)),
                "done": jnp.zeros(()), "x2": jnp.zeros((dx,))}
        return MOFIRState(actor=optim.learner(actor_p, tx), critic=optim.learner(critic_p, tx),
                          actor_target=actor_p, critic_target=critic_p, buffer=buffer.init(item), obs=obs,
                          env_state=env_state, w=jax.random.uniform(k_w, (B,)), key=k_run,
                          update=jnp.int32(0), hyper=hyper)

    def critic_loss(cp, b, y):
        q = critic.apply(cp, b["x"], b["a"], b["omega"])
        return vector_critic_loss(q, y), q

    def actor_loss(ap, cp, b):
        q = critic.apply(cp, b["x"], mu(ap, b["x"], b["omega"]), b["omega"])
        return scalarised_actor_loss(b["omega"], q)

    def grad_step(h, buf, carry, key):
        act_l, crit_l, act_t, crit_t = carry
        b = buffer.sample(buf, key).experience
        q_next = critic.apply(crit_t, b["x2"], mu(act_t, b["x2"], b["omega"]), b["omega"])
        y = vector_td_target(b["r"], b["done"], q_next, h["mofir.gamma"])
        (c_loss, q), gc = jax.value_and_grad(critic_loss, has_aux=True)(crit_l.params, b, y)
        crit_l = optim.step(h["mofir.critic_lr"], gc, crit_l, tx)
        a_loss, ga = jax.value_and_grad(actor_loss)(act_l.params, crit_l.params, b)
        act_l = optim.step(h["mofir.actor_lr"], ga, act_l, tx)
        tau = h["mofir.tau"]
        act_t, crit_t = optim.polyak(act_t, act_l.params, tau), optim.polyak(crit_t, crit_l.params, tau)
        logs = {"critic_loss": c_loss, "actor_loss": a_loss, "q_utility": jnp.mean(q[:, 0]),
                "q_fairness": jnp.mean(q[:, 1])}
        return (act_l, crit_l, act_t, crit_t), logs

    def learn(S: MOFIRState, key: jax.Array):
        carry = (S.actor, S.critic, S.actor_target, S.critic_target)
        carry, logs = jax.lax.scan(lambda cr, k: grad_step(S.hyper, S.buffer, cr, k), carry,
                                   jax.random.split(key, cfg.replay.grad_steps))
        act_l, crit_l, act_t, crit_t = carry
        out = {k: v.mean() for k, v in logs.items()}
        out["learning"] = jnp.float32(1.0)
        return S.replace(actor=act_l, critic=crit_l, actor_target=act_t, critic_target=crit_t), out

    def skip(S: MOFIRState, key: jax.Array):
        zero = jnp.float32(0.0)
        return S, {"critic_loss": zero, "actor_loss": zero, "q_utility": zero, "q_fairness": zero, "learning": zero}

    def update(frozen: Frozen, S: MOFIRState):
        h = S.hyper
        ep = env_params(params, h)
        key, k_roll, k_last, k_learn = jax.random.split(S.key, 4)

        def policy(k, obs, env_state, w_prev):
            k_s, k_w, k_a = jax.random.split(k, 3)
            # A new session (its first step) draws its own fairness weight.
            w = jnp.where(obs.t == 0, jax.random.uniform(k_w, w_prev.shape), w_prev)
            omega = preference(w)
            _, x = observer.inputs(frozen, k_s, obs, ep)
            mean = mu(S.actor.params, x, omega)
            a = mean + h["mofir.explore_std"] * jax.random.normal(k_a, mean.shape)
            return slate_of(a, train_basis, params.world.popular, K, h["slate.tail_share"]), w, {"x": x, "a": a, "omega": omega}

        (obs, env_state, w), tr = unroll(k_roll, policy, ep, S.obs, S.env_state, S.w, T)
        _, x_last = observer.inputs(frozen, k_last, obs, ep)
        x = tr.extras["x"]
        fair = slate_fairness(tr.n_popular, K)
        items = {"x": x, "a": tr.extras["a"], "omega": tr.extras["omega"],
                 "r": jnp.stack([tr.reward, fair], axis=-1), "done": tr.done.astype(jnp.float32),
                 "x2": jnp.concatenate([x[1:], x_last[None]], axis=0)}
        items = jax.tree.map(lambda z: z.reshape((B * T,) + z.shape[2:]), items)
        S = S.replace(buffer=buffer.add(S.buffer, items), obs=obs, env_state=env_state, w=w, key=key)
        S, learn_logs = jax.lax.cond(buffer.can_sample(S.buffer), learn, skip, S, k_learn)
        logs = rollout_stats(tr, K, B)
        logs.update(learn_logs)
        logs["w_mean"] = jnp.mean(tr.extras["omega"][..., 1])
        # The learned popularity weight and long-tail share at the two ends of the front.
        for wv in (0, 1):
            a_w = mu(S.actor.params, x_last, preference(jnp.full((B,), float(wv))))
            logs[f"kappa_w{wv}"] = -jnp.mean(a_w[:, -2])
            logs[f"share_w{wv}"] = jnp.mean(jax.nn.sigmoid(SHARE_GAIN * a_w[:, -1]))
        S = S.replace(update=S.update + 1)
        return S, jax.tree.map(lambda z: z.astype(jnp.float32), logs)

    def policy_params(frozen: Frozen, S: MOFIRState) -> Any:
        return (frozen, S.actor.params, S.hyper["mofir.eval_weight"], S.hyper["mofir.explore_std"],
                S.hyper["slate.tail_share"])

    def act(sample: bool):
        def act_fn(key, obs, env_state, p: E.EnvParams, pp, carry):
            frozen, actor_p, eval_weight, explore_std, fixed_share = pp
            k_s, k_a = jax.random.split(key)
            basis = item_basis(p.world.item_emb, p.world.item_pop, "dot")
            _, x = observer.inputs(frozen, k_s, obs, p)
            a = mu(actor_p, x, preference(eval_weight))
            if sample:
                a = a + explore_std * jax.random.normal(k_a, a.shape)
            return slate_of(a, basis, p.world.popular, p.slate_size, fixed_share), carry

        return act_fn

    return Agent(init=init, update=update, policy_params=policy_params, act=Acts(greedy=act(False), sample=act(True)),
                 init_carry=lambda n: jnp.zeros((n,)), state_specs=None)
