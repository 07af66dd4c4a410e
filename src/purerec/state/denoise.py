"""Heuristic recommendation denoisers (the paper's Table 3 rows HRL+T-CE, HRL+R-CE, HRL+BOD) as
state filters: ``state.purifier`` = ``tce``, ``rce`` or ``bod``.

The methods. T-CE and R-CE (Wang et al., WSDM 2021, "Denoising implicit feedback"): a feedback
model trained with binary cross-entropy whose large-loss positives are presumed false positives.
T-CE drops, in every batch, the ``drop_rate(t)`` share of elements with the largest loss*label
(negatives score 0, so only positives are dropped), ``drop_rate(t)`` growing linearly from 0 to
``tce_drop_rate`` over ``tce_num_gradual`` steps; R-CE weights each element's loss by
stop_grad(sigma(y^))^beta (positives) or stop_grad(1 - sigma(y^))^beta (negatives). BOD (Wang et
al., KDD 2023): a weight generator g(u, i) (MLP on [user emb, item emb], sigmoid output) trained
bi-level: the recommender minimises the g-weighted BPR loss (weights detached); the generator
minimises sum over the recommender's weight matrices of sum_rows (1 - cos(grad_theta weighted-BPR,
grad_theta weighted-alignment)) (+ 1e-3 (|u| + |i|), constant in g), second order through the
recommender's gradients. Unlike BOD's public code, the outer positive weight is g(user, positive
item) (the code feeds (user, user)).

How DSRM-HRL applied them to RL states is not public; the reading chosen here:

* Data. The denoising feedback model is trained in Stage I after the state encoder, on the same
  samples as the encoder and DSRM: the frozen encoder's state s of each logged observation and the
  items of the next slate with their observed feedback. Feedback is continuous in [0, 1]; a
  *positive* is feedback > ``POSITIVE`` (0.5), the implicit-feedback "click" the methods assume;
  labels are binary.
* Model. A fresh bilinear model with the shape of Stage I's feedback head: user embedding
  u = P s + c (from the state), logit = <u, e_i> + b with e_i the item's visible features, so it
  works on any item set. T-CE/R-CE train it with their losses; BOD trains it with the weighted
  BPR loss (score <u, e_i>; the BPR pairs are every (positive, negative) pair of one slate) and
  its generator on [u, e_i]. ``denoise.steps`` steps of Adam (``lr``; BOD's generator ``bod_lr``,
  one inner then one outer step per step), minibatches of ``batch_size`` samples x K items.
* Filter. At every state, each item j of the observation window gets a keep flag and a weight
  from the model's view of it under the window's (unfiltered) state s~: T-CE drops (valid =
  False) the positives whose BCE loss exceeds the threshold tau; R-CE scales a positive's
  feedback by sigma(logit_j)^beta; BOD scales a positive's feedback by min(1, g(u(s~), e_j) /
  g_ref), g_ref the generator's mean weight over the Stage-I window positives (calibrated once,
  like T-CE's tau): the level of BOD's weights is not identified (they multiply the BPR scores,
  whose scale the embeddings absorb) and raw weights averaged ~0.15 on the KuaiRec-like world,
  which erased the positives from the state (HRL+BOD greedy test Len 22.7 / R_cum 15.7 after
  60 updates, seed 11; with relative weights 23.5 / 17.4), so only the relative weight is used:
  positives the generator trusts less than average are scaled down, the rest kept. Negatives are left as they are (scaling near-zero feedback
  would not down-weight them: the encoder's only soft per-item channel is the feedback value). The state is then re-encoded from the
  filtered window by the frozen encoder (and no further purifier runs).
* T-CE's threshold tau is calibrated once at the end of Stage I on what the filter sees: the
  Stage-I observation windows under their own states; tau is the (1 - tce_drop_rate) quantile of
  loss*label over their valid items, so the filter drops the final drop rate's share of
  elements on logged traffic, all of them positives (as T-CE's truncation does per batch).

The window state contains the items being judged (their feedback is an encoder input), so the
model's in-window predictions lean towards the observed feedback; T-CE's tau and BOD's g_ref are
calibrated on such in-window predictions, so they absorb that shift; R-CE inherits it (it
down-weights less).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from purerec.state.sections import DenoiseConfig

POSITIVE = 0.5  # observed feedback above this counts as a positive (a "click")
BOD_REG = 1e-3  # BOD's embedding-norm term in the generator objective
COS_EPS = 1e-6


class Scorer(nn.Module):
    """Bilinear feedback model: u = P s + c, logits = <u, e_i> + b. Returns (u, logits)."""

    emb_dim: int

    @nn.compact
    def __call__(self, state: jax.Array, emb: jax.Array):
        u = nn.Dense(self.emb_dim, name="query")(state)
        b = self.param("bias", nn.initializers.zeros, ())
        return u, jnp.einsum("...e,...ke->...k", u, emb) + b


class WeightGenerator(nn.Module):
    """BOD's weight generator: Linear(2E -> h) - ReLU - Linear(h -> h) - Linear(h -> 1) - sigmoid."""

    hidden: int

    @nn.compact
    def __call__(self, u: jax.Array, emb: jax.Array) -> jax.Array:
        """u f32[..., E], emb f32[..., K, E] -> weights f32[..., K] in (0, 1)."""
        u = jnp.broadcast_to(u[..., None, :], emb.shape)
        h = nn.relu(nn.Dense(self.hidden)(jnp.concatenate([u, emb], axis=-1)))
        h = nn.Dense(self.hidden)(h)
        return jax.nn.sigmoid(nn.Dense(1)(h))[..., 0]


@struct.dataclass
class DenoiseParams:
    """Stage-I products of a denoiser purifier (initial values for every other purifier)."""

    model: Any  # Scorer params
    gen: Any  # WeightGenerator params (BOD)
    tau: jax.Array  # f32 T-CE loss threshold
    w_ref: jax.Array  # f32 BOD's mean generator weight over Stage-I window positives


def init(key: jax.Array, state_dim: int, emb_dim: int, hidden: int) -> DenoiseParams:
    k_m, k_g = jax.random.split(key)
    model = Scorer(emb_dim).init(k_m, jnp.zeros((1, state_dim)), jnp.zeros((1, 1, emb_dim)))
    gen = WeightGenerator(hidden).init(k_g, jnp.zeros((1, emb_dim)), jnp.zeros((1, 1, emb_dim)))
    return DenoiseParams(model=model, gen=gen, tau=jnp.float32(jnp.inf), w_ref=jnp.float32(1.0))


# ---- losses -------------------------------------------------------------------------------------

def bce(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Elementwise binary cross-entropy with logits: softplus(l) - y l."""
    return jax.nn.softplus(logits) - y * logits


def tce_drop_rate(t: jax.Array, max_rate: float, num_gradual: int) -> jax.Array:
    """linspace(0, max_rate, num_gradual)[t] for t < num_gradual, then max_rate."""
    ramp = max_rate * t / max(num_gradual - 1, 1)
    return jnp.where(t < num_gradual, ramp, max_rate).astype(jnp.float32)


def tce_keep(loss: jax.Array, y: jax.Array, drop_rate: jax.Array) -> jax.Array:
    """T-CE's truncation mask over a flat batch: keep the floor((1 - rate) n) smallest loss*label."""
    score = (loss * y).reshape(-1)
    n = score.shape[0]
    n_keep = jnp.floor((1.0 - drop_rate) * n).astype(jnp.int32)
    rank = jnp.argsort(jnp.argsort(score, stable=True), stable=True)
    return (rank < n_keep).reshape(loss.shape)


def tce_loss(logits: jax.Array, y: jax.Array, drop_rate: jax.Array) -> jax.Array:
    """Truncated BCE: the mean loss over the kept elements (the mask carries no gradient)."""
    loss = bce(logits, y)
    keep = jax.lax.stop_gradient(tce_keep(loss, y, drop_rate))
    return jnp.sum(loss * keep) / jnp.maximum(jnp.sum(keep), 1)


def rce_weights(logits: jax.Array, y: jax.Array, beta: float) -> jax.Array:
    """R-CE's detached loss weights: sigma(l)^beta for positives, (1 - sigma(l))^beta for negatives."""
    p = jax.lax.stop_gradient(jax.nn.sigmoid(logits))
    return jnp.where(y > 0, p ** beta, (1.0 - p) ** beta)


def rce_loss(logits: jax.Array, y: jax.Array, beta: float) -> jax.Array:
    return jnp.mean(rce_weights(logits, y, beta) * bce(logits, y))


def bod_bpr(score: jax.Array, y: jax.Array, w: jax.Array) -> jax.Array:
    """BOD's weighted BPR over every (positive k, negative l) pair of a slate:
    -log sigma(w_k s_k - w_l s_l), averaged over the pairs. score, y, w f32[B, K]."""
    ws = w * score
    diff = ws[..., :, None] - ws[..., None, :]
    pair = (y[..., :, None] > 0) & (y[..., None, :] <= 0)
    return jnp.sum(-jax.nn.log_sigmoid(diff) * pair) / jnp.maximum(jnp.sum(pair), 1)


def _normalize(x):
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def bod_alignment(u: jax.Array, emb: jax.Array, y: jax.Array, w: jax.Array) -> jax.Array:
    """BOD's weighted alignment over positives: w |u/|u| - e/|e||^2, averaged over the positives."""
    d = jnp.sum((_normalize(u)[..., None, :] - _normalize(emb)) ** 2, axis=-1)
    return jnp.sum(w * d * (y > 0)) / jnp.maximum(jnp.sum(y > 0), 1)


def grad_match(g1, g2) -> jax.Array:
    """Sum over matrix leaves of sum_rows (1 - cos(row of g1, row of g2)); vectors and scalars
    (biases) count 0, as in BOD. A flax kernel is (in, out): one row per input unit."""
    total = jnp.float32(0.0)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        if a.ndim != 2:
            continue
        cos = jnp.sum(a * b, -1) / (jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1) + COS_EPS)
        total = total + jnp.sum(1.0 - cos)
    return total


def bod_objective(gen_p, model_p, scorer: Scorer, gen: WeightGenerator, s, emb, y) -> jax.Array:
    """The generator's outer objective at recommender ``model_p`` (differentiable in ``gen_p``)."""

    def weights(mp):
        u, _ = scorer.apply(mp, s, emb)
        return u, jnp.einsum("...e,...ke->...k", u, emb), gen.apply(gen_p, u, emb)

    def bpr(mp):
        _, score, w = weights(mp)
        return bod_bpr(score, y, w)

    def align(mp):
        u, _, w = weights(mp)
        return bod_alignment(u, emb, y, w)

    u, _ = scorer.apply(model_p, s, emb)
    reg = BOD_REG * (jnp.linalg.norm(u) + jnp.linalg.norm(emb))
    return grad_match(jax.grad(bpr)(model_p), jax.grad(align)(model_p)) + jax.lax.stop_gradient(reg)


# ---- Stage-I training ----------------------------------------------------------------------------

def train(kind: str, key: jax.Array, dc: DenoiseConfig, p0: DenoiseParams, states: jax.Array, slate: jax.Array,
          feedback: jax.Array, item_emb: jax.Array):
    """Fit the denoiser ``kind`` on (state, next slate, its feedback) samples; returns the params
    (tau not yet calibrated) and the loss curves."""
    emb_dim = item_emb.shape[1]
    scorer, gen = Scorer(emb_dim), WeightGenerator(dc.bod_hidden)
    opt_m, opt_g = optax.adam(dc.lr), optax.adam(dc.bod_lr)
    n = states.shape[0]

    def body(carry, inp):
        mp, gp, om, og = carry
        k, t = inp
        idx = jax.random.randint(k, (min(dc.batch_size, n),), 0, n)
        s, emb = states[idx], item_emb[slate[idx]]
        y = (feedback[idx] > POSITIVE).astype(jnp.float32)

        if kind == "bod":
            def inner(mp):
                u, _ = scorer.apply(mp, s, emb)
                w = jax.lax.stop_gradient(gen.apply(gp, u, emb))
                return bod_bpr(jnp.einsum("...e,...ke->...k", u, emb), y, w)
        elif kind == "tce":
            rate = tce_drop_rate(t, dc.tce_drop_rate, dc.tce_num_gradual)
            inner = lambda mp: tce_loss(scorer.apply(mp, s, emb)[1], y, rate)
        else:
            inner = lambda mp: rce_loss(scorer.apply(mp, s, emb)[1], y, dc.rce_beta)

        val, g = jax.value_and_grad(inner)(mp)
        upd, om = opt_m.update(g, om, mp)
        mp = optax.apply_updates(mp, upd)
        out = {"denoise_loss": val}
        if kind == "bod":
            outer, gg = jax.value_and_grad(bod_objective)(gp, mp, scorer, gen, s, emb, y)
            upd, og = opt_g.update(gg, og, gp)
            gp = optax.apply_updates(gp, upd)
            out["bod_outer_loss"] = outer
        return (mp, gp, om, og), out

    steps = jnp.arange(dc.steps)
    init = (p0.model, p0.gen, opt_m.init(p0.model), opt_g.init(p0.gen))
    (mp, gp, _, _), curves = jax.lax.scan(body, init, (jax.random.split(key, dc.steps), steps))
    return p0.replace(model=mp, gen=gp), curves


def calibrate_tau(dp: DenoiseParams, dc: DenoiseConfig, states: jax.Array, obs, item_emb: jax.Array) -> jax.Array:
    """T-CE's threshold: the (1 - tce_drop_rate) quantile of loss*label over the valid window items
    of the observations ``obs`` (batched) under their own states ``states``."""
    _, logits = Scorer(item_emb.shape[1]).apply(dp.model, states, item_emb[obs.items])
    y = (obs.feedback > POSITIVE).astype(jnp.float32)
    v = jnp.where(obs.valid, bce(logits, y) * y, jnp.nan)
    return jnp.nanquantile(v, 1.0 - dc.tce_drop_rate).astype(jnp.float32)


def calibrate_bod(dp: DenoiseParams, dc: DenoiseConfig, states: jax.Array, obs, item_emb: jax.Array) -> jax.Array:
    """BOD's reference weight: the mean generator weight over the valid positive window items of
    the observations ``obs`` (batched) under their own states ``states``."""
    emb = item_emb[obs.items]
    u, _ = Scorer(item_emb.shape[1]).apply(dp.model, states, emb)
    g = WeightGenerator(dc.bod_hidden).apply(dp.gen, u, emb)
    y = (obs.feedback > POSITIVE) & obs.valid
    return (jnp.sum(g * y) / jnp.maximum(jnp.sum(y), 1)).astype(jnp.float32)


# ---- the state filter ----------------------------------------------------------------------------

def item_weights(kind: str, dp: DenoiseParams, dc: DenoiseConfig, s: jax.Array, obs, item_emb: jax.Array):
    """(weight f32[..., W], keep bool[..., W]) of each window item under the window's state ``s``."""
    emb = item_emb[obs.items]
    u, logits = Scorer(item_emb.shape[1]).apply(dp.model, s, emb)
    y = (obs.feedback > POSITIVE) & obs.valid
    ones = jnp.ones_like(logits)
    if kind == "tce":
        drop = y & (bce(logits, y.astype(logits.dtype)) > dp.tau)
        return ones, ~drop
    if kind == "rce":
        return jnp.where(y, jax.nn.sigmoid(logits) ** dc.rce_beta, 1.0), jnp.ones_like(y)
    if kind == "bod":
        g = WeightGenerator(dc.bod_hidden).apply(dp.gen, u, emb)
        return jnp.where(y, jnp.minimum(g / dp.w_ref, 1.0), 1.0), jnp.ones_like(y)
    raise ValueError(f"unknown denoiser {kind!r}")


def filter_obs(kind: str, dp: DenoiseParams, dc: DenoiseConfig, s: jax.Array, obs, item_emb: jax.Array):
    """The window with dropped items invalid (feedback 0) and kept items' feedback scaled."""
    w, keep = item_weights(kind, dp, dc, s, obs, item_emb)
    valid = obs.valid & keep
    return obs.replace(feedback=jnp.where(valid, obs.feedback * w, 0.0).astype(obs.feedback.dtype), valid=valid)
