"""Stage I: gather sessions with a behaviour policy in the train world, pre-train the state
encoder (next-feedback prediction) and then DSRM (eq. 7) on the encoder's states, or, with a
heuristic denoiser purifier (T-CE, R-CE, BOD: ``purerec.state.denoise``), that denoiser's feedback model
on the same samples.

The behaviour policy (``train.stage1_behaviour``) is the platform's: ``popularity`` =
Plackett-Luce slates with logits log(1 + pop_i), popularity-biased like the logging policy that
produced the world's logs; or ``uniform`` = random exposure, the kind of traffic behind
KuaiRand's random-exposure log (``envs/kuairand.toml`` uses it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from purerec.state.sections import DenoiseConfig, DENOISERS, resolve_agent

from purerec.core.fields import Sections
from purerec.sim import env as E
from purerec.sim.logs import BEHAVIOUR
from purerec.sim.rollout import unroll
from purerec.state import denoise, diffusion, dsrm
from purerec.state.encoder import FeedbackHead, StateEncoder
from purerec.state.purifier import Frozen

DENOISE_KEY = 0xDE  # fold_in constant of the denoiser's keys


def collect(key: jax.Array, params: E.EnvParams, n_sessions: int, n_steps: int, behaviour: str = "popularity"):
    """Flattened samples: observation, true-feedback observation, next slate and its feedback."""
    act = BEHAVIOUR[behaviour]

    def policy(key, obs, state, carry):
        slates = jax.vmap(act, in_axes=(0, 0, 0, None))(jax.random.split(key, n_sessions), obs, state, params)
        true_obs = jax.vmap(E.true_observation, in_axes=(0, None))(state, params)
        return slates, carry, {"true_obs": true_obs, "user": state.user}

    k_reset, k_run = jax.random.split(key)
    obs, state = E.batch_reset(k_reset, params, n_sessions)
    _, tr = unroll(k_run, policy, params, obs, state, (), n_steps)
    data = {"obs": tr.obs, "true_obs": tr.extras["true_obs"], "slate": tr.slate, "feedback": tr.feedback,
            "user": tr.extras["user"]}
    return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), data)


def _fit(key, loss, params, lr: float, steps: int, n: int, batch: int):
    """Adam on random minibatches of ``n`` samples; returns params and the loss curve."""
    opt = optax.adam(lr)

    def body(carry, k):
        p, o = carry
        k_idx, k_loss = jax.random.split(k)
        idx = jax.random.randint(k_idx, (min(batch, n),), 0, n)
        val, g = jax.value_and_grad(loss)(p, idx, k_loss)
        upd, o = opt.update(g, o, p)
        return (optax.apply_updates(p, upd), o), val

    (params, _), curve = jax.lax.scan(body, (params, opt.init(params)), jax.random.split(key, steps))
    return params, curve


def make_stage1(cfg: Sections, params: E.EnvParams):
    """A pure ``stage1(key) -> (Frozen, loss curves)`` for the train world. DSRM is trained only
    when the run's purifier is ``dsrm``, a denoiser only when it is that denoiser (their parameters
    keep their initial values otherwise, so every run's ``Frozen`` has one structure)."""
    purifier = resolve_agent(cfg)[1]
    train_dsrm = purifier == "dsrm"
    # The denoiser's generator width only matters with a denoiser purifier (other runs keep the default).
    dn_hidden = cfg.denoise.bod_hidden if purifier in DENOISERS else DenoiseConfig.bod_hidden
    enc = StateEncoder(cfg.encoder.state_dim, cfg.encoder.hidden)
    head = FeedbackHead(params.world.item_emb.shape[1])
    den = dsrm.make_denoiser(cfg.dsrm, cfg.encoder.state_dim)
    sched = diffusion.make_schedule(cfg.dsrm.steps, cfg.dsrm.schedule, cfg.dsrm.beta_start, cfg.dsrm.beta_end)
    item_emb = params.world.item_emb
    w = params.obs_window

    def run(key):
        k_data, k_enc_init, k_enc, k_den_init, k_den = jax.random.split(key, 5)
        data = collect(k_data, params, cfg.train.stage1_sessions, params.max_len, cfg.train.stage1_behaviour)
        n = data["slate"].shape[0]
        emb_w = lambda o: item_emb[o.items]
        d = cfg.encoder.state_dim
        enc_p = enc.init(k_enc_init, jnp.zeros((1, w, item_emb.shape[1])), jnp.zeros((1, w)), jnp.ones((1, w), bool))
        head_p = head.init(k_enc_init, jnp.zeros((1, d)), jnp.zeros((1, 2, item_emb.shape[1])))

        def enc_loss(p, idx, _):
            o = jax.tree.map(lambda x: x[idx], data["obs"])
            s = enc.apply(p["enc"], emb_w(o), o.feedback, o.valid)
            pred = head.apply(p["head"], s, item_emb[data["slate"][idx]])
            return jnp.mean((pred - data["feedback"][idx]) ** 2)

        p, enc_curve = _fit(k_enc, enc_loss, {"enc": enc_p, "head": head_p}, cfg.encoder.lr,
                            cfg.encoder.train_steps, n, cfg.encoder.batch_size)
        enc_p, head_p = p["enc"], p["head"]
        states = enc.apply(enc_p, emb_w(data["obs"]), data["obs"].feedback, data["obs"].valid)
        if cfg.dsrm.target == "unbiased":
            t = data["true_obs"]
            targets = enc.apply(enc_p, emb_w(t), t.feedback, t.valid)
        else:
            targets = states
        den_p = den.init(k_den_init, jnp.zeros((1, d)), jnp.ones((1,), jnp.int32), jnp.zeros((1, d)))

        def den_loss(p, idx, k):
            return dsrm.loss_fn(p, den, sched, k, targets[idx], states[idx])

        curves = {"encoder_loss": enc_curve}
        if train_dsrm:
            den_p, curves["dsrm_loss"] = _fit(k_den, den_loss, den_p, cfg.dsrm.lr, cfg.dsrm.train_steps, n,
                                              cfg.dsrm.batch_size)
        # The denoiser's keys come from a fold of the run key, so the splits above (and every other
        # purifier's numbers) are unchanged.
        k_dn_init, k_dn = jax.random.split(jax.random.fold_in(key, DENOISE_KEY))
        dn_p = denoise.init(k_dn_init, d, item_emb.shape[1], dn_hidden)
        if purifier in DENOISERS:
            dn_p, dn_curves = denoise.train(purifier, k_dn, cfg.denoise, dn_p, states, data["slate"],
                                            data["feedback"], item_emb)
            curves.update(dn_curves)
            if purifier == "tce":
                dn_p = dn_p.replace(tau=denoise.calibrate_tau(dn_p, cfg.denoise, states, data["obs"], item_emb))
            if purifier == "bod":
                dn_p = dn_p.replace(w_ref=denoise.calibrate_bod(dn_p, cfg.denoise, states, data["obs"], item_emb))
        return Frozen(encoder=enc_p, dsrm=den_p, feedback_head=head_p, denoise=dn_p), curves

    return run
