"""FCPO baseline (Ge et al. 2021, "Towards Long-term Fairness in Recommendation"): constrained
policy optimisation (CPO, Achiam et al. 2017; ``purerec.agents.cpo``) with the cost = the number of
popular items in the slate and the limit ``fcpo.cost_limit`` (α′) × K per step.

What is taken from FCPO (TobyGE/FCPO ``cpo.py``; ``shared/reference/public-code-facts.md`` §2.8):
a diagonal Gaussian "weight vector" policy scored against item features; reward and cost critics
fitted on discounted returns; GAE for reward and for cost; g, b = gradients of the surrogate
reward and cost; H⁻¹g, H⁻¹b by conjugate gradients (``fcpo.cg_iters``) on the damped KL
Hessian-vector product; the analytic dual step (with the infeasible recovery step) and a
backtracking line search (``fcpo.backtrack``, ``fcpo.line_search_iters``). The whole update runs
inside jit.

What differs, on purpose (our setting: K items per step, a fairness-aware exit rule):

* the policy is A2C's hyper-action (``purerec.agents.a2c.HyperActor``, warm-started from Stage I):
  a = [q, −κ] over the item basis, the slate is the **top-K** of basis @ a (FCPO: one item per
  step, argmax); greedy = the mean's top-K (FCPO's evaluation is also deterministic);
* exploration: the Gaussian's std starts at ``fcpo.action_std`` on the query coordinates but at
  ``fcpo.pop_std`` (default 2.5) on the popularity coordinate −κ. Measured on the KuaiRec-like world at seed 11:
  the warm-started mean gives all-popular slates and κ must move by ≈ 2-4 (item scores span ≈ 2.4,
  the log-popularity column differs by ≈ 0.3 between popular and long-tail items) before any
  long-tail item enters a top-10; with std 0.3 no sampled slate ever holds one, so every cost
  advantage is 0, b = 0 and the constraint cannot act (a first run kept 10/10 popular items for
  all 34 updates, the recovery case every time). With std 2.5 the sampled slates mix, b carries
  the constraint's signal and a move of κ by 3 costs a KL of 0.7 instead of 50;
* ``fcpo.cost = imbalance`` (opt-in) replaces the cost by |2p − 1| per slate (p the popular
  share), so the limit can only be met with balanced slates, not with a mixture of unbalanced
  ones (the failure measured below); the default ``popular`` is FCPO's cost;
* ``fcpo.max_kl`` is the learner's step size (a ``traced(rate=True)`` field): 0 freezes the
  policy, as a learning rate 0 does for the other agents (the frozen twin);
* the cost per step is ``n_popular`` (0 .. K), the constraint is on the **mean per-step cost**:
  J_c = the rollout batch's mean of ``n_popular`` and c = J_c − α′·K (FCPO: the undiscounted
  per-trajectory sum of a popular indicator, limit ``max_constraint_val``);
* the surrogates are batch means over the rollout, ratio = π_θ(a|x)/π_old(a|x) of the stored
  hyper-action: L_R(θ) = mean(ratio · Â_R) with Â_R the standardised reward GAE, and
  L_C(θ) = mean(ratio · Â_C) with Â_C the cost GAE **centred but not scaled**, so that the
  linearisation J_c(θ′) ≈ J_c + L_C(θ′) − L_C(θ) stays in cost units (per-step popular items; the
  performance-difference identity for the normalised discounted cost) and c, b live on one scale.
  (FCPO standardises both, which makes the cost linearisation unit-free against a J_c in
  per-trajectory units.) Standardising Â_R does not change the step (the QP's solution is
  invariant to a positive scale of g). The cost critic and Â_C, b, c are computed on the
  popular **share** n_popular / K (the constraint divided by K: the same QP solution, and critic
  targets on the reward's [0, 1] scale); the logs report J_c and c in items per step;
* g = ∇L_R, b = ∇L_C at θ_old; H = the Hessian of the mean KL(π_old ‖ π_θ) of the diagonal
  Gaussian over the batch (jvp of grad) + ``fcpo.damping`` · I; δ = ``fcpo.max_kl``;
* line search: the first β^j x accepted; feasible cases (ν = 0 or ν > 0) accept when the
  surrogate cost change ≤ max(−c, 0) (stays within the limit when the batch is within it, does
  not increase when the batch is above it), KL ≤ δ and, only when the batch is within the limit
  (c < 0), the surrogate reward does not decrease (above the limit the QP's step may trade reward
  for cost: requiring both stalled the first runs, every step rejected; as in Achiam et al.'s
  reference implementation); the recovery case accepts when the surrogate cost does not increase
  and KL ≤ δ. No step (fraction 0) if none is;
* critics: ``nets.Critic`` for reward and for cost on x, fitted with Adam (traced
  ``fcpo.critic_lr``) for ``fcpo.critic_epochs`` epochs of ``fcpo.critic_minibatches`` shuffled
  minibatches on the GAE targets (FCPO: L-BFGS with the previous batch appended).

Measured (KuaiRec-like world, seed 11, default config, the 20,000-episode cap = 32-34 updates;
greedy test rows, reference random Len 12.56 / R_cum 5.95, most_popular 14.01 / 12.25):

* popularity std = ``action_std`` (0.3): 10/10 popular items in every training slate, the
  recovery case every update with b ≈ 0: greedy Len 14.06, R_cum 12.17 (= the warm start);
* ``fcpo.pop_std`` 2.5, max_kl 0.01, cost_limit 0.5: training cost 9.8 -> 6.8 items per step, training
  Len 13.9 -> 13.2; greedy Len 11.87, R_cum 5.16, long-tail share 0.86 (the mean's top-K crossed
  to long-tail items while the sampled slates kept 0.58 popular on the test world); sample
  Len 12.98, R_cum 8.30. The exit rule penalises each slate whose popular share is outside
  (0.35, 0.65), and a scalar κ splits slates into all-popular or all-long-tail, so meeting the
  *mean* per-step limit with a mixture of unbalanced slates does not lengthen sessions.

On a platform with memory (``platform.loop``) the cost counts the platform's current labels, as
the FCPO paper describes (its public code computes the labels once); ``platform.cost_labels =
frozen`` counts the logs' labels instead (the comparison with static labels).

Logs: ``rollout_stats`` plus ``cost`` (mean popular items per step), ``J_c``, ``constraint``
(c), ``case`` (0 inactive, 1 active, 2 infeasible recovery), ``step_frac`` (accepted fraction,
0 = rejected), ``kl`` (of the accepted step), ``nu``, ``reward_critic_loss``,
``cost_critic_loss``, ``action_std``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from jax.flatten_util import ravel_pytree

from purerec.agents import cpo, heads, optim, returns
from purerec.agents.a2c import hyper_acts, HyperActor, warm_start
from purerec.agents.base import Agent, env_params, no_session_shards
from purerec.agents.nets import Critic, gaussian_log_prob, item_basis, LOG_STD_MAX, LOG_STD_MIN
from purerec.core.errors import ConfigError
from purerec.core.fields import Sections
from purerec.sim import env as E
from purerec.sim.rollout import rollout_stats, unroll
from purerec.state.purifier import Frozen, make_observer


@struct.dataclass
class FCPOState:
    actor: Any  # actor params (moved by the CPO step, no optimiser)
    critics: optim.Learner  # (reward critic, cost critic) params
    obs: E.Obs
    env_state: E.EnvState
    key: jax.Array
    update: jax.Array  # i32 updates done
    hyper: dict


def gaussian_kl(mean0: jax.Array, ls0: jax.Array, mean1: jax.Array, ls1: jax.Array) -> jax.Array:
    """KL(N(mean0, e^{2 ls0}) ‖ N(mean1, e^{2 ls1})) of diagonal Gaussians, summed over the last axis."""
    var0, var1 = jnp.exp(2 * ls0), jnp.exp(2 * ls1)
    return jnp.sum(ls1 - ls0 + (var0 + (mean0 - mean1) ** 2) / (2 * var1) - 0.5, axis=-1)


def with_pop_std(actor_params: dict, std: float, index: int) -> dict:
    """The actor's learned log-std with its popularity coordinate (−κ, at ``index``) set to log(std)."""
    p = actor_params["params"]
    log_std = p["log_std"].at[index].set(jnp.log(jnp.float32(std)))
    return {**actor_params, "params": {**p, "log_std": log_std}}


def step_cost(n_popular: jax.Array, k: int, kind: str) -> jax.Array:
    """The per-step cost divided by K, in [0, 1] (``fcpo.cost``): ``popular`` = the popular share
    p = n_popular / K (FCPO's cost); ``imbalance`` = |2p − 1|, 0 for a 5/5 slate and 1 for an
    all-popular or all-long-tail one (the exit rule's own notion of an unfair slate)."""
    p = n_popular.astype(jnp.float32) / k
    if kind == "imbalance":
        return jnp.abs(2.0 * p - 1.0)
    return p


def make(cfg: Sections, params: E.EnvParams, axis_name: str | None = None) -> Agent:
    no_session_shards(cfg, axis_name, "fcpo")
    c = cfg.fcpo
    B, T, K = cfg.train.num_envs, cfg.train.rollout_len, params.slate_size
    observer = make_observer(cfg)
    emb_dim = params.world.item_emb.shape[1]
    head = heads.resolve(cfg)
    actor = HyperActor(observer.state_dim, emb_dim, c.hidden, cfg.agent.pop_scale, c.action_std, head.share_dims)
    critic = Critic(c.hidden)
    tx = optim.adam(c.max_grad_norm)
    train_basis = item_basis(params.world.item_emb, params.world.item_pop, "dot")
    n = B * T
    if n % c.critic_minibatches:
        raise ConfigError("fcpo.critic_minibatches", c.critic_minibatches,
                          f"a divisor of num_envs * rollout_len ({n})")
    n_mb, mb_size = c.critic_minibatches, n // c.critic_minibatches
    frozen_labels = params.loop and cfg.platform.cost_labels == "frozen"

    def init(key: jax.Array, frozen: Frozen, hyper: dict) -> FCPOState:
        k_env, k_a, k_r, k_c, k_run = jax.random.split(key, 5)
        obs, env_state = E.batch_reset(k_env, env_params(params, hyper), B)
        x0 = jnp.zeros((1, observer.input_dim))
        actor_p = with_pop_std(warm_start(actor.init(k_a, x0), frozen), c.pop_std, emb_dim)
        critics = (critic.init(k_r, x0), critic.init(k_c, x0))
        return FCPOState(actor=actor_p, critics=optim.learner(critics, tx), obs=obs, env_state=env_state,
                         key=k_run, update=jnp.int32(0), hyper=hyper)

    def critic_loss(p, mb):
        lr_ = 0.5 * jnp.mean((critic.apply(p[0], mb["x"]) - mb["target_r"]) ** 2)
        lc_ = 0.5 * jnp.mean((critic.apply(p[1], mb["x"]) - mb["target_c"]) ** 2)
        return lr_ + lc_, (lr_, lc_)

    def update(frozen: Frozen, S: FCPOState):
        h = S.hyper
        ep = env_params(params, h)
        key, k_roll, k_last, k_perm = jax.random.split(S.key, 4)
        vr_p, vc_p = S.critics.params

        def policy(k, obs, env_state, carry):
            k_s, k_a = jax.random.split(k)
            _, x = observer.inputs(frozen, k_s, obs, ep)
            mean, ls = actor.apply(S.actor, x)
            a = mean + jnp.exp(ls) * jax.random.normal(k_a, mean.shape)
            ex = {"x": x, "a": a, "vr": critic.apply(vr_p, x), "vc": critic.apply(vc_p, x)}
            return heads.of_hyper_action(head, a, train_basis, ep.world.popular, K, h["slate.tail_share"]), carry, ex

        (obs, env_state, _), tr = unroll(k_roll, policy, ep, S.obs, S.env_state, (), T)
        _, x_last = observer.inputs(frozen, k_last, obs, ep)
        n_pop = tr.n_popular  # on the labels the sessions saw (the platform's current ones on a loop world)
        if frozen_labels:  # the comparison with static labels: counted on the logs' labels
            n_pop = params.world.popular[tr.slate].sum(-1, dtype=jnp.int32)
        cost = step_cost(n_pop, K, c.cost)  # in [0, 1]: the cost / K (see the docstring)
        g_, lam_ = h["fcpo.gamma"], h["fcpo.gae_lambda"]
        adv_r, target_r = returns.gae(tr.reward, tr.extras["vr"], tr.done, critic.apply(vr_p, x_last), g_, lam_)
        adv_c, target_c = returns.gae(cost, tr.extras["vc"], tr.done, critic.apply(vc_p, x_last), g_, lam_)
        adv_r = (adv_r - adv_r.mean()) / (adv_r.std() + 1e-8)
        adv_c = adv_c - adv_c.mean()
        flat = lambda z: z.reshape((n,) + z.shape[2:])
        x, a = flat(tr.extras["x"]), flat(tr.extras["a"])
        adv_r, adv_c = flat(adv_r), flat(adv_c)

        # --- the CPO step on the actor's flat parameters ---
        theta0, unravel = ravel_pytree(S.actor)
        mean0, ls0 = actor.apply(S.actor, x)
        logp0 = gaussian_log_prob(a, mean0, ls0)

        def surrogates(theta):
            mean, ls = actor.apply(unravel(theta), x)
            ratio = jnp.exp(gaussian_log_prob(a, mean, ls) - logp0)
            kl = jnp.mean(gaussian_kl(mean0, ls0, mean, ls))
            return jnp.mean(ratio * adv_r), jnp.mean(ratio * adv_c), kl

        g = jax.grad(lambda t: surrogates(t)[0])(theta0)
        b = jax.grad(lambda t: surrogates(t)[1])(theta0)
        kl_grad = jax.grad(lambda t: surrogates(t)[2])
        damping = h["fcpo.damping"]

        def hvp(v):
            return jax.jvp(kl_grad, (theta0,), (v,))[1] + damping * v

        hinv = jax.vmap(lambda v: cpo.conjugate_gradient(hvp, v, c.cg_iters))(jnp.stack([g, b]))
        j_c = jnp.mean(cost) * K
        constraint = j_c - h["fcpo.cost_limit"] * K
        c_share = constraint / K
        delta = h["fcpo.max_kl"]
        step, dual = cpo.dual_step(hinv[0], hinv[1], g, b, c_share, delta)
        lr0, lc0, _ = surrogates(theta0)
        infeasible = dual.case == cpo.INFEASIBLE

        def accept(l_r, l_c, kl):
            d_r, d_c = l_r - lr0, l_c - lc0
            ok_feasible = ((d_r >= 0) | (c_share >= 0)) & (d_c <= jnp.maximum(-c_share, 0.0))
            ok = jnp.where(infeasible, d_c <= 0, ok_feasible)
            return ok & (kl <= delta) & jnp.isfinite(l_r) & jnp.isfinite(l_c)

        theta, frac = cpo.line_search(surrogates, theta0, step, accept, c.backtrack, c.line_search_iters)
        # max_kl = 0 is a trust region of radius 0: the frozen policy (no step, not even a NaN one)
        theta, frac = jnp.where(delta > 0, theta, theta0), jnp.where(delta > 0, frac, 0.0)
        _, _, kl_new = surrogates(theta)
        actor_p = unravel(theta)

        # --- reward and cost critics ---
        batch = {"x": x, "target_r": flat(target_r), "target_c": flat(target_c)}

        def epoch(learner, k):
            perm = jax.random.permutation(k, n)
            mbs = jax.tree.map(lambda z: z[perm].reshape((n_mb, mb_size) + z.shape[1:]), batch)

            def minibatch(l, mb):
                (_, parts), grads = jax.value_and_grad(critic_loss, has_aux=True)(l.params, mb)
                return optim.step(h["fcpo.critic_lr"], grads, l, tx), parts

            return jax.lax.scan(minibatch, learner, mbs)

        critics, (loss_r, loss_c) = jax.lax.scan(epoch, S.critics, jax.random.split(k_perm, c.critic_epochs))

        logs = rollout_stats(tr, K, B)
        logs.update({"cost": j_c, "J_c": j_c, "constraint": constraint, "case": dual.case, "step_frac": frac,
                     "kl": kl_new, "nu": dual.nu, "reward_critic_loss": jnp.mean(loss_r),
                     "cost_critic_loss": jnp.mean(loss_c), "value": jnp.mean(tr.extras["vr"]),
                     "action_std": jnp.mean(jnp.exp(jnp.clip(actor_p["params"]["log_std"], LOG_STD_MIN,
                                                             LOG_STD_MAX)))})
        S = S.replace(actor=actor_p, critics=critics, obs=obs, env_state=env_state, key=key, update=S.update + 1)
        return S, jax.tree.map(lambda z: jnp.asarray(z).astype(jnp.float32), logs)

    def policy_params(frozen: Frozen, S: FCPOState) -> Any:
        return frozen, S.actor, S.hyper["slate.tail_share"]

    return Agent(init=init, update=update, policy_params=policy_params, act=hyper_acts(observer, actor, head),
                 init_carry=lambda n: jnp.zeros((n,)), state_specs=None)
