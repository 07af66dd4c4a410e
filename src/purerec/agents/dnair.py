"""DNaIR (Shi et al., TOIS 2023; fairness-aware): a DQN over items whose slate is the top-K of
the per-item Q, trained on the env reward plus a novelty bonus (``purerec.config.DNaIRConfig``).

We follow the sibling KuaiSim port of DNaIR (HG4PFG ``OneStagePolicy_Dqn``; see
shared/reference/public-code-facts.md section 2.6), with these choices:

* **Q over all items via item features**, as the test world has other items than the train
  world: no per-item-id output layer. Q(x, i) = v(x) + phi(x) . f_i, where x = [state, context]
  (``purerec.state.purifier.Observer.inputs``), phi, v an MLP head, and f_i the item's features: the
  shared basis ``nets.item_basis(item_emb, item_pop, "dot")`` = [embedding, log-popularity in
  [0, 1]] plus one column, the item's novelty (below) times log10(1.1) (in [0, 1]), since the
  bonus is a known function of the item. f is built from ``params.world`` wherever Q is needed,
  so the same parameters score the test world's items.
* **Slate**: the top-K items by Q (``act.greedy``). Exploration (training rollouts and
  ``act.sample``): each slot is independently replaced, with probability ``epsilon``, by an item
  drawn uniformly among those not in the top-K and not drawn for another slot, so slates stay
  duplicate-free (the port allows duplicates).
* **Novelty bonus** (training reward only): r~ = r + novelty_weight * mean_{i in slate} q_i /
  log10(pop_i + 1.1), with q_i = (n_pos + 1) / (n + 2) the item's Laplace-smoothed positive rate
  in the logs (n = ``item_pop``, the logged exposures; n_pos = ``item_log_reward`` x ``item_pop``,
  the expected positives: logged mean feedback x exposures) and pop_i = ``item_pop`` min-max
  normalised to [0, 1] over the world's items (the port's min-max). The logs also carry the
  bonus' mean (``dnair_bonus``) and the shaped reward's mean (``dnair_reward_shaped``).
* **Q(s, slate) = the SUM of the K per-item Q values** (the port's choice).
* **Slate heads** (``purerec.agents.heads``): the native head is the top-K above; under ``slate.head =
  grouped`` the greedy slate is the head's (the best popular and long-tail items by Q, in the
  head's split) and a replacement is drawn from the replaced item's own group. With a learned
  tail the action gains a choice j of 0..K long-tail slots valued by a share head Q(x, j) (an
  MLP of K + 1 outputs) added to the slate's value: greedy j = argmax_j Q(x, j) + the best
  slate's item values with j tail slots (``heads.group_values``), epsilon-greedy j in training,
  and the Double-DQN target uses the same slate value.
* **Target**: r~ + gamma (1 - done) Q_target(s', a') with a' = the top-K of the *online* net at
  s' (Double DQN). The port does the reverse (online values on the target net's top-K, through a
  bug that ignores its critic argument); standard Double DQN keeps the bootstrap value on the
  slow target net, which is what the target network is for. MSE loss, Polyak ``tau`` after every
  gradient step, clipped Adam with the traced ``lr``.

Replay (``purerec.config.ReplayConfig``): every update adds its rollout's B x T transitions
(x, slate, shaped reward, done, x'), x' the next step's input (the last step's from the final
obs). After a done, the next obs is a new session's reset obs: the (1 - done) factor keeps it out
of the target. Then ``replay.grad_steps`` gradient steps on uniform minibatches, skipped while
the buffer holds fewer than ``replay.min_size`` transitions.
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

NOVELTY_SCALE = math.log10(1.1)  # novelty x this is in [0, 1] (q <= 1, log10(pop + 1.1) >= log10 1.1)


def item_quality(world) -> jax.Array:
    """q_i = (n_pos + 1) / (n + 2): Laplace-smoothed positive rate of each item in the logs."""
    n = world.item_pop
    return (world.item_log_reward * n + 1.0) / (n + 2.0)


def novelty(world) -> jax.Array:
    """f32[N]: q_i / log10(pop_i + 1.1), pop_i = item_pop min-max normalised over the world's items."""
    pop = world.item_pop
    lo, hi = jnp.min(pop), jnp.max(pop)
    pop01 = (pop - lo) / jnp.maximum(hi - lo, 1e-8)
    return item_quality(world) / jnp.log10(pop01 + 1.1)


def item_features(world) -> jax.Array:
    """f32[N, d + 2]: the shared item basis [embedding, log-popularity] and the scaled novelty."""
    return jnp.concatenate([item_basis(world.item_emb, world.item_pop, "dot"),
                            (novelty(world) * NOVELTY_SCALE)[:, None]], axis=1)


class QHead(MLP):
    """x -> f32[..., F + 1]: the item-feature coefficients phi(x) and the state term v(x)."""


def q_all(net: QHead, p, x: jax.Array, feats: jax.Array) -> jax.Array:
    """Q(x, i) for every item: f32[..., N]."""
    return item_values(net.apply(p, x), feats)


def q_at(net: QHead, p, x: jax.Array, feats: jax.Array, slate: jax.Array) -> jax.Array:
    """Q(x, i) for the items of slates i32[..., K]: f32[..., K]."""
    return item_values_at(net.apply(p, x), feats, slate)


def distinct_outside(key: jax.Array, excluded: jax.Array, n: int) -> jax.Array:
    """i32[K]: K distinct items drawn uniformly among the ``n`` items not in ``excluded`` (i32[K],
    distinct ids), one after another (each draw is also kept out of the later ones)."""
    k = excluded.shape[0]
    u = jax.random.uniform(key, (k,))
    ex0 = jnp.concatenate([jnp.sort(excluded), jnp.full((k,), n + 2 * k, jnp.int32)])

    def draw(ex, j):
        m = n - k - j  # items still available
        r = jnp.minimum((u[j] * m).astype(jnp.int32), m - 1)
        # the r-th (0-based) item not in ex: step over the excluded ids in ascending order
        r, _ = jax.lax.scan(lambda r, e: (r + (r >= e).astype(jnp.int32), None), r, ex)
        return jnp.sort(ex.at[k + j].set(r)), r

    _, out = jax.lax.scan(draw, ex0, jnp.arange(k))
    return out


def epsilon_slate(key: jax.Array, q: jax.Array, k: int, epsilon: jax.Array) -> jax.Array:
    """The top-K of q f32[N], each slot replaced with probability ``epsilon`` by a random item not in
    the top-K (and distinct from the other replacements): a duplicate-free epsilon-greedy slate."""
    top = jax.lax.top_k(q, k)[1]
    k_mask, k_draw = jax.random.split(key)
    rand = distinct_outside(k_draw, top, q.shape[0])
    return jnp.where(jax.random.uniform(k_mask, (k,)) < epsilon, rand, top)


@struct.dataclass
class DNaIRState:
    q: optim.Learner
    q_target: Any
    buffer: Any
    obs: E.Obs
    env_state: E.EnvState
    key: jax.Array
    update: jax.Array  # i32 updates done
    hyper: dict


def make(cfg: Sections, params: E.EnvParams, axis_name: str | None = None) -> Agent:
    no_session_shards(cfg, axis_name, "dnair")
    c = cfg.dnair
    observer = make_observer(cfg)
    K, B, T = params.slate_size, cfg.train.num_envs, cfg.train.rollout_len
    feats = item_features(params.world)  # the train world's, for training
    n_feat = feats.shape[1]
    net = QHead(c.hidden, n_feat + 1)
    tx = optim.adam(c.max_grad_norm)
    buffer = replay.make_buffer(cfg.replay)
    nov_train = novelty(params.world)
    head = heads.resolve(cfg)
    popular_train = params.world.popular
    # under a learned tail: Q of the share choice j (0..K long-tail slots), added to the slate's value
    share_net = MLP(c.hidden, K + 1) if head.learned else None

    def init(key: jax.Array, frozen: Frozen, hyper: dict) -> DNaIRState:
        k_env, k_net, k_run = jax.random.split(key, 3)
        obs, env_state = E.batch_reset(k_env, env_params(params, hyper), B)
        x0 = jnp.zeros((observer.input_dim,))
        if share_net is None:
            p = net.init(k_net, x0[None])
        else:
            k_net, k_share = jax.random.split(k_net)
            p = {"items": net.init(k_net, x0[None]), "share": share_net.init(k_share, x0[None])}
        item = {"x": x0, "slate": jnp.zeros((K,), jnp.int32), "reward": jnp.float32(0.0),
                "done": jnp.float32(0.0), "x_next": x0}
        return DNaIRState(q=optim.learner(p, tx), q_target=p, buffer=buffer.init(item), obs=obs,
                          env_state=env_state, key=k_run, update=jnp.int32(0), hyper=hyper)

    def values(p, x, f):
        """(Q(x, i) f32[..., N], Q(x, j) f32[..., K + 1] or None without a learned tail)."""
        if share_net is None:
            return q_all(net, p, x, f), None
        return q_all(net, p["items"], x, f), share_net.apply(p["share"], x)

    def best_choice(qi, qs, popular):
        """The greedy share choice: argmax_j Q(x, j) + the best slate's item values with j tail slots."""
        return None if qs is None else jnp.argmax(qs + heads.group_values(qi, popular, K), axis=-1)

    def slate_value(p, x, f, slate, popular):
        """Q(x, slate) = the sum of its items' Q (+ Q of its share choice under a learned tail)."""
        if share_net is None:
            return q_at(net, p, x, f, slate).sum(-1)
        v = q_at(net, p["items"], x, f, slate).sum(-1)
        j = heads.tail_slots(slate, popular)
        return v + jnp.take_along_axis(share_net.apply(p["share"], x), j[..., None], axis=-1)[..., 0]

    def explore(key, qi, qs, popular, share, epsilon):
        """One session's epsilon-greedy slate (and, under a learned tail, an epsilon-greedy choice j)."""
        if qs is None:
            return heads.epsilon_greedy(head, key, qi, popular, K, share, epsilon)
        k_j, k_u, k_s = jax.random.split(key, 3)
        j = jnp.where(jax.random.uniform(k_u) < epsilon, jax.random.randint(k_j, (), 0, K + 1),
                      best_choice(qi, qs, popular))
        return heads.epsilon_greedy(head, k_s, qi, popular, K, share, epsilon, j.astype(jnp.float32) / K)

    def rollout_policy(frozen, p, ep, epsilon, share):
        def policy(key, obs, env_state, carry):
            k_s, k_e = jax.random.split(key)
            _, x = observer.inputs(frozen, k_s, obs, ep)
            qi, qs = values(p, x, feats)
            slates = jax.vmap(explore, in_axes=(0, 0, None if qs is None else 0, None, None, None))(
                jax.random.split(k_e, x.shape[0]), qi, qs, popular_train, share, epsilon)
            return slates, carry, x

        return policy

    def grad_step(h, buf, carry, key):
        q, q_t = carry
        b = buffer.sample(buf, key).experience
        # the greedy slate at x' under the head (the max of Q over the slates the head allows)
        qi, qs = values(q.params, b["x_next"], feats)
        a_next = heads.slate_of_choice(head, qi, popular_train, K, h["slate.tail_share"],
                                       best_choice(qi, qs, popular_train))
        next_v = slate_value(q_t, b["x_next"], feats, a_next, popular_train)
        y = losses.td_target(b["reward"], b["done"], next_v, h["dnair.gamma"])

        def loss_fn(p):
            pred = slate_value(p, b["x"], feats, b["slate"], popular_train)
            return losses.mse(pred, y), pred

        (loss, pred), g = jax.value_and_grad(loss_fn, has_aux=True)(q.params)
        q = optim.step(h["dnair.lr"], g, q, tx)
        q_t = optim.polyak(q_t, q.params, h["dnair.tau"])
        return (q, q_t), {"dnair_loss": loss, "dnair_q": pred.mean(), "dnair_target": y.mean()}

    def update(frozen: Frozen, S: DNaIRState):
        h = S.hyper
        ep = env_params(params, h)
        key, k_roll, k_last, k_learn = jax.random.split(S.key, 4)
        (obs, env_state, _), tr = unroll(k_roll, rollout_policy(frozen, S.q.params, ep, h["dnair.epsilon"],
                                                                 h["slate.tail_share"]), ep,
                                         S.obs, S.env_state, jnp.zeros((B,)), T)
        _, x_last = observer.inputs(frozen, k_last, obs, ep)
        bonus = nov_train[tr.slate].mean(-1)  # [T, B]
        shaped = tr.reward + h["dnair.novelty_weight"] * bonus
        buf = replay.add_rollout(buffer, S.buffer, tr.extras, x_last, slate=tr.slate, reward=shaped,
                                 done=tr.done.astype(jnp.float32))
        zero = jnp.float32(0.0)
        (q, q_t), logs, learned = replay.learn_when_ready(
            buffer, buf, lambda b, c, k: grad_step(h, b, c, k), (S.q, S.q_target), k_learn, cfg.replay.grad_steps,
            lambda c: {"dnair_loss": zero, "dnair_q": zero, "dnair_target": zero})
        logs = {**rollout_stats(tr, K, B), **logs, "dnair_bonus": bonus.mean(), "dnair_reward_shaped": shaped.mean(),
                "dnair_learned": learned}
        S = S.replace(q=q, q_target=q_t, buffer=buf, obs=obs, env_state=env_state, key=key, update=S.update + 1)
        return S, logs

    def policy_params(frozen: Frozen, S: DNaIRState):
        return frozen, S.q.params, S.hyper["dnair.epsilon"], S.hyper["slate.tail_share"]

    def scores(key, obs, p: E.EnvParams, pp):
        frozen, qp = pp[:2]
        _, x = observer.inputs(frozen, key, obs, p)
        return values(qp, x, item_features(p.world))

    def greedy(key, obs, env_state, p: E.EnvParams, pp, carry):
        qi, qs = scores(key, obs, p, pp)
        return heads.slate_of_choice(head, qi, p.world.popular, p.slate_size, pp[3],
                                     best_choice(qi, qs, p.world.popular)), carry

    def sample(key, obs, env_state, p: E.EnvParams, pp, carry):
        k_s, k_e = jax.random.split(key)
        qi, qs = scores(k_s, obs, p, pp)
        return explore(k_e, qi, qs, p.world.popular, pp[3], pp[2]), carry

    return Agent(init=init, update=update, policy_params=policy_params, act=Acts(greedy=greedy, sample=sample),
                 init_carry=lambda n: jnp.zeros((n,)), state_specs=None)
