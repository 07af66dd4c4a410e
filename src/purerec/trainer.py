"""Stage II: hierarchical PPO on the purified state, as pure functions built by ``make_train``.

One update = a rollout of ``rollout_len`` steps of ``num_envs`` parallel sessions (``lax.scan``),
GAE for both levels, then ``epochs`` x ``minibatches`` PPO steps (``lax.scan``s). ``chunk`` scans
``chunk_updates`` updates; ``train(key)`` runs Stage I and every chunk in one program. Seeds are
mapped or vmapped by the caller (``purerec.experiment.seed_batcher``).

Session shards (``train.session_shards``, data parallelism). Built with ``axis_name``, the pieces
run inside a ``shard_map`` over that device axis: each device resets and steps its share of the
sessions with its own random stream, and takes its share of every PPO minibatch; the exposure
counts behind Fair, the gradients and the logged sums are summed over the axis, so parameters,
optimiser states and the exposure window stay identical on every device (``runner_specs``).

Acting (``agent.action = "hyper"``, the default; the authors' KuaiSim lineage). The manager
draws goal logits u ~ N(mu(x), sigma_m) at a session's first step and every ``manager_interval``
steps after (held in between), z = sigmoid(u) = [w_acc, w_fair]. The worker draws a
hyper-action a ~ N(x(s^, z), sigma_w): the coefficients of eq. 6's scorer in the item basis;
the slate is deterministic given a (``purerec.slate.compose``): with ``slate_rule = grouped``
it holds round(K w_fair / (w_acc + w_fair)) long-tail items and the rest popular, each part the
top of its group by Psi. PPO uses the Gaussian densities of u and a (no slate likelihood), so an
update costs no pass over the items. ``plackett_luce`` samples slates from the scores instead.

Rewards. Worker: the env reward r_t. Manager (and FLAT): r_t + lambda * Fair_t; with
``fair_reward = slate`` (default) Fair_t = Fair(L_t) = -Gini of the popular / long-tail exposure
of this session's slate = -|2 p_t - 1| / 2, a per-session signal; with ``batch`` it is -Gini of
item exposure over all items, counted over all parallel sessions' slates of the last
``fair_window`` steps (one number shared by the batch). The manager's advantages come from
step-level GAE on its reward, and its policy loss uses only the decision steps. No gradient
flows between levels: the worker gets z as data, and each level has its own actor and critic
optimisers. The manager and both critics also see the session context (``Agent.inputs``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import PartitionSpec

from purerec import diffusion, dsrm, losses, returns, slate
from purerec import env as E
from purerec.config import Config
from purerec.encoder import StateEncoder
from purerec.nets import Critic, FlatActor, Manager, Worker, gaussian_entropy, gaussian_log_prob, item_basis
from purerec.metrics import gini, gini_of_counts
from purerec.stage1 import make_stage1

Z_EPS = 1e-4

# Config fields that change neither shapes nor control flow: they are traced values in the
# program (``Runner.hyper``), so runs that differ only in them can be vmapped together.
VMAPPABLE = ("agent.lambda_fair", "ppo.actor_lr", "ppo.critic_lr", "ppo.ent_coef", "ppo.vf_coef",
             "ppo.clip_eps", "ppo.gamma", "ppo.gae_lambda", "env.temper_offset", "env.fair_threshold",
             "env.fair_penalty")


def hyper_from_config(cfg: Config) -> dict[str, jax.Array]:
    """The traced hyperparameters of one run, keyed by dotted config path."""
    out = {}
    for path in VMAPPABLE:
        section, name = path.split(".")
        out[path] = jnp.float32(getattr(getattr(cfg, section), name))
    return out


@struct.dataclass
class Level:
    actor: Any
    critic: Any
    actor_opt: Any
    critic_opt: Any


@struct.dataclass
class Runner:
    worker: Level
    manager: Level | None
    env_state: E.EnvState
    obs: E.Obs
    u: jax.Array  # f32[B, 2] the manager's current goal logits per session (z = sigmoid(u))
    fair_buf: jax.Array  # f32[fair_window, N] exposure counts of the last steps (fair_reward = batch)
    key: jax.Array
    update: jax.Array  # i32 updates done
    hyper: dict  # traced hyperparameters (see VMAPPABLE)


@struct.dataclass
class Frozen:
    """Stage-I products, frozen in Stage II (the feedback head only seeds the actor's query)."""

    encoder: Any
    dsrm: Any
    feedback_head: Any


@dataclass(frozen=True, eq=False)
class Agent:
    """Static pieces of an agent (modules, schedule, config): everything but arrays."""

    cfg: Config
    encoder: StateEncoder
    denoiser: dsrm.Denoiser
    sched: diffusion.Schedule
    manager: Manager
    worker: Worker | FlatActor
    w_critic: Critic
    m_critic: Critic

    def state(self, frozen: Frozen, key: jax.Array, obs: E.Obs, item_emb: jax.Array) -> jax.Array:
        """s^ for a (batch of) observation(s): encoder, then DSRM unless the agent is 'hrl'."""
        s = self.encoder.apply(frozen.encoder, item_emb[obs.items], obs.feedback, obs.valid)
        if not self.cfg.agent.use_dsrm:
            return s
        return dsrm.purify(frozen.dsrm, self.denoiser, self.sched, self.cfg.dsrm, key, s)

    def inputs(self, frozen: Frozen, key: jax.Array, obs: E.Obs, params: E.EnvParams):
        """(s^, x): the purified state, and the manager's / critics' input x = [s^, context].

        Context (``agent.context``): what the platform knows of this session beyond the state --
        the step t / max_len and the popular share of the items in the observation window.
        """
        s = self.state(frozen, key, obs, params.world.item_emb)
        if not self.cfg.agent.context:
            return s, s
        pop = params.world.popular[obs.items] & obs.valid
        share = jnp.sum(pop, -1) / jnp.maximum(jnp.sum(obs.valid, -1), 1)
        ctx = jnp.stack([obs.t / params.max_len, share], axis=-1).astype(s.dtype)
        return s, jnp.concatenate([s, ctx], axis=-1)

    def worker_dist(self, worker_params, s, z):
        """(mean, log_std) of the worker's hyper-action (see ``purerec.nets``)."""
        if self.cfg.agent.hierarchy:
            return self.worker.apply(worker_params, s, z)
        return self.worker.apply(worker_params, s)

    def tail_share(self, action, z):
        """The long-tail share of the slate: the goal's w_fair / (w_acc + w_fair), or FLAT's own."""
        if self.cfg.agent.hierarchy:
            return z[..., 1] / jnp.maximum(z[..., 0] + z[..., 1], Z_EPS)
        return jax.nn.sigmoid(action[..., -1])

    def slate(self, action, z, basis, popular, k: int):
        """The deterministic slate of one hyper-action (``agent.slate_rule``)."""
        scores = basis @ action[: basis.shape[1]]
        return slate.compose(scores, popular, self.tail_share(action, z), k, self.cfg.agent.slate_rule)

    def worker_critic_input(self, x, z):
        return jnp.concatenate([x, z], axis=-1) if self.cfg.agent.hierarchy else x


def stage1_key(seed_key: jax.Array) -> jax.Array:
    return jax.random.fold_in(seed_key, 1)


def init_key(seed_key: jax.Array) -> jax.Array:
    return jax.random.fold_in(seed_key, 2)


def make_agent(cfg: Config, emb_dim: int) -> Agent:
    a = cfg.agent
    d = cfg.encoder.state_dim
    if a.hierarchy:
        worker = Worker(emb_dim, a.score, a.init_logit_scale, a.action_std, a.pop_scale)
    else:
        worker = FlatActor(emb_dim, a.score, a.init_logit_scale, a.action_std)
    return Agent(
        cfg=cfg,
        encoder=StateEncoder(d, cfg.encoder.hidden),
        denoiser=dsrm.make_denoiser(cfg.dsrm, d),
        sched=diffusion.make_schedule(cfg.dsrm.steps, cfg.dsrm.schedule, cfg.dsrm.beta_start, cfg.dsrm.beta_end),
        manager=Manager(a.hidden, a.manager_std),
        worker=worker,
        w_critic=Critic(a.hidden),
        m_critic=Critic(a.hidden),
    )


def _optimiser(cfg: Config):
    """Clipped Adam direction; the (traced) learning rate is applied in ``_step_level``."""
    return optax.chain(optax.clip_by_global_norm(cfg.ppo.max_grad_norm), optax.scale_by_adam())


def _level(actor, critic, cfg: Config) -> Level:
    opt = _optimiser(cfg)
    return Level(actor=actor, critic=critic, actor_opt=opt.init(actor), critic_opt=opt.init(critic))


def _step_level(level: Level, grads, cfg: Config, actor_lr, critic_lr) -> Level:
    opt = _optimiser(cfg)
    ga, gc = grads
    ua, actor_opt = opt.update(ga, level.actor_opt, level.actor)
    uc, critic_opt = opt.update(gc, level.critic_opt, level.critic)
    step = lambda p, u, lr: jax.tree.map(lambda a, b: a - lr * b, p, u)
    return Level(actor=step(level.actor, ua, actor_lr), critic=step(level.critic, uc, critic_lr),
                 actor_opt=actor_opt, critic_opt=critic_opt)


def runner_specs(axis_name: str, hierarchy: bool, lead: int = 1) -> Runner:
    """Partition specs (a prefix of a Runner with ``lead`` leading seed axes): the per-session
    arrays are split along their session axis, everything else is replicated."""
    split, rep = PartitionSpec(*(None,) * lead, axis_name), PartitionSpec()
    return Runner(worker=rep, manager=rep if hierarchy else None, env_state=split, obs=split, u=split,
                  fair_buf=rep, key=rep, update=rep, hyper=rep)


def make_train(cfg: Config, params: E.EnvParams, axis_name: str | None = None):
    """Pure pieces for the train world: ``stage1``, ``init``, ``update``, ``chunk`` and ``train``.

    With ``axis_name``, ``init``, ``update`` and ``chunk`` are one device's share of a run whose
    sessions are split in ``train.session_shards`` along that mapped axis (``stage1`` and ``train``
    stay whole-run pieces for ``axis_name = None``).
    """
    world = params.world
    agent = make_agent(cfg, world.item_emb.shape[1])
    basis = item_basis(world.item_emb, world.item_pop, cfg.agent.score)
    n_items, k_slate = world.n_items, params.slate_size
    shards = cfg.train.session_shards if axis_name else 1
    B_all, T = cfg.train.num_envs, cfg.train.rollout_len
    B = B_all // shards  # this device's sessions
    hyper_action = cfg.agent.action == "hyper"

    def across(x):
        """Sum over the session shards (identity without them)."""
        return x if axis_name is None else jax.tree.map(lambda a: jax.lax.psum(a, axis_name), x)

    def own(key):
        """This shard's random stream from a key every shard holds."""
        return key if axis_name is None else jax.random.fold_in(key, jax.lax.axis_index(axis_name))

    def mean_all(x):
        return x.mean() if axis_name is None else across(x.sum()) / (x.size * shards)
    d = cfg.encoder.state_dim
    hier = cfg.agent.hierarchy
    interval = cfg.agent.manager_interval
    stage1 = make_stage1(cfg, params)
    # A slate holds distinct items, so an item gets at most one exposure per session and step:
    # the window's counts are integers in [0, num_envs * fair_window] and a histogram replaces the sort.
    max_exposure = B_all * cfg.agent.fair_window
    exposure_gini = partial(gini_of_counts, max_count=max_exposure) if max_exposure <= 8 * n_items else gini

    def env_params(h) -> E.EnvParams:
        return params.replace(temper_offset=h["env.temper_offset"], fair_threshold=h["env.fair_threshold"],
                              fair_penalty=h["env.fair_penalty"])

    def init(key: jax.Array, frozen: Frozen, hyper: dict | None = None) -> Runner:
        hyper = hyper_from_config(cfg) if hyper is None else hyper
        k_env, k_w, k_wc, k_m, k_mc, k_run = jax.random.split(key, 6)
        obs, env_state = E.batch_reset(own(k_env), env_params(hyper), B)
        s0, z0 = jnp.zeros((1, d)), jnp.full((1, 2), 0.5)
        _, x0 = agent.inputs(frozen, k_run, jax.tree.map(lambda a: a[:1], obs), params)
        x0 = jnp.zeros_like(x0)
        w_actor = agent.worker.init(k_w, s0, z0) if hier else agent.worker.init(k_w, s0)
        # Warm start: the actor's query q = W s^ + b starts as Stage I's feedback predictor, so the
        # scores rank items by predicted (observed) feedback from the first update.
        p = w_actor["params"]
        w_actor = {"params": {**p, "query": {**p["query"], "Dense_0": frozen.feedback_head["params"]["Dense_0"]}}}
        worker = _level(w_actor, agent.w_critic.init(k_wc, agent.worker_critic_input(x0, z0)), cfg)
        manager = _level(agent.manager.init(k_m, x0), agent.m_critic.init(k_mc, x0), cfg) if hier else None
        return Runner(worker=worker, manager=manager, env_state=env_state, obs=obs,
                      u=jnp.zeros((B, 2)), fair_buf=jnp.zeros((cfg.agent.fair_window, n_items)),
                      key=k_run, update=jnp.int32(0), hyper=hyper)

    def rollout_step(frozen: Frozen, carry, key):
        r: Runner = carry
        k_s, k_m, k_w, k_e = jax.random.split(own(key), 4)
        s, x = agent.inputs(frozen, k_s, r.obs, params)
        if hier:
            mean_m, ls_m = agent.manager.apply(r.manager.actor, x)
            u_new = mean_m + jnp.exp(ls_m) * jax.random.normal(k_m, mean_m.shape)
            decide = (r.obs.t % interval) == 0
            u = jnp.where(decide[:, None], u_new, r.u)
            logp_m = gaussian_log_prob(u, mean_m, ls_m)
            v_m = agent.m_critic.apply(r.manager.critic, x)
        else:
            decide = jnp.zeros((B,), bool)
            u = r.u
            logp_m = v_m = jnp.zeros((B,))
        z = jax.nn.sigmoid(u)
        mean_w, ls_w = agent.worker_dist(r.worker.actor, s, z)
        if hyper_action:
            a = mean_w + jnp.exp(ls_w) * jax.random.normal(k_w, mean_w.shape)
            logp_w = gaussian_log_prob(a, mean_w, ls_w)
            slates = jax.vmap(agent.slate, in_axes=(0, 0, None, None, None))(a, z, basis, world.popular, k_slate)
        else:
            a = jnp.zeros((B, 1))
            logits = mean_w[:, : basis.shape[1]] @ basis.T
            slates, logp_w = jax.vmap(slate.sample_with_log_prob, in_axes=(0, 0, None))(
                jax.random.split(k_w, B), logits, k_slate)
        v_w = agent.w_critic.apply(r.worker.critic, agent.worker_critic_input(x, z))
        obs, env_state, reward, term, trunc, info = E.batch_step(k_e, r.env_state, slates, env_params(r.hyper))
        if cfg.agent.fair_reward == "slate":
            # Fair(L_t) = -Gini of the (popular, long-tail) exposure of this slate = -|2p - 1| / 2.
            fair = -0.5 * jnp.abs(2.0 * info["n_popular"] / k_slate - 1.0)
            fair_buf = r.fair_buf
        else:
            counts = across(jnp.zeros((n_items,)).at[slates.reshape(-1)].add(1.0))
            fair_buf = jnp.concatenate([r.fair_buf[1:], counts[None]], axis=0)
            fair = jnp.broadcast_to(-exposure_gini(fair_buf.sum(0)), (B,))
        done = term | trunc
        tr = {"s": s, "x": x, "u": u, "z": z, "a": a, "decide": decide, "slate": slates, "logp_w": logp_w,
              "logp_m": logp_m, "v_w": v_w, "v_m": v_m, "r": reward,
              "r_h": reward + r.hyper["agent.lambda_fair"] * fair, "done": done,
              "ep_len": jnp.where(done, info["episode_len"], 0), "ep_ret": jnp.where(done, info["episode_return"], 0.0),
              "n_pop": info["n_popular"], "fair": fair}
        return r.replace(obs=obs, env_state=env_state, u=u, fair_buf=fair_buf), tr

    def ppo_coefs(h):
        return h["ppo.clip_eps"], h["ppo.vf_coef"], h["ppo.ent_coef"]

    def worker_loss(p, mb, h):
        actor, critic = p
        mean, ls = agent.worker_dist(actor, mb["s"], mb["z"])
        if hyper_action:
            logp, ent = gaussian_log_prob(mb["a"], mean, ls), gaussian_entropy(ls)
        else:
            logp, ent = slate.linear_log_prob_entropy(mean[:, : basis.shape[1]], basis, mb["slate"])
        v = agent.w_critic.apply(critic, agent.worker_critic_input(mb["x"], mb["z"]))
        return losses.ppo_clip(logp, mb["logp_w"], mb["adv_w"], v, mb["tgt_w"], ent, *ppo_coefs(h),
                                axis_name=axis_name)

    def manager_loss(p, mb, h):
        actor, critic = p
        mean, ls = agent.manager.apply(actor, mb["x"])
        logp, ent = gaussian_log_prob(mb["u"], mean, ls), gaussian_entropy(ls)
        v = agent.m_critic.apply(critic, mb["x"])
        return losses.ppo_clip(logp, mb["logp_m"], mb["adv_m"], v, mb["tgt_m"], ent, *ppo_coefs(h),
                                weight=mb["decide"], axis_name=axis_name)

    def sgd(r: Runner, batch, key):
        P = cfg.ppo
        h = r.hyper
        lrs = (h["ppo.actor_lr"], h["ppo.critic_lr"])
        n = B * T
        mb_size = n // P.minibatches

        def epoch(carry, k):
            r = carry
            perm = jax.random.permutation(own(k), n)
            mbs = jax.tree.map(lambda x: x[perm].reshape((P.minibatches, mb_size) + x.shape[1:]), batch)

            def minibatch(r, mb):
                (_, wl), wg = jax.value_and_grad(worker_loss, has_aux=True)((r.worker.actor, r.worker.critic), mb, h)
                r = r.replace(worker=_step_level(r.worker, across(wg), cfg, *lrs))
                logs = {f"worker_{k}": v for k, v in wl.items()}
                if hier:
                    (_, ml), mg = jax.value_and_grad(manager_loss, has_aux=True)((r.manager.actor, r.manager.critic), mb, h)
                    r = r.replace(manager=_step_level(r.manager, across(mg), cfg, *lrs))
                    logs.update({f"manager_{k}": v for k, v in ml.items()})
                return r, across(logs)

            return jax.lax.scan(minibatch, r, mbs)

        r, logs = jax.lax.scan(epoch, r, jax.random.split(key, P.epochs))
        return r, jax.tree.map(jnp.mean, logs)

    def update(frozen: Frozen, r: Runner):
        h = r.hyper
        gamma, lam = h["ppo.gamma"], h["ppo.gae_lambda"]
        key, k_roll, k_last, k_sgd = jax.random.split(r.key, 4)
        r, tr = jax.lax.scan(partial(rollout_step, frozen), r, jax.random.split(k_roll, T))
        _, x_last = agent.inputs(frozen, own(k_last), r.obs, params)
        v_w_last = agent.w_critic.apply(r.worker.critic, agent.worker_critic_input(x_last, jax.nn.sigmoid(r.u)))
        adv_w, tgt_w = returns.gae(tr["r"], tr["v_w"], tr["done"], v_w_last, gamma, lam)
        if hier:
            v_m_last = agent.m_critic.apply(r.manager.critic, x_last)
            adv_m, tgt_m = returns.gae(tr["r_h"], tr["v_m"], tr["done"], v_m_last, gamma, lam)
        else:
            # FLAT: one policy on the fairness-shaped reward.
            adv_w, tgt_w = returns.gae(tr["r_h"], tr["v_w"], tr["done"], v_w_last, gamma, lam)
            adv_m, tgt_m = jnp.zeros_like(adv_w), jnp.zeros_like(adv_w)
        batch = {k: tr[k] for k in ("s", "x", "u", "z", "a", "decide", "slate", "logp_w", "logp_m")}
        batch.update(adv_w=adv_w, tgt_w=tgt_w, adv_m=adv_m, tgt_m=tgt_m)
        batch = jax.tree.map(lambda x: x.reshape((B * T,) + x.shape[2:]), batch)
        r = r.replace(key=key)
        r, losses = sgd(r, batch, k_sgd)
        episodes = across(tr["done"].sum())
        n_done = jnp.maximum(episodes, 1)
        p = across(tr["n_pop"].sum(1)) / (B_all * k_slate)
        n_dec = jnp.maximum(across(tr["decide"].sum()), 1)
        logs = {
            "episodes": episodes,
            "Len": across(tr["ep_len"].sum()) / n_done,
            "R_cum": across(tr["ep_ret"].sum()) / n_done,
            "R_each": mean_all(tr["r"]),
            "AD": jnp.mean(jnp.abs(2 * p - 1)),
            "Fair": mean_all(tr["fair"]),
            "w_acc": across(jnp.sum(tr["z"][..., 0] * tr["decide"])) / n_dec,
            "w_fair": across(jnp.sum(tr["z"][..., 1] * tr["decide"])) / n_dec,
            "tail_share": 1.0 - across(tr["n_pop"].sum()) / (B_all * T * k_slate),
            **losses,
        }
        return r.replace(update=r.update + 1), logs

    def chunk(r: Runner, frozen: Frozen):
        return jax.lax.scan(lambda r, _: update(frozen, r), r, None, length=cfg.train.chunk_updates)

    def stage1_frozen(key: jax.Array):
        enc_p, den_p, head_p, curves = stage1(key)
        return Frozen(encoder=enc_p, dsrm=den_p, feedback_head=head_p), curves

    def train(key: jax.Array, hyper: dict | None = None):
        frozen, curves = stage1_frozen(stage1_key(key))
        r = init(init_key(key), frozen, hyper)
        r, logs = jax.lax.scan(lambda r, _: update(frozen, r), r, None, length=cfg.train.total_updates)
        return frozen, r, logs, curves

    return {"agent": agent, "stage1": stage1_frozen, "init": init, "update": update, "chunk": chunk,
            "train": train, "runner_specs": partial(runner_specs, axis_name, hier) if axis_name else None}


def agent_policy(agent: Agent, sample: bool, key, obs, state, params: E.EnvParams, pp, u):
    """The agent acting in one session, as in training (carry ``u``: the goal logits, held for
    ``manager_interval`` steps). ``sample``: draw the goal and the action (the training policy);
    else take their means (greedy). Returns (slate, u)."""
    frozen, worker_actor, manager_actor = pp
    world = params.world
    cfg = agent.cfg.agent
    basis = item_basis(world.item_emb, world.item_pop, cfg.score)
    k_s, k_m, k_w = jax.random.split(key, 3)
    s, x = agent.inputs(frozen, k_s, obs, params)
    if cfg.hierarchy:
        mean_m, ls_m = agent.manager.apply(manager_actor, x)
        u_new = mean_m + jnp.exp(ls_m) * jax.random.normal(k_m, mean_m.shape) if sample else mean_m
        u = jnp.where(obs.t % cfg.manager_interval == 0, u_new, u)
    z = jax.nn.sigmoid(u)
    mean_w, ls_w = agent.worker_dist(worker_actor, s, z)
    if cfg.action == "hyper":
        a = mean_w + jnp.exp(ls_w) * jax.random.normal(k_w, mean_w.shape) if sample else mean_w
        return agent.slate(a, z, basis, world.popular, params.slate_size), u
    logits = basis @ mean_w[: basis.shape[1]]
    if sample:
        return slate.sample(k_w, logits, params.slate_size), u
    return slate.greedy(logits, params.slate_size), u


@functools.lru_cache(maxsize=None)
def policy_for(agent: Agent, sample: bool):
    """One policy object per (agent, action rule): a stable static argument for the jitted rollout."""
    return functools.partial(agent_policy, agent, sample)
