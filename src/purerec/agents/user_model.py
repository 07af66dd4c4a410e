"""DORL's learned user model (Gao et al. 2023): an ensemble of heteroscedastic feedback models
fitted on the logs, and a model env that steps with ``purerec.sim.env.step``'s signature.

The ensemble (``cfg.dorl.models`` members, ``make_user_model``): each member maps the session
input x = [state, context] (``purerec.state.purifier.Observer.inputs``, Stage-I encoder frozen) to the
coefficients of two linear forms over the item features f_i (``item_features``: the shared item
basis [embedding, log-popularity in [0, 1]]), as ``purerec.agents.nets.item_values`` does:
mean_i = sigmoid(v(x) + phi(x) . f_i) and log-var_i = soft-clamp(w(x) + psi(x) . f_i) in
[``LOGVAR_MIN``, ``LOGVAR_MAX``]. Our reading of the authors' DeepFM: the deep part on x gives
state-dependent weights of a state x item bilinear interaction (the FM part); features, not item
ids, so a member scores any item. Fit (``fit``): Gaussian NLL of each logged slate item's
observed feedback, ``model_steps`` clipped-Adam steps on ``model_batch`` logged steps (all K
items of each), vmapped over the members, which differ in their init and in their own stream of
minibatch indices drawn with replacement (a bootstrap of the logs per member).

The model env (``step``, ``batch_step``; ``ModelParams`` carries the real env's params, the
frozen Stage-I params, the fitted ensemble, the P_E tables and the traced lambdas):

* predicted feedback = the ensemble mean of the members' means (deterministic; not a sample),
  written to the observation window like observed feedback; r^ = its mean over the slate (the
  env's reward definition applied to the prediction); ``info['true_feedback']`` /
  ``info['true_reward']`` hold the same prediction / r^ (the model has no hidden truth);
* maxvar = max over members of the predicted variance, per slate item, averaged over the slate
  (the authors' single item has one such value);
* P_E (``entropy_tables``, ``pattern_entropy``), the authors' entropy of what followed a pattern
  in the logs, read for slates with tags: an item's category is its dominant tag (its first tag;
  untagged items are category ``n_tags``). From the logs' flattened recommendation sequence (the
  window's last two items, then the slate in order) we count, for k = 1, the category of the item
  after each item's category, and for k = 2 after each sorted pair of consecutive categories;
  H_k(pattern) = entropy (log2) of that next-category distribution / log2(n_tags + 1), in [0, 1],
  and 1 for a pattern never seen (nor one with a missing history item). At a model step, slate
  item j's pattern ends with item j itself (k = 1: its category; k = 2: the sorted pair of the
  item before it in the sequence and it), P_E = mean over the slate of H_1 + H_2, in [0, 2];
* reward = max(0, r^ - lambda_var maxvar + lambda_ent P_E - r_min) (``shaped_reward``);
  ``info['episode_return']`` sums it (as the env sums its reward);
* exit: the real env's rule (``env.exit_rule``, ``purerec.sim.abandonment``, as
  ``purerec.sim.env.step_env``; the same ``env.advance``) with the predicted r^ in place of the observed reward (temper) and
  the world's visible popular flags; truncation at ``max_len``; auto-reset by ``env.auto_reset``
  (a new session = an empty window; the user id is kept for the interface only: the model reads
  the window, not the user).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from purerec.agents import optim
from purerec.agents.nets import item_basis
from purerec.core.fields import Sections
from purerec.sim import env as E
from purerec.sim.logs import Logs
from purerec.state.purifier import Frozen, make_observer, Observer

LOGVAR_MIN, LOGVAR_MAX = -8.0, 1.0
MAX_GRAD_NORM = 10.0
X_CHUNK = 4096  # logged windows encoded at once (bounds the fit's memory)


def item_features(world) -> jax.Array:
    """f32[N, d + 1]: the features a member scores an item by (the shared item basis)."""
    return item_basis(world.item_emb, world.item_pop, "dot")


class Member(nn.Module):
    """x -> f32[..., 2, F + 1]: the coefficients (phi, v) of the mean's logit and (psi, w) of the log-var."""

    hidden: int
    n_feats: int

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(self.hidden)(x))
        h = nn.relu(nn.Dense(self.hidden)(h))
        out = nn.Dense(2 * (self.n_feats + 1))(h)
        return out.reshape(out.shape[:-1] + (2, self.n_feats + 1))


def _soft_clamp(lv: jax.Array) -> jax.Array:
    lv = LOGVAR_MAX - jax.nn.softplus(LOGVAR_MAX - lv)
    return LOGVAR_MIN + jax.nn.softplus(lv - LOGVAR_MIN)


def member_predict(net: Member, p: Any, x: jax.Array, feats: jax.Array, items: jax.Array):
    """One member's (mean, log-var) of the items i32[..., K] at inputs x f32[..., D]: f32[..., K] each."""
    out = net.apply(p, x)
    f = feats[items]  # [..., K, F]
    lin = jnp.einsum("...cf,...kf->...ck", out[..., :-1], f) + out[..., -1:]  # [..., 2, K]
    return jax.nn.sigmoid(lin[..., 0, :]), _soft_clamp(lin[..., 1, :])


@dataclass(frozen=True, eq=False)
class UserModel:
    """The static pieces: the observer (x), the member network, the ensemble size."""

    observer: Observer
    net: Member
    n_members: int
    n_feats: int

    def init(self, key: jax.Array) -> Any:
        """The members' parameters stacked on a leading axis [M] (different inits)."""
        x0 = jnp.zeros((1, self.observer.input_dim))
        return jax.vmap(lambda k: self.net.init(k, x0))(jax.random.split(key, self.n_members))

    def predict(self, ensemble: Any, x: jax.Array, feats: jax.Array, items: jax.Array):
        """(mean, log-var) f32[M, ..., K] of every member."""
        return jax.vmap(member_predict, in_axes=(None, 0, None, None, None))(self.net, ensemble, x, feats, items)


def make_user_model(cfg: Sections, observer: Observer | None = None, n_feats: int | None = None) -> UserModel:
    n_feats = cfg.world.emb_dim + 1 if n_feats is None else n_feats
    return UserModel(observer=observer or make_observer(cfg), net=Member(cfg.dorl.model_hidden, n_feats),
                     n_members=cfg.dorl.models, n_feats=n_feats)


def gaussian_nll(y: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """Elementwise Gaussian negative log-likelihood of y."""
    return 0.5 * (logvar + (y - mean) ** 2 * jnp.exp(-logvar) + math.log(2 * math.pi))


class FitData(NamedTuple):
    x: jax.Array  # f32[N, D] the logged steps' inputs
    slate: jax.Array  # i32[N, K]
    feedback: jax.Array  # f32[N, K] observed feedback


def fit_data(um: UserModel, key: jax.Array, frozen: Frozen, ep: E.EnvParams, logs: Logs) -> FitData:
    x = jax.lax.map(lambda o: um.observer.inputs(frozen, key, o, ep)[1], logs.obs, batch_size=X_CHUNK)
    return FitData(x=x, slate=logs.slate, feedback=logs.feedback)


def ensemble_nll(um: UserModel, ensemble: Any, data: FitData, feats: jax.Array) -> jax.Array:
    """f32[M]: each member's mean NLL over all logged slate items."""
    mean, lv = um.predict(ensemble, data.x, feats, data.slate)
    return jnp.mean(gaussian_nll(data.feedback[None], mean, lv), axis=(1, 2))


def fit(um: UserModel, key: jax.Array, data: FitData, feats: jax.Array, lr: jax.Array, steps: int,
        batch: int) -> tuple[Any, jax.Array]:
    """The fitted ensemble and its NLL curve f32[steps, M] (Gaussian NLL, clipped Adam with lr)."""
    tx = optim.adam(MAX_GRAD_NORM)
    k_init, k_run = jax.random.split(key)
    n = data.slate.shape[0]

    def loss(p, idx):
        mean, lv = member_predict(um.net, p, data.x[idx], feats, data.slate[idx])
        return jnp.mean(gaussian_nll(data.feedback[idx], mean, lv))

    def member_step(learner, k):
        idx = jax.random.randint(k, (batch,), 0, n)
        val, g = jax.value_and_grad(loss)(learner.params, idx)
        return optim.step(lr, g, learner, tx), val

    def body(learners, k):
        return jax.vmap(member_step)(learners, jax.random.split(k, um.n_members))

    learners = jax.vmap(lambda p: optim.learner(p, tx))(um.init(k_init))
    learners, curve = jax.lax.scan(body, learners, jax.random.split(k_run, steps))
    return learners.params, curve


# ---------------------------------------------------------------- P_E


def item_category(item_tags: jax.Array) -> jax.Array:
    """i32[N]: each item's dominant tag (its first tag), or n_tags for an untagged item.

    A concrete array (a world closed over by the program) is reduced with NumPy: XLA would
    constant-fold the reduction of a large constant at every compile, slowly."""
    if not isinstance(item_tags, jax.core.Tracer):
        tags = np.asarray(item_tags)
        return jnp.asarray(np.where(tags.any(-1), tags.argmax(-1), tags.shape[-1]), jnp.int32)
    return jnp.where(jnp.any(item_tags, -1), jnp.argmax(item_tags, -1), item_tags.shape[-1]).astype(jnp.int32)


def _normalised_entropy(counts: jax.Array) -> jax.Array:
    """Entropy (log2) of each row's distribution over the last axis / log2(categories); 1 where empty."""
    total = counts.sum(-1, keepdims=True)
    p = counts / jnp.maximum(total, 1.0)
    h = -jnp.sum(jnp.where(p > 0, p * jnp.log2(jnp.where(p > 0, p, 1.0)), 0.0), -1)
    h = h / math.log2(counts.shape[-1])
    return jnp.where(total[..., 0] > 0, h, 1.0)


def entropy_tables(logs: Logs, cats: jax.Array, n_cat: int) -> tuple[jax.Array, jax.Array]:
    """(H_1 f32[C], H_2 f32[C, C] indexed by the sorted pair (low, high)) from the logs' sequences."""
    seq = jnp.concatenate([logs.obs.items[:, -2:], logs.slate], axis=1)  # [N, K + 2]
    ok = jnp.concatenate([logs.obs.valid[:, -2:], jnp.ones(logs.slate.shape, bool)], axis=1)
    c = cats[seq]
    nxt, prev1, prev2 = c[:, 2:], c[:, 1:-1], c[:, :-2]
    ok1 = ok[:, 1:-1].astype(jnp.float32)
    ok2 = (ok[:, 1:-1] & ok[:, :-2]).astype(jnp.float32)
    lo, hi = jnp.minimum(prev1, prev2), jnp.maximum(prev1, prev2)
    c1 = jnp.zeros((n_cat, n_cat)).at[prev1.ravel(), nxt.ravel()].add(ok1.ravel())
    c2 = jnp.zeros((n_cat, n_cat, n_cat)).at[lo.ravel(), hi.ravel(), nxt.ravel()].add(ok2.ravel())
    return _normalised_entropy(c1), _normalised_entropy(c2)


def pattern_entropy(prev_items: jax.Array, prev_valid: jax.Array, slate: jax.Array, cats: jax.Array,
                    h1: jax.Array, h2: jax.Array) -> jax.Array:
    """P_E of one slate: mean over its items of H_1(item) + H_2(sorted(previous item, item)).

    ``prev_items`` / ``prev_valid``: the item shown just before the slate ([-1:] of the history,
    most recent last) and whether it exists."""
    c = cats[slate]
    prev = jnp.concatenate([cats[jnp.maximum(prev_items[-1:], 0)], c[:-1]])
    ok = jnp.concatenate([prev_valid[-1:], jnp.ones(c.shape[0] - 1, bool)])
    e2 = jnp.where(ok, h2[jnp.minimum(prev, c), jnp.maximum(prev, c)], 1.0)
    return jnp.mean(h1[c] + e2)


def shaped_reward(r_hat, maxvar, p_e, lambda_var, lambda_ent, r_min):
    """DORL's reward: max(0, r^ - lambda_var maxvar + lambda_ent P_E - r_min)."""
    return jnp.maximum(0.0, r_hat - lambda_var * maxvar + lambda_ent * p_e - r_min)


# ---------------------------------------------------------------- the model env


@struct.dataclass
class Fitted:
    """What the fit produces (kept in the agent's state)."""

    ensemble: Any  # member params, leading axis [M]
    h1: jax.Array  # f32[C]
    h2: jax.Array  # f32[C, C]
    nll: jax.Array  # f32 the ensemble's mean NLL on the logs after the fit


@struct.dataclass
class ModelParams:
    env: E.EnvParams
    frozen: Frozen
    fitted: Fitted
    lambda_var: jax.Array
    lambda_ent: jax.Array
    r_min: jax.Array
    model: UserModel = struct.field(pytree_node=False)


def fit_model(um: UserModel, key: jax.Array, frozen: Frozen, ep: E.EnvParams, logs: Logs, lr, steps: int,
              batch: int) -> tuple[Fitted, jax.Array]:
    """Fit the ensemble on the logs and count the P_E tables; returns (Fitted, NLL curve [steps, M])."""
    k_x, k_fit = jax.random.split(key)
    data = fit_data(um, k_x, frozen, ep, logs)
    feats = item_features(ep.world)
    ensemble, curve = fit(um, k_fit, data, feats, lr, steps, batch)
    n_cat = ep.world.n_tags + 1
    h1, h2 = entropy_tables(logs, item_category(ep.world.item_tags), n_cat)
    return Fitted(ensemble=ensemble, h1=h1, h2=h2, nll=jnp.mean(ensemble_nll(um, ensemble, data, feats))), curve


def penalties(mp: ModelParams, x: jax.Array, prev_items: jax.Array, prev_valid: jax.Array, slate: jax.Array):
    """(predicted feedback f32[K], r^, maxvar, P_E) of one slate at input x (batch with vmap)."""
    world = mp.env.world
    mean, lv = mp.model.predict(mp.fitted.ensemble, x, item_features(world), slate)  # [M, K]
    fb = mean.mean(0)
    maxvar = jnp.mean(jnp.max(jnp.exp(lv), axis=0))
    p_e = pattern_entropy(prev_items, prev_valid, slate, item_category(world.item_tags), mp.fitted.h1, mp.fitted.h2)
    return fb, fb.mean(), maxvar, p_e


def step_model(key: jax.Array, state: E.EnvState, slate: jax.Array, mp: ModelParams):
    """One model step without auto-reset: ``purerec.sim.env.step_env``'s outputs, feedback predicted."""
    params = mp.env
    slate = slate.astype(jnp.int32)
    _, x = mp.model.observer.inputs(mp.frozen, key, E.observe(state, params), params)
    prev = state.hist_items[-1:]
    fb, r_hat, maxvar, p_e = penalties(mp, x, prev, prev >= 0, slate)
    reward = shaped_reward(r_hat, maxvar, p_e, mp.lambda_var, mp.lambda_ent, mp.r_min)
    return E.advance(state, slate, params, fb=fb, r_true=fb, reward=reward, exit_reward=r_hat, true_reward=r_hat)


step = E.auto_reset(step_model, lambda mp: mp.env)
step.__doc__ = "``step_model`` with auto-reset (``purerec.sim.env.step``'s contract and info keys)."
batch_step = E.batched(step, move_platform=False)  # imagined sessions move no platform
