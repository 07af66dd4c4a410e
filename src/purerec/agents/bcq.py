"""Discrete BCQ (Fujimoto et al. 2019; offline RL), slate version (``purerec.config.BCQConfig``).

What carries over from the public discrete BCQ (tianshou ``DiscreteBCQPolicy`` as used by
DORL-codes / EasyRL4Rec; see shared/reference/public-code-facts.md): a Q head and an imitation
(behaviour-cloning) head on one shared trunk (two tanh layers of ``hidden``); actions whose
imitation probability falls below a threshold relative to the most likely one are masked; the
policy is the argmax of the masked Q; the bootstrap value is the *target* net's Q at the
*online* net's masked argmax at s'; loss = Huber(Q) + NLL(imitation) + ``imitation_penalty`` x
mean(imitation logits^2); hard target copy every ``target_every`` gradient steps; learning
from the logs only. No slate version exists publicly; our readings:

* **Logs** (``init``): ``purerec.sim.logs.collect`` runs the train world's popularity logging
  policy (Plackett-Luce over log(1 + pop)) for ``offline.sessions`` parallel sessions x
  ``max_len`` steps. Every logged window is turned once into the agent's input x =
  [state, context] (``purerec.state.purifier.Observer.inputs``, one time step of sessions at a time) and
  the flat dataset (x, slate, reward, done) lives in the agent state. The logs are time-major
  (row = t x sessions + column), so the next input of row i is row i + sessions: x holds
  (max_len + 1) x sessions rows, the last block from the final windows (no stored x_next copy).
  Where a session ended, the next row is a new session's first window; (1 - done) keeps it out
  of the target. Learning never sees any other data.
* **Per-item heads through item features** (the test world has other items): the trunk's
  output is [phi_q, v_q, phi_b, v_b]; Q(x, i) = v_q + phi_q . f_i and the imitation logit
  l(x, i) = v_b + phi_b . f_i, with f = ``nets.item_basis(item_emb, item_pop, "dot")`` (embedding
  and log-popularity in [0, 1]) built from the ``params`` passed in, so the same weights score
  any world's items.
* **Imitation** (the slate likelihood): the behaviour showed K items; we read its likelihood as
  the product of the K items' probabilities under pi_b(i | x) = softmax(l(x, .))_i (the
  Plackett-Luce law's first-draw factors, ignoring the without-replacement renormalisation):
  NLL = -mean over the slate's items of log softmax(l)_i.
* **Threshold for slates** (``allowed`` / ``bcq_slate``): item i is allowed iff pi(i|x) >=
  ``threshold`` x pi_(K)(x), pi_(K) the K-th largest imitation probability, i.e. l_i - l_(K) >=
  log(threshold). The K most likely items always pass, so a slate always exists; relative to
  the single most likely item (the one-item rule) only the very most popular items would ever
  pass. The slate is the top-K of Q among the allowed items (K = 1 gives discrete BCQ).
* **Slate heads** (``purerec.agents.heads``): under a grouped head the BCQ slate is the head's slate
  of Q with disallowed items ranked after the allowed ones of their group. With a learned tail a
  share head gives Q(x, j) and imitation logits b(x, j) for j = 0..K long-tail slots: the logged
  slate's j joins the Q loss (its Q added to the slate's) and the imitation loss (NLL of j), and
  the chosen j is the best allowed one (pi_b(j|x) >= tau max pi_b, ``share_choice``).
* **Q of a slate** = the sum of its K per-item Q values (as DNaIR); target y = r + gamma (1 -
  done) Q_target(x', slate*(x')), slate* the BCQ slate of the *online* net at x'. 1-step
  targets: tianshou's n-step 3 is left out (the logs' sessions are short and the per-item sum
  already makes Q slate-level). Huber loss (delta 1, as smooth-L1).
* **Updates**: each ``update`` takes ``replay.grad_steps`` gradient steps on uniform minibatches
  of ``replay.batch_size`` logged transitions (clipped Adam with the traced ``lr``); the target
  net is copied every ``target_every`` gradient steps (counted over the whole run). Each update
  also runs a greedy rollout of ``train.rollout_len`` steps of ``train.num_envs`` sessions in
  the train env and logs ``rollout_stats``: monitoring only (the curves every agent logs),
  never learnt from.
* **Acting**: ``act.greedy`` = the BCQ slate. ``act.sample`` (BCQ has no exploring policy of its
  own: it never collects data) = the BCQ slate with each slot replaced with probability
  ``SAMPLE_EPSILON`` = 0.01 by a random item outside it (``dnair.epsilon_slate``), tianshou's
  small evaluation epsilon.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from purerec.agents import heads as slate_heads, losses, optim
from purerec.agents.base import Acts, Agent, env_params, no_session_shards
from purerec.agents.nets import item_basis, item_values, item_values_at, MLP
from purerec.core.fields import Sections
from purerec.sim import env as E
from purerec.sim.logs import collect
from purerec.sim.rollout import rollout_stats, unroll
from purerec.state.purifier import Frozen, make_observer

SAMPLE_EPSILON = 0.01  # act.sample's per-slot random replacement


def allowed(logits: jax.Array, k: int, tau: jax.Array) -> jax.Array:
    """bool[..., N]: items whose imitation probability is >= tau x the K-th largest one
    (softmax(l)_i >= tau softmax(l)_(K)  <=>  l_i - l_(K) >= log tau); tau in [0, 1]."""
    # the K-th largest = the min of the top-K values (slicing the last top-K value instead makes
    # XLA:CPU's top-k about 100x slower: 1.2 s vs 0.016 s for 512 x 10,728 logits)
    kth = jax.lax.top_k(logits, k)[0].min(-1, keepdims=True)
    return logits - kth >= jnp.log(tau)


TOPK = slate_heads.Head("topk", False)


def bcq_slate(q: jax.Array, logits: jax.Array, k: int, tau: jax.Array, head: slate_heads.Head = TOPK,
              popular: jax.Array | None = None, fixed_share: jax.Array | None = None,
              choice: jax.Array | None = None) -> jax.Array:
    """i32[..., K]: the head's slate of Q among the ``allowed`` items (at least K always are).
    Under a grouped head a group may hold fewer allowed items than its slots: those slots take
    the group's best disallowed items (ranked below every allowed one, never across groups)."""
    ok = allowed(logits, k, tau)
    if head.rule == "topk":
        return jax.lax.top_k(jnp.where(ok, q, -jnp.inf), k)[1]
    return slate_heads.slate_of_choice(head, jnp.where(ok, q, q - 1e9), popular, k, fixed_share, choice)


def share_choice(qs: jax.Array, ls: jax.Array, q: jax.Array, logits: jax.Array, popular: jax.Array, k: int,
                 tau: jax.Array) -> jax.Array:
    """Under a learned tail: the share choice j (long-tail slots) with the best Q(x, j) + the best
    slate's item Q among the choices the imitation head allows (the BCQ filter on K + 1 choices:
    pi_b(j|x) >= tau max_j' pi_b(j'|x)); disallowed items count 1e9 less (``bcq_slate``)."""
    ok_j = ls - ls.max(-1, keepdims=True) >= jnp.log(tau)
    gv = slate_heads.group_values(jnp.where(allowed(logits, k, tau), q, q - 1e9), popular, k)
    return jnp.argmax(jnp.where(ok_j, qs + gv, -jnp.inf), axis=-1)


class BCQNet(MLP):
    """x -> f32[..., 2 (F + 1)]: [phi_q, v_q, phi_b, v_b], the Q and imitation heads' item-feature
    coefficients and state terms on one shared trunk."""


def split_heads(out: jax.Array) -> tuple[jax.Array, jax.Array]:
    h = out.shape[-1] // 2
    return out[..., :h], out[..., h:]


def heads(net: BCQNet, p, x: jax.Array, feats: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(Q(x, i), l(x, i)) for every item: f32[..., N] each."""
    oq, ob = split_heads(net.apply(p, x))
    return item_values(oq, feats), item_values(ob, feats)


def bcq_loss(q_slate: jax.Array, target: jax.Array, logits: jax.Array, slate: jax.Array, penalty: jax.Array):
    """(total, parts) of one minibatch: Huber(sum_K Q(x, a_k), y) + NLL + penalty x mean(l^2).

    q_slate f32[B, K] the per-item Q of the logged slates, target f32[B], logits f32[B, N] the
    imitation logits over all items, slate i32[B, K]."""
    q_loss = optax.huber_loss(q_slate.sum(-1), target, delta=1.0).mean()
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, slate, axis=-1).mean()
    reg = jnp.mean(logits**2)
    return q_loss + nll + penalty * reg, {"q_loss": q_loss, "nll": nll, "logit_sq": reg}


class Data(NamedTuple):
    """The logged dataset: row i's next input is x[i + sessions]."""

    x: jax.Array  # f32[(T + 1) S, D]
    slate: jax.Array  # i32[T S, K]
    reward: jax.Array  # f32[T S]
    done: jax.Array  # f32[T S]


def log_dataset(observer, frozen: Frozen, key: jax.Array, logs, n_sessions: int, params: E.EnvParams) -> Data:
    """Inputs of every logged window (one time step of ``n_sessions`` windows at a time)."""
    steps = lambda a: a.reshape((-1, n_sessions) + a.shape[1:])
    obs = jax.tree.map(lambda a, b: jnp.concatenate([steps(a), steps(b)[-1:]], 0), logs.obs, logs.next_obs)
    n_blocks = obs.t.shape[0]
    x = jax.lax.map(lambda a: observer.inputs(frozen, a[0], a[1], params)[1],
                    (jax.random.split(key, n_blocks), obs))
    return Data(x=x.reshape((-1, x.shape[-1])), slate=logs.slate, reward=logs.reward,
                done=logs.done.astype(jnp.float32))


@struct.dataclass
class BCQState:
    net: optim.Learner
    target: Any
    data: Data
    obs: E.Obs  # the monitoring rollout's sessions
    env_state: E.EnvState
    key: jax.Array
    steps: jax.Array  # i32 gradient steps done
    update: jax.Array  # i32 updates done
    hyper: dict


LOG_KEYS = ("bcq_loss", "bcq_q_loss", "bcq_nll", "bcq_logit_sq", "bcq_q", "bcq_target", "bcq_allowed")


def make(cfg: Sections, params: E.EnvParams, axis_name: str | None = None) -> Agent:
    no_session_shards(cfg, axis_name, "bcq")
    c = cfg.bcq
    observer = make_observer(cfg)
    K, B, T = params.slate_size, cfg.train.num_envs, cfg.train.rollout_len
    S = cfg.offline.sessions
    feats = item_basis(params.world.item_emb, params.world.item_pop, "dot")  # the train world's
    net = BCQNet(c.hidden, 2 * (feats.shape[1] + 1))
    head = slate_heads.resolve(cfg)
    popular_train = params.world.popular
    # under a learned tail: Q(x, j) and imitation logits b(x, j) of the share choice j = 0..K
    share_net = MLP(c.hidden, 2 * (K + 1)) if head.learned else None
    tx = optim.adam(c.max_grad_norm)

    def items_of(p):
        return p if share_net is None else p["items"]

    def choose(p, x, q, logits, tau):
        """The share choice j (None without a learned tail)."""
        if share_net is None:
            return None
        qs, ls = split_heads(share_net.apply(p["share"], x))
        return share_choice(qs, ls, q, logits, popular_train, K, tau)

    def init(key: jax.Array, frozen: Frozen, hyper: dict) -> BCQState:
        k_logs, k_x, k_env, k_net, k_run = jax.random.split(key, 5)
        ep = env_params(params, hyper)
        data = log_dataset(observer, frozen, k_x, collect(k_logs, ep, S, params.max_len), S, ep)
        obs, env_state = E.batch_reset(k_env, ep, B)
        x0 = jnp.zeros((1, observer.input_dim))
        if share_net is None:
            p = net.init(k_net, x0)
        else:
            k_net, k_share = jax.random.split(k_net)
            p = {"items": net.init(k_net, x0), "share": share_net.init(k_share, x0)}
        return BCQState(net=optim.learner(p, tx), target=p, data=data, obs=obs, env_state=env_state, key=k_run,
                        steps=jnp.int32(0), update=jnp.int32(0), hyper=hyper)

    def greedy_policy(frozen, p, ep, tau, share):
        def policy(key, obs, env_state, carry):
            _, x = observer.inputs(frozen, key, obs, ep)
            q, logits = heads(net, items_of(p), x, feats)
            return bcq_slate(q, logits, K, tau, head, popular_train, share, choose(p, x, q, logits, tau)), carry, ()

        return policy

    def grad_step(h, data: Data, carry, key):
        learner, target, steps = carry
        n = data.reward.shape[0]
        idx = jax.random.randint(key, (cfg.replay.batch_size,), 0, n)
        x, x_next, slate = data.x[idx], data.x[idx + S], data.slate[idx]
        tau = h["bcq.threshold"]
        q_next, l_next = heads(net, items_of(learner.params), x_next, feats)
        a_next = bcq_slate(q_next, l_next, K, tau, head, popular_train, h["slate.tail_share"],
                           choose(learner.params, x_next, q_next, l_next, tau))
        next_v = item_values_at(split_heads(net.apply(items_of(target), x_next))[0], feats, a_next).sum(-1)
        if share_net is not None:  # + Q_target(x', j of a')
            qs_t = split_heads(share_net.apply(target["share"], x_next))[0]
            next_v = next_v + jnp.take_along_axis(qs_t, slate_heads.tail_slots(a_next, popular_train)[:, None], -1)[:, 0]
        y = losses.td_target(data.reward[idx], data.done[idx], next_v, h["bcq.gamma"])

        def loss_fn(p):
            oq, ob = split_heads(net.apply(items_of(p), x))
            q_slate = item_values_at(oq, feats, slate)
            logits = item_values(ob, feats)
            if share_net is None:
                total, parts = bcq_loss(q_slate, y, logits, slate, h["bcq.imitation_penalty"])
                return total, (parts, q_slate.sum(-1))
            # the logged slate's share choice: its Q joins the slate's, its logit the imitation loss
            qs, ls = split_heads(share_net.apply(p["share"], x))
            j = slate_heads.tail_slots(slate, popular_train)[:, None]
            q_aug = jnp.concatenate([q_slate, jnp.take_along_axis(qs, j, -1)], -1)
            total, parts = bcq_loss(q_aug, y, logits, slate, h["bcq.imitation_penalty"])
            nll_j = -jnp.take_along_axis(jax.nn.log_softmax(ls, -1), j, -1).mean()
            total = total + nll_j + h["bcq.imitation_penalty"] * jnp.mean(ls**2)
            return total, (parts, q_aug.sum(-1))

        (loss, (parts, pred)), g = jax.value_and_grad(loss_fn, has_aux=True)(learner.params)
        learner = optim.step(h["bcq.lr"], g, learner, tx)
        steps = steps + 1
        sync = steps % c.target_every == 0
        target = jax.tree.map(lambda t, o: jnp.where(sync, o, t), target, learner.params)
        n_allowed = allowed(l_next, K, h["bcq.threshold"]).sum(-1).astype(jnp.float32).mean()
        logs = {"bcq_loss": loss, "bcq_q_loss": parts["q_loss"], "bcq_nll": parts["nll"],
                "bcq_logit_sq": parts["logit_sq"], "bcq_q": pred.mean(), "bcq_target": y.mean(),
                "bcq_allowed": n_allowed}
        return (learner, target, steps), logs

    def update(frozen: Frozen, S_: BCQState):
        h = S_.hyper
        ep = env_params(params, h)
        key, k_roll, k_learn = jax.random.split(S_.key, 3)
        (obs, env_state, _), tr = unroll(k_roll, greedy_policy(frozen, S_.net.params, ep, h["bcq.threshold"],
                                                                       h["slate.tail_share"]), ep,
                                         S_.obs, S_.env_state, jnp.zeros((B,)), T)
        (learner, target, steps), logs = jax.lax.scan(
            lambda carry, k: grad_step(h, S_.data, carry, k), (S_.net, S_.target, S_.steps),
            jax.random.split(k_learn, cfg.replay.grad_steps))
        logs = {**rollout_stats(tr, K, B), **jax.tree.map(jnp.mean, logs)}
        S_ = S_.replace(net=learner, target=target, steps=steps, obs=obs, env_state=env_state, key=key,
                        update=S_.update + 1)
        return S_, logs

    def policy_params(frozen: Frozen, S_: BCQState):
        return frozen, S_.net.params, S_.hyper["bcq.threshold"], S_.hyper["slate.tail_share"]

    def slate_of(key, obs, p: E.EnvParams, pp):
        frozen, np_, tau, share = pp
        _, x = observer.inputs(frozen, key, obs, p)
        q, logits = heads(net, items_of(np_), x, item_basis(p.world.item_emb, p.world.item_pop, "dot"))
        j = None
        if share_net is not None:
            qs, ls = split_heads(share_net.apply(np_["share"], x))
            j = share_choice(qs, ls, q, logits, p.world.popular, p.slate_size, tau)
        return q, bcq_slate(q, logits, p.slate_size, tau, head, p.world.popular, share, j), j

    def greedy(key, obs, env_state, p: E.EnvParams, pp, carry):
        return slate_of(key, obs, p, pp)[1], carry

    def sample(key, obs, env_state, p: E.EnvParams, pp, carry):
        k_s, k_e = jax.random.split(key)
        q, slate, j = slate_of(k_s, obs, p, pp)
        # epsilon-greedy over scores that rank the BCQ slate first, in its order (the head's
        # slate of these scores is the BCQ slate itself)
        rank = jnp.zeros_like(q).at[slate].set(jnp.arange(p.slate_size, 0, -1, dtype=q.dtype))
        return slate_heads.epsilon_greedy(head, k_e, rank, p.world.popular, p.slate_size, pp[3],
                                          jnp.float32(SAMPLE_EPSILON), None if j is None else j / p.slate_size), carry

    return Agent(init=init, update=update, policy_params=policy_params, act=Acts(greedy=greedy, sample=sample),
                 init_carry=lambda n: jnp.zeros((n,)), state_specs=None)
