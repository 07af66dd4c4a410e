"""DSRM-HRL's agent (paper Sec. 3.3) and its one-level ablation FLAT: PPO on the (purified) state.

``agent.kind = hrl``: a manager and a worker, both PPO; ``flat``: one PPO policy. The purifier
is its own axis (``state.purifier``): DSRM-HRL = hrl + dsrm, HRL = hrl + none, FLAT = flat + dsrm.

One update = a rollout of ``rollout_len`` steps of ``num_envs`` sessions (``purerec.sim.rollout.unroll``),
GAE for both levels (``purerec.agents.returns.gae``), then ``epochs`` x ``minibatches`` PPO steps
(``purerec.agents.losses.ppo_clip``), each a ``lax.scan``.

Session shards (``train.session_shards``, data parallelism). Built with ``axis_name``, the pieces
run inside a ``shard_map`` over that device axis: each device resets and steps its share of the
sessions with its own random stream, and takes its share of every PPO minibatch; the exposure
counts behind Fair, the gradients and the logged sums are summed over the axis, so parameters,
optimiser states and the exposure window stay identical on every device (``state_specs``).

Acting (``agent.action = "hyper"``, the default; the authors' KuaiSim lineage). The manager
draws goal logits u ~ N(mu(x), sigma_m) at a session's first step and every ``manager_interval``
steps after (held in between: the per-session carry, in training and evaluation alike),
z = sigmoid(u) = [w_acc, w_fair]. The worker draws a hyper-action a ~ N(x(s^, z), sigma_w): the
coefficients of eq. 6's scorer in the item basis; the slate is deterministic given a
(``purerec.agents.heads.compose``): under the default head (grouped, learned tail) it holds round(K w_fair /
(w_acc + w_fair)) long-tail items and the rest popular, each part the top of its group by Psi;
the native head (``slate.head = native``) is eq. 6's literal top-K of Psi. PPO uses the
Gaussian densities of u and a (no slate likelihood), so an update costs no pass over the items.
``plackett_luce`` samples slates from the scores instead.

Rewards. Worker: the env reward r_t. Manager (and FLAT): r_t + lambda * Fair_t; with
``fair_reward = slate`` (default) Fair_t = Fair(L_t) = -Gini of the popular / long-tail exposure
of this session's slate = -|2 p_t - 1| / 2, a per-session signal; with ``batch`` it is -Gini of
item exposure over all items, counted over all parallel sessions' slates of the last
``fair_window`` steps (one number shared by the batch). The manager's advantages come from
step-level GAE on its reward, and its policy loss uses only the decision steps. No gradient
flows between levels: the worker gets z as data, and each level has its own actor and critic
optimisers. The manager and both critics also see the session context (``purerec.state.purifier``).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import struct
from jax.sharding import PartitionSpec

from purerec.agents import heads, losses, optim, returns
from purerec.agents.base import Acts, Agent, env_params, shards_of
from purerec.agents.nets import Critic, FlatActor, gaussian_entropy, gaussian_log_prob, item_basis, Manager, Worker
from purerec.core.fields import Sections
from purerec.sim import env as E, slate
from purerec.sim.metrics import gini, gini_of_counts
from purerec.sim.rollout import rollout_stats, unroll
from purerec.state.purifier import Frozen, make_observer
from purerec.state.sections import resolve_agent

Z_EPS = 1e-4


@struct.dataclass
class Level:
    """One level's actor and critic with their optimisers."""

    actor: optim.Learner
    critic: optim.Learner


@struct.dataclass
class HRLState:
    worker: Level
    manager: Level | None
    env_state: E.EnvState
    obs: E.Obs
    u: jax.Array  # f32[B, 2] the manager's current goal logits per session (z = sigmoid(u))
    fair_buf: jax.Array  # f32[fair_window, N] exposure counts of the last steps (fair_reward = batch)
    key: jax.Array
    update: jax.Array  # i32 updates done
    hyper: dict  # traced hyperparameters


def make(cfg: Sections, params: E.EnvParams, axis_name: str | None = None) -> Agent:
    a = cfg.agent
    hier = resolve_agent(cfg)[0] == "hrl"
    world = params.world
    emb_dim = world.item_emb.shape[1]
    observer = make_observer(cfg)
    if hier:
        worker_net = Worker(emb_dim, a.score, a.init_logit_scale, a.action_std, a.pop_scale)
    else:
        worker_net = FlatActor(emb_dim, a.score, a.init_logit_scale, a.action_std)
    manager_net, w_critic, m_critic = Manager(a.hidden, a.manager_std), Critic(a.hidden), Critic(a.hidden)
    tx = optim.adam(cfg.ppo.max_grad_norm)
    basis = item_basis(world.item_emb, world.item_pop, a.score)
    n_items, k_slate = world.n_items, params.slate_size
    sh = shards_of(cfg, axis_name)
    if params.loop and axis_name:  # the platform's exposure counts are summed over the shards
        params = params.replace(shard_axis=axis_name)
    B_all, T = cfg.train.num_envs, cfg.train.rollout_len
    B = B_all // sh.n  # this device's sessions
    hyper_action = a.action == "hyper"
    head = heads.resolve(cfg)  # with agent.action = plackett_luce a topk head (Config.validate)
    interval = a.manager_interval
    d = cfg.encoder.state_dim
    # A slate holds distinct items, so an item gets at most one exposure per session and step:
    # the window's counts are integers in [0, num_envs * fair_window] and a histogram replaces the sort.
    max_exposure = B_all * a.fair_window
    exposure_gini = partial(gini_of_counts, max_count=max_exposure) if max_exposure <= 8 * n_items else gini

    def worker_dist(actor, s, z):
        """(mean, log_std) of the worker's hyper-action (see ``purerec.agents.nets``)."""
        return worker_net.apply(actor, s, z) if hier else worker_net.apply(actor, s)

    def tail_share(action, z):
        """The long-tail share of the slate: the goal's w_fair / (w_acc + w_fair), or FLAT's own."""
        if hier:
            return z[..., 1] / jnp.maximum(z[..., 0] + z[..., 1], Z_EPS)
        return jax.nn.sigmoid(action[..., -1])

    def slate_of(action, z, basis, popular, fixed_share):
        """The deterministic slate of one hyper-action (the run's slate head)."""
        scores = basis @ action[: basis.shape[1]]
        return heads.compose(head, scores, popular, k_slate, fixed_share, tail_share(action, z))

    def critic_input(x, z):
        return jnp.concatenate([x, z], axis=-1) if hier else x

    def init(key: jax.Array, frozen: Frozen, hyper: dict) -> HRLState:
        k_env, k_w, k_wc, k_m, k_mc, k_run = jax.random.split(key, 6)
        obs, env_state = E.batch_reset(sh.own(k_env), env_params(params, hyper), B)
        s0, z0 = jnp.zeros((1, d)), jnp.full((1, 2), 0.5)
        x0 = jnp.zeros((1, observer.input_dim))
        w_actor = worker_net.init(k_w, s0, z0) if hier else worker_net.init(k_w, s0)
        # Warm start: the actor's query q = W s^ + b starts as Stage I's feedback predictor, so the
        # scores rank items by predicted (observed) feedback from the first update.
        p = w_actor["params"]
        w_actor = {"params": {**p, "query": {**p["query"], "Dense_0": frozen.feedback_head["params"]["Dense_0"]}}}
        worker = Level(optim.learner(w_actor, tx), optim.learner(w_critic.init(k_wc, critic_input(x0, z0)), tx))
        manager = (Level(optim.learner(manager_net.init(k_m, x0), tx), optim.learner(m_critic.init(k_mc, x0), tx))
                   if hier else None)
        return HRLState(worker=worker, manager=manager, env_state=env_state, obs=obs,
                        u=jnp.zeros((B, 2)), fair_buf=jnp.zeros((a.fair_window, n_items)),
                        key=k_run, update=jnp.int32(0), hyper=hyper)

    def behave(frozen: Frozen, r: HRLState, key, obs, state, carry):
        """The training policy over this device's sessions (``unroll``'s batched policy)."""
        u_prev, fair_buf = carry
        k_s, k_m, k_w = jax.random.split(key, 3)
        s, x = observer.inputs(frozen, k_s, obs, params)
        if hier:
            mean_m, ls_m = manager_net.apply(r.manager.actor.params, x)
            u_new = mean_m + jnp.exp(ls_m) * jax.random.normal(k_m, mean_m.shape)
            decide = (obs.t % interval) == 0
            u = jnp.where(decide[:, None], u_new, u_prev)
            logp_m = gaussian_log_prob(u, mean_m, ls_m)
            v_m = m_critic.apply(r.manager.critic.params, x)
        else:
            decide = jnp.zeros((B,), bool)
            u = u_prev
            logp_m = v_m = jnp.zeros((B,))
        z = jax.nn.sigmoid(u)
        mean_w, ls_w = worker_dist(r.worker.actor.params, s, z)
        if hyper_action:
            act = mean_w + jnp.exp(ls_w) * jax.random.normal(k_w, mean_w.shape)
            logp_w = gaussian_log_prob(act, mean_w, ls_w)
            slates = jax.vmap(slate_of, in_axes=(0, 0, None, None, None))(act, z, basis, world.popular,
                                                                          r.hyper["slate.tail_share"])
        else:
            act = jnp.zeros((B, 1))
            logits = mean_w[:, : basis.shape[1]] @ basis.T
            slates, logp_w = jax.vmap(slate.sample_with_log_prob, in_axes=(0, 0, None))(
                jax.random.split(k_w, B), logits, k_slate)
        v_w = w_critic.apply(r.worker.critic.params, critic_input(x, z))
        if a.fair_reward == "batch":
            counts = sh.sum(jnp.zeros((n_items,)).at[slates.reshape(-1)].add(1.0))
            fair_buf = jnp.concatenate([fair_buf[1:], counts[None]], axis=0)
            fair = jnp.broadcast_to(-exposure_gini(fair_buf.sum(0)), (B,))
        else:
            fair = jnp.zeros((B,))  # filled in from the slates' popular counts after the step
        extras = {"s": s, "x": x, "u": u, "z": z, "a": act, "decide": decide, "logp_w": logp_w,
                  "logp_m": logp_m, "v_w": v_w, "v_m": v_m, "fair": fair}
        return slates, (u, fair_buf), extras

    def ppo_coefs(h):
        return h["ppo.clip_eps"], h["ppo.vf_coef"], h["ppo.ent_coef"]

    def worker_loss(p, mb, h):
        actor, critic = p
        mean, ls = worker_dist(actor, mb["s"], mb["z"])
        if hyper_action:
            logp, ent = gaussian_log_prob(mb["a"], mean, ls), gaussian_entropy(ls)
        else:
            logp, ent = slate.linear_log_prob_entropy(mean[:, : basis.shape[1]], basis, mb["slate"])
        v = w_critic.apply(critic, critic_input(mb["x"], mb["z"]))
        return losses.ppo_clip(logp, mb["logp_w"], mb["adv_w"], v, mb["tgt_w"], ent, *ppo_coefs(h),
                               axis_name=axis_name)

    def manager_loss(p, mb, h):
        actor, critic = p
        mean, ls = manager_net.apply(actor, mb["x"])
        logp, ent = gaussian_log_prob(mb["u"], mean, ls), gaussian_entropy(ls)
        v = m_critic.apply(critic, mb["x"])
        return losses.ppo_clip(logp, mb["logp_m"], mb["adv_m"], v, mb["tgt_m"], ent, *ppo_coefs(h),
                               weight=mb["decide"], axis_name=axis_name)

    def step_level(level: Level, grads, h) -> Level:
        ga, gc = sh.sum(grads)
        return Level(optim.step(h["ppo.actor_lr"], ga, level.actor, tx),
                     optim.step(h["ppo.critic_lr"], gc, level.critic, tx))

    def sgd(r: HRLState, batch, key):
        P = cfg.ppo
        h = r.hyper
        n = B * T
        mb_size = n // P.minibatches

        def epoch(r, k):
            perm = jax.random.permutation(sh.own(k), n)
            mbs = jax.tree.map(lambda x: x[perm].reshape((P.minibatches, mb_size) + x.shape[1:]), batch)

            def minibatch(r, mb):
                w = r.worker
                (_, wl), wg = jax.value_and_grad(worker_loss, has_aux=True)((w.actor.params, w.critic.params), mb, h)
                r = r.replace(worker=step_level(w, wg, h))
                logs = {f"worker_{k}": v for k, v in wl.items()}
                if hier:
                    m = r.manager
                    (_, ml), mg = jax.value_and_grad(manager_loss, has_aux=True)(
                        (m.actor.params, m.critic.params), mb, h)
                    r = r.replace(manager=step_level(m, mg, h))
                    logs.update({f"manager_{k}": v for k, v in ml.items()})
                return r, sh.sum(logs)

            return jax.lax.scan(minibatch, r, mbs)

        r, logs = jax.lax.scan(epoch, r, jax.random.split(key, P.epochs))
        return r, jax.tree.map(jnp.mean, logs)

    def update(frozen: Frozen, r: HRLState):
        h = r.hyper
        gamma, lam = h["ppo.gamma"], h["ppo.gae_lambda"]
        key, k_roll, k_last, k_sgd = jax.random.split(r.key, 4)
        (obs, env_state, (u, fair_buf)), tr = unroll(
            sh.own(k_roll), partial(behave, frozen, r), env_params(params, h), r.obs, r.env_state,
            (r.u, r.fair_buf), T)
        r = r.replace(obs=obs, env_state=env_state, u=u, fair_buf=fair_buf)
        ex = tr.extras
        if a.fair_reward == "batch":
            fair = ex["fair"]
        else:
            # Fair(L_t) = -Gini of the (popular, long-tail) exposure of this slate = -|2p - 1| / 2.
            fair = -0.5 * jnp.abs(2.0 * tr.n_popular / k_slate - 1.0)
        r_h = tr.reward + h["agent.lambda_fair"] * fair
        done = tr.done
        _, x_last = observer.inputs(frozen, sh.own(k_last), r.obs, params)
        v_w_last = w_critic.apply(r.worker.critic.params, critic_input(x_last, jax.nn.sigmoid(r.u)))
        if hier:
            adv_w, tgt_w = returns.gae(tr.reward, ex["v_w"], done, v_w_last, gamma, lam)
            v_m_last = m_critic.apply(r.manager.critic.params, x_last)
            adv_m, tgt_m = returns.gae(r_h, ex["v_m"], done, v_m_last, gamma, lam)
        else:
            # FLAT: one policy on the fairness-shaped reward.
            adv_w, tgt_w = returns.gae(r_h, ex["v_w"], done, v_w_last, gamma, lam)
            adv_m, tgt_m = jnp.zeros_like(adv_w), jnp.zeros_like(adv_w)
        batch = {k: ex[k] for k in ("s", "x", "u", "z", "a", "decide", "logp_w", "logp_m")}
        batch.update(slate=tr.slate, adv_w=adv_w, tgt_w=tgt_w, adv_m=adv_m, tgt_m=tgt_m)
        batch = jax.tree.map(lambda x: x.reshape((B * T,) + x.shape[2:]), batch)
        r = r.replace(key=key)
        r, loss_logs = sgd(r, batch, k_sgd)
        n_dec = jnp.maximum(sh.sum(ex["decide"].sum()), 1)
        logs = {
            **rollout_stats(tr, k_slate, B_all, sh.sum),
            "Fair": sh.mean(fair),  # the manager's Fair signal (as its reward uses it)
            "w_acc": sh.sum(jnp.sum(ex["z"][..., 0] * ex["decide"])) / n_dec,
            "w_fair": sh.sum(jnp.sum(ex["z"][..., 1] * ex["decide"])) / n_dec,
            **loss_logs,
        }
        return r.replace(update=r.update + 1), logs

    def policy_params(frozen: Frozen, r: HRLState):
        return frozen, r.worker.actor.params, r.manager.actor.params if hier else None, r.hyper["slate.tail_share"]

    def act(sample: bool, key, obs, state, params: E.EnvParams, pp, u):
        """One session acting as in training (carry ``u``: the goal logits, held for
        ``manager_interval`` steps). ``sample``: draw the goal and the action (the training
        policy); else take their means (greedy). Returns (slate, u)."""
        frozen, worker_actor, manager_actor, fixed_share = pp
        w = params.world
        basis = item_basis(w.item_emb, w.item_pop, a.score)
        k_s, k_m, k_w = jax.random.split(key, 3)
        s, x = observer.inputs(frozen, k_s, obs, params)
        if hier:
            mean_m, ls_m = manager_net.apply(manager_actor, x)
            u_new = mean_m + jnp.exp(ls_m) * jax.random.normal(k_m, mean_m.shape) if sample else mean_m
            u = jnp.where(obs.t % interval == 0, u_new, u)
        z = jax.nn.sigmoid(u)
        mean_w, ls_w = worker_dist(worker_actor, s, z)
        if hyper_action:
            act_ = mean_w + jnp.exp(ls_w) * jax.random.normal(k_w, mean_w.shape) if sample else mean_w
            return slate_of(act_, z, basis, w.popular, fixed_share), u
        logits = basis @ mean_w[: basis.shape[1]]
        if sample:
            return slate.sample(k_w, logits, params.slate_size), u
        return slate.greedy(logits, params.slate_size), u

    def state_specs(lead: int = 1) -> HRLState:
        """Partition specs (a prefix of the state with ``lead`` leading seed axes): the per-session
        arrays are split along their session axis, everything else is replicated."""
        split, rep = PartitionSpec(*(None,) * lead, axis_name), PartitionSpec()
        env_state = E.LoopState(sessions=split, platform=rep) if params.loop else split  # one platform per shard
        return HRLState(worker=rep, manager=rep if hier else None, env_state=env_state, obs=split, u=split,
                        fair_buf=rep, key=rep, update=rep, hyper=rep)

    return Agent(init=init, update=update, policy_params=policy_params,
                 act=Acts(greedy=partial(act, False), sample=partial(act, True)),
                 init_carry=lambda n: jnp.zeros((n, 2)), state_specs=state_specs if axis_name else None)
