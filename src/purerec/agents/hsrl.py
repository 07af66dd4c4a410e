"""HSRL (Wang et al. 2025, arXiv 2510.09167): Semantic-ID items and a coarse-to-fine hierarchical
policy (``purerec.config.HSRLConfig``); ``hsrl_flat`` is the same agent with one softmax over all
items, the comparison of the catalogue-scaling study.

What is taken from the public code (``SIDPolicy_credit.py``, ``SIDFacade_credit.py``,
``Token_Critic.py``, ``A2C_SID_rl4rs.py``; see shared/reference/dynamics-and-semantic-ids.md §3):

* **Semantic action space**: every item is a code z(i) of L tokens of V values
  (``purerec.data.semantic_ids``: residual balanced k-means fitted once on the train world's
  visible embeddings, items encoded by the nearest centre per level; with ``collision_digit`` one
  more token separates items sharing a code). A world the agent meets at test time is encoded
  with the same codebooks, so new items need no retraining.
* **Policy** (``SIDPolicy``): c_0 = MLP(x) from purerec's state x = [s, context]; per level
  logits_l = W_l c_{l-1}, p_l = softmax(logits_l), c_l = LayerNorm(c_{l-1} - p_l E_l) with E_l a
  learned token table: the levels couple only through this soft residual, never through a sampled
  token. Item log-probability log pi(i | x) = sum_l log p_l(z_l(i) | x) - logsumexp over the
  world's items (``item_logits`` + a log-softmax): the renormalised product of the levels.
* **Slates**: greedy = the top-K of sum_l log p_l(z_l(i)) (``topk_rate`` 1); sampled =
  Plackett-Luce over the same logits; any head of ``[slate]`` composes the slate from them.
* **Multi-level critic** (``critic_value``): one MLP v applied to each of the L + 1 contexts,
  V(x) = their mean (fixed weights 1/(L + 1)); the contexts enter the critic with the gradient
  stopped (the critic does not train the policy's layers).
* ``update = "faithful"``: the public code's off-policy A2C: every update adds its rollout to a
  replay buffer (``[replay]``) and takes ``replay.grad_steps`` steps on uniform minibatches:
  Q = r + gamma (1 - done) V_target(x'), critic MSE(V(x), Q), A = clip(Q - V(x), -c, c),
  actor loss = mean over the slate of sum_l -log p_l(z_l(i_k)) A - ent_coef sum_l H(p_l), Adam,
  a Polyak target critic. The public code's inverted done mask (bootstrapping only at the end
  of a session, KuaiSim's) is **not** reproduced: nothing is bootstrapped past a session's end.
* ``update = "ppo"``: the same policy and critic on purerec's PPO (``[ppo]`` for epochs,
  minibatches, clipping and GAE lambda; ``[hsrl]`` for the rates, gamma and the entropy weight),
  on-policy, with the slate's log-probability taken as the sum of its items' log pi(i_k | x).

Under a learned tail (``slate.tail = learned``) a share policy over j = 0..K long-tail slots (an
MLP of K + 1 logits) draws j, trained by the same actor loss (its -log p(j) A).

The flat variant (``hsrl_flat``): c_0 = MLP(x), logits(i) = (W c_0) . f_i over the item features
f_i = [embedding, log-popularity] (``purerec.agents.nets.item_basis``, so it too acts on unseen
items), the critic on c_0, the same updates and entropy (of the item softmax).
"""

from __future__ import annotations

import os
import time
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from purerec.agents import heads, losses, optim, replay, returns
from purerec.agents.base import Acts, Agent, env_params, no_session_shards
from purerec.agents.nets import item_basis, MLP
from purerec.core.errors import ConfigError
from purerec.core.fields import Sections
from purerec.data import semantic_ids as sid
from purerec.sim import env as E
from purerec.sim.rollout import rollout_stats, unroll
from purerec.state.purifier import Frozen, make_observer


class SIDPolicy(nn.Module):
    """x f32[..., D] -> (contexts f32[..., L + 1, width], level log-probs f32[..., L, V])."""

    width: int
    levels: int
    codes: int
    hidden: int

    @nn.compact
    def __call__(self, x):
        c = MLP(self.hidden, self.width, name="state")(x)
        contexts, logps = [c], []
        for lvl in range(self.levels):
            logp = jax.nn.log_softmax(nn.Dense(self.codes, name=f"head_{lvl}")(c))
            tokens = self.param(f"tokens_{lvl}", nn.initializers.normal(0.1), (self.codes, self.width))
            c = nn.LayerNorm(name=f"norm_{lvl}")(c - jnp.exp(logp) @ tokens)
            contexts.append(c)
            logps.append(logp)
        return jnp.stack(contexts, -2), jnp.stack(logps, -2)


class FlatPolicy(nn.Module):
    """x -> (contexts f32[..., 1, width], the query f32[..., F] of a softmax over item features)."""

    width: int
    n_feat: int
    hidden: int

    @nn.compact
    def __call__(self, x):
        c = MLP(self.hidden, self.width, name="state")(x)
        return c[..., None, :], nn.Dense(self.n_feat, name="query")(c)


def item_logits(level_logp: jax.Array, codes: jax.Array) -> jax.Array:
    """f32[..., N]: sum_l log p_l(z_l(i)) of level log-probs f32[..., L, V] and codes i32[N, L]
    (unnormalised: a log-softmax over the items gives log pi(i | x))."""
    return sum(level_logp[..., lvl, :][..., codes[:, lvl]] for lvl in range(codes.shape[1]))


def materialized_item_logits(level_logp: jax.Array, codes: jax.Array) -> jax.Array:
    """``item_logits`` computed into its own buffer (a ``cond`` on an always-true predicate of the
    unbatched codes, so it stays a ``cond`` under ``vmap``): XLA:CPU otherwise fuses the gather
    into the top-K / Plackett-Luce draw that reads the logits, which made acting about 8x slower
    than the flat softmax's on 10k items."""
    return jax.lax.cond(codes[0, 0] >= 0, lambda lp: item_logits(lp, codes),
                        lambda lp: jnp.zeros(lp.shape[:-2] + codes.shape[:1], lp.dtype), level_logp)


def level_entropy(level_logp: jax.Array) -> jax.Array:
    """f32[...]: sum over levels of the entropy of each level's softmax."""
    return -jnp.sum(jnp.exp(level_logp) * level_logp, axis=(-2, -1))


def critic_value(critic: MLP, p, contexts: jax.Array) -> jax.Array:
    """The multi-level critic: the mean over the L + 1 contexts of v(c_l) (public code's token critic)."""
    return jnp.mean(critic.apply(p, contexts)[..., 0], axis=-1)


def world_codes(item_emb: jax.Array, centres: jax.Array, digit: bool) -> jax.Array:
    """i32[N, L (+1)]: a world's Semantic IDs from the train world's codebooks (``encode_jax``) and,
    with ``digit``, each item's rank among the items that share its code."""
    codes = sid.encode_jax(item_emb, centres)
    if not digit:
        return codes
    v = centres.shape[1]
    key = jnp.zeros(codes.shape[0], jnp.int32)
    for lvl in range(codes.shape[1]):
        key = key * v + codes[:, lvl]
    order = jnp.argsort(key, stable=True)
    sorted_key = key[order]
    rank = jnp.arange(key.shape[0]) - jnp.searchsorted(sorted_key, sorted_key, side="left")
    d = jnp.zeros_like(key).at[order].set(rank)
    return jnp.concatenate([codes, jnp.minimum(d, v - 1)[:, None]], axis=1)


_BOOKS: dict[str, sid.Codebook] = {}  # fitted codebooks of this process, by ``semantic_ids.key_of``


def codebook(cfg: Sections, item_emb: np.ndarray) -> sid.Codebook:
    """The train world's codebooks: from this process's memo, from the world cache
    (``sid-<key>.npz`` beside the cached worlds) or fitted (and stored there, atomically)."""
    from purerec.core.atomic import atomic_write
    from purerec.data.datasets import cache_dir

    c = cfg.hsrl
    key = sid.key_of(item_emb, c.levels, c.codes, c.kmeans_iters, c.sid_seed)
    if key in _BOOKS:
        return _BOOKS[key]
    path = os.path.join(cache_dir(cfg), f"sid-{key}.npz")
    book = None
    if os.path.exists(path):
        try:
            with np.load(path) as z:
                book = sid.Codebook(z["centres"])
            if book.centres.shape[:2] != (c.levels, c.codes):
                book = None
        except (OSError, ValueError, KeyError):
            book = None  # unreadable: fitted again and overwritten
    fitted_s = None
    if book is None:
        t0 = time.perf_counter()
        book = sid.fit(item_emb, c.levels, c.codes, c.kmeans_iters, c.sid_seed)
        fitted_s = time.perf_counter() - t0
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_write(path, lambda fh: np.savez(fh, centres=book.centres), binary=True)
        except OSError:
            pass  # the cache is an optimisation: a read-only cache fits again next time
    _BOOKS[key] = book
    print(card(item_emb, book, c.collision_digit, fitted_s))
    return book


def card(item_emb: np.ndarray, book: sid.Codebook, digit: bool, fitted_s: float | None = None) -> str:
    """The train world's SID card (one line): levels, codes, collisions before and after the
    collision digit, and the reconstruction error per level (``semantic_ids.stats``)."""
    codes = sid.encode(item_emb, book)
    st = sid.stats(item_emb, book, codes)
    after = sid.stats(item_emb, book, sid.with_collision_digit(codes, book.codes))["collision_rate"] if digit else None
    how = f"fitted in {fitted_s:.1f}s" if fitted_s is not None else "from the cache"
    return (f"Semantic IDs ({len(codes)} train items, {how}): {book.levels} levels x {book.codes} codes"
            f"{' + a collision digit' if digit else ''}; items sharing their code with another "
            f"{100 * st['collision_rate']:.1f}% (at most {st['max_sharing']} on one code)"
            + (f", {100 * after:.1f}% with the digit" if digit else "")
            + "; reconstruction error (share of the embedding variance left) "
            + " / ".join(f"{e:.2f}" for e in st["recon_error"]))


class Heads(NamedTuple):
    """The policy's outputs for a batch of states: contexts, item logits, entropy, share logits."""

    contexts: jax.Array
    logits: jax.Array
    entropy: jax.Array
    share_logits: jax.Array | None


@struct.dataclass
class HSRLState:
    actor: optim.Learner  # {"policy": ..., "share": ... under a learned tail}
    critic: optim.Learner
    critic_target: Any
    buffer: Any  # the replay buffer (faithful), () under ppo
    obs: E.Obs
    env_state: E.EnvState
    key: jax.Array
    update: jax.Array
    hyper: dict


def make(cfg: Sections, params: E.EnvParams, axis_name: str | None = None) -> Agent:
    from purerec.agents import spec_of

    kind = spec_of(cfg).kind
    no_session_shards(cfg, axis_name, kind)
    c = cfg.hsrl
    flat = kind == "hsrl_flat"
    observer = make_observer(cfg)
    K, B, T = params.slate_size, cfg.train.num_envs, cfg.train.rollout_len
    head = heads.resolve(cfg)
    popular_train = params.world.popular
    tx = optim.adam(c.max_grad_norm)
    critic = MLP(c.hidden, 1)
    share_actor = MLP(c.hidden, K + 1) if head.learned else None
    faithful = c.update == "faithful"
    buffer = replay.make_buffer(cfg.replay) if faithful else None
    if flat:
        policy = FlatPolicy(c.width, params.world.item_emb.shape[1] + 1, c.hidden)
        centres = None
    else:
        book = codebook(cfg, np.asarray(params.world.item_emb))
        centres = jnp.asarray(book.centres)
        n_levels = c.levels + int(c.collision_digit)
        policy = SIDPolicy(c.width, n_levels, c.codes, c.hidden)
    n = B * T
    if not faithful and n % cfg.ppo.minibatches:
        raise ConfigError("ppo.minibatches", cfg.ppo.minibatches, f"a divisor of num_envs * rollout_len ({n})")

    def world_items(world) -> jax.Array:
        """What the policy scores a world's items by: codes i32[N, L'] or features f32[N, F]."""
        if flat:
            return item_basis(world.item_emb, world.item_pop, "dot")
        return world_codes(world.item_emb, centres, c.collision_digit)

    world_items_jit = jax.jit(world_items)  # one program, reused for every world of this shape
    train_items = jax.device_get(world_items_jit(params.world))

    def outputs(pa, x, items) -> Heads:
        ctx, out = policy.apply(pa["policy"], x)
        if flat:
            logits = out @ items.T
            logp = jax.nn.log_softmax(logits)
            ent = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
        else:
            logits, ent = materialized_item_logits(out, items), level_entropy(out)
        share = None if share_actor is None else share_actor.apply(pa["share"], x)
        return Heads(ctx, logits, ent, share)

    def slate_logp(hd: Heads, slate: jax.Array, popular) -> jax.Array:
        """sum over the slate of log pi(i_k | x), plus log p(j) of its share choice under a learned tail."""
        logp = jax.nn.log_softmax(hd.logits)
        out = jnp.take_along_axis(logp, slate, axis=-1).sum(-1)
        if hd.share_logits is not None:
            j = heads.tail_slots(slate, popular)
            out = out + jnp.take_along_axis(jax.nn.log_softmax(hd.share_logits), j[..., None], -1)[..., 0]
        return out

    def init(key: jax.Array, frozen: Frozen, hyper: dict) -> HSRLState:
        k_env, k_p, k_c, k_s, k_run = jax.random.split(key, 5)
        obs, env_state = E.batch_reset(k_env, env_params(params, hyper), B)
        x0 = jnp.zeros((1, observer.input_dim))
        pa = {"policy": policy.init(k_p, x0)}
        if share_actor is not None:
            pa["share"] = share_actor.init(k_s, x0)
        ctx0, _ = policy.apply(pa["policy"], x0)
        pc = critic.init(k_c, ctx0)
        buf = ()
        if faithful:
            item = {"x": x0[0], "slate": jnp.zeros((K,), jnp.int32), "reward": jnp.float32(0.0),
                    "done": jnp.float32(0.0), "x_next": x0[0]}
            buf = buffer.init(item)
        return HSRLState(actor=optim.learner(pa, tx), critic=optim.learner(pc, tx), critic_target=pc, buffer=buf,
                         obs=obs, env_state=env_state, key=k_run, update=jnp.int32(0), hyper=hyper)

    def rollout_policy(frozen, pa, pc, ep, share):
        def act(key, obs, env_state, carry):
            k_s, k_a, k_j = jax.random.split(key, 3)
            _, x = observer.inputs(frozen, k_s, obs, ep)
            hd = outputs(pa, x, train_items)
            keys = jax.random.split(k_a, x.shape[0])
            if share_actor is None:
                slates = jax.vmap(heads.sample, in_axes=(None, 0, 0, None, None, None))(
                    head, keys, hd.logits, popular_train, K, share)
            else:
                j = jax.random.categorical(k_j, hd.share_logits)
                slates = jax.vmap(heads.sample, in_axes=(None, 0, 0, None, None, None, 0))(
                    head, keys, hd.logits, popular_train, K, share, j.astype(jnp.float32) / K)
            extras = {"x": x}
            if not faithful:
                extras["logp"] = slate_logp(hd, slates, popular_train)
                extras["v"] = critic_value(critic, pc, jax.lax.stop_gradient(hd.contexts))
            return slates, carry, extras

        return act

    # ---- faithful: the public code's off-policy A2C ------------------------------------------
    def grad_step(h, buf, carry, key):
        a, q, q_t = carry
        b = buffer.sample(buf, key).experience
        hd_next = outputs(a.params, b["x_next"], train_items)
        v_next = critic_value(critic, q_t, jax.lax.stop_gradient(hd_next.contexts))
        target = losses.td_target(b["reward"], b["done"], v_next, h["hsrl.gamma"])

        hd = outputs(a.params, b["x"], train_items)
        ctx = jax.lax.stop_gradient(hd.contexts)

        def critic_loss(pc):
            return losses.mse(critic_value(critic, pc, ctx), target)

        lq, gq = jax.value_and_grad(critic_loss)(q.params)
        adv = jnp.clip(target - critic_value(critic, q.params, ctx), -c.adv_clip, c.adv_clip)
        adv = jax.lax.stop_gradient(adv)

        def actor_loss(pa):
            hd = outputs(pa, b["x"], train_items)
            logp = jax.nn.log_softmax(hd.logits)
            per_item = jnp.take_along_axis(logp, b["slate"], axis=-1).mean(-1)  # mean over the slate
            nll = per_item
            if hd.share_logits is not None:
                j = heads.tail_slots(b["slate"], popular_train)
                nll = nll + jnp.take_along_axis(jax.nn.log_softmax(hd.share_logits), j[:, None], -1)[:, 0]
            ent = jnp.mean(hd.entropy)
            return -jnp.mean(nll * adv) - h["hsrl.ent_coef"] * ent, ent

        (la, ent), ga = jax.value_and_grad(actor_loss, has_aux=True)(a.params)
        a = optim.step(h["hsrl.actor_lr"], ga, a, tx)
        q = optim.step(h["hsrl.critic_lr"], gq, q, tx)
        q_t = optim.polyak(q_t, q.params, h["hsrl.tau"])
        logs = {"hsrl_critic_loss": lq, "hsrl_actor_loss": la, "hsrl_entropy": ent, "hsrl_value": target.mean()}
        return (a, q, q_t), logs

    def update_faithful(frozen: Frozen, S: HSRLState):
        h = S.hyper
        ep = env_params(params, h)
        key, k_roll, k_last, k_learn = jax.random.split(S.key, 4)
        act = rollout_policy(frozen, S.actor.params, S.critic.params, ep, h["slate.tail_share"])
        (obs, env_state, _), tr = unroll(k_roll, act, ep, S.obs, S.env_state, jnp.zeros((B,)), T)
        _, x_last = observer.inputs(frozen, k_last, obs, ep)
        buf = replay.add_rollout(buffer, S.buffer, tr.extras["x"], x_last, slate=tr.slate, reward=tr.reward,
                                 done=tr.done.astype(jnp.float32))
        idle = lambda c: {k: jnp.float32(0.0) for k in ("hsrl_critic_loss", "hsrl_actor_loss", "hsrl_entropy",
                                                         "hsrl_value")}
        (a, q, q_t), logs, learned = replay.learn_when_ready(
            buffer, buf, lambda b, cr, k: grad_step(h, b, cr, k), (S.actor, S.critic, S.critic_target), k_learn,
            cfg.replay.grad_steps, idle)
        logs = {**rollout_stats(tr, K, B), **logs, "hsrl_learned": learned}
        S = S.replace(actor=a, critic=q, critic_target=q_t, buffer=buf, obs=obs, env_state=env_state, key=key,
                      update=S.update + 1)
        return S, logs

    # ---- ppo: the same heads on purerec's PPO ---------------------------------------------------
    pc_ = cfg.ppo
    n_mb, mb_size = pc_.minibatches, n // pc_.minibatches

    def update_ppo(frozen: Frozen, S: HSRLState):
        h = S.hyper
        ep = env_params(params, h)
        key, k_roll, k_last, k_perm = jax.random.split(S.key, 4)
        act = rollout_policy(frozen, S.actor.params, S.critic.params, ep, h["slate.tail_share"])
        (obs, env_state, _), tr = unroll(k_roll, act, ep, S.obs, S.env_state, jnp.zeros((B,)), T)
        _, x_last = observer.inputs(frozen, k_last, obs, ep)
        v_last = critic_value(critic, S.critic.params, outputs(S.actor.params, x_last, train_items).contexts)
        adv, target = returns.gae(tr.reward, tr.extras["v"], tr.done, v_last, h["hsrl.gamma"], h["ppo.gae_lambda"])
        batch = {"x": tr.extras["x"], "slate": tr.slate, "logp": tr.extras["logp"], "adv": adv, "target": target}
        batch = jax.tree.map(lambda z: z.reshape((n,) + z.shape[2:]), batch)

        def loss_fn(p, mb):
            pa, pc = p
            hd = outputs(pa, mb["x"], train_items)
            v = critic_value(critic, pc, jax.lax.stop_gradient(hd.contexts))
            return losses.ppo_clip(slate_logp(hd, mb["slate"], popular_train), mb["logp"], mb["adv"], v,
                                   mb["target"], hd.entropy, h["ppo.clip_eps"], h["ppo.vf_coef"], h["hsrl.ent_coef"])

        def epoch(carry, k):
            def minibatch(carry, mb):
                a_l, c_l = carry
                (_, parts), (ga, gc) = jax.value_and_grad(loss_fn, has_aux=True)((a_l.params, c_l.params), mb)
                return (optim.step(h["hsrl.actor_lr"], ga, a_l, tx), optim.step(h["hsrl.critic_lr"], gc, c_l, tx)), parts

            perm = jax.random.permutation(k, n)
            mbs = jax.tree.map(lambda z: z[perm].reshape((n_mb, mb_size) + z.shape[1:]), batch)
            return jax.lax.scan(minibatch, carry, mbs)

        (a, q), parts = jax.lax.scan(epoch, (S.actor, S.critic), jax.random.split(k_perm, pc_.epochs))
        logs = {**rollout_stats(tr, K, B), **{f"hsrl_{k}": jnp.mean(v) for k, v in parts.items()},
                "hsrl_value": jnp.mean(tr.extras["v"])}
        S = S.replace(actor=a, critic=q, obs=obs, env_state=env_state, key=key, update=S.update + 1)
        return S, jax.tree.map(lambda z: z.astype(jnp.float32), logs)

    def policy_params(frozen: Frozen, S: HSRLState):
        return frozen, S.actor.params, S.hyper["slate.tail_share"]

    def for_world(pp, p: E.EnvParams):
        """The policy params with the world's item codes (or features) appended, computed once."""
        return (*pp[:3], world_items_jit(p.world))

    def heads_of(key, obs, p: E.EnvParams, pp) -> Heads:
        frozen, pa = pp[:2]
        _, x = observer.inputs(frozen, key, obs, p)
        return outputs(pa, x, pp[3] if len(pp) > 3 else world_items(p.world))

    def greedy(key, obs, env_state, p: E.EnvParams, pp, carry):
        hd = heads_of(key, obs, p, pp)
        j = None if hd.share_logits is None else jnp.argmax(hd.share_logits)
        return heads.slate_of_choice(head, hd.logits, p.world.popular, p.slate_size, pp[2], j), carry

    def sample(key, obs, env_state, p: E.EnvParams, pp, carry):
        k_s, k_a, k_j = jax.random.split(key, 3)
        hd = heads_of(k_s, obs, p, pp)
        share = None
        if hd.share_logits is not None:
            share = jax.random.categorical(k_j, hd.share_logits).astype(jnp.float32) / p.slate_size
        return heads.sample(head, k_a, hd.logits, p.world.popular, p.slate_size, pp[2], share), carry

    return Agent(init=init, update=update_faithful if faithful else update_ppo, policy_params=policy_params,
                 act=Acts(greedy=greedy, sample=sample), init_carry=lambda n: jnp.zeros((n,)), state_specs=None,
                 for_world=for_world)
