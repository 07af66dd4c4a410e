"""The recommendation environment, gymnax-style: pure ``reset`` and ``step`` with auto-reset.

One session = one user. Each step the agent shows a slate of ``slate_size`` item ids; the user
answers each item with observed (popularity-contaminated) feedback in [0, 1]; the reward is
the slate's mean observed feedback. The observation is what a real recommender sees: the last
``obs_window`` shown items with their observed feedback -- never the hidden preference.
``info`` carries the true (uncontaminated) feedback for diagnostics and unbiased-log training.

With ``env.dynamics = "attraction"`` (opt-in) the session also holds a hidden profile ``pref``
that starts at the user's true preference and moves toward what the user picks
(``purerec.sim.dynamics``); the true response, the feedback and the exit rule read it, and
``info["dynamics"]`` carries the pick's click / harm probabilities. With ``"none"`` (the default)
``pref`` is None (no leaf: checkpoints and programs are unchanged) and the step is the one from
before the option existed.

Everything is jit- and vmap-able: vmap ``reset``/``step`` over a batch of keys and states to run
thousands of sessions at once. ``EnvParams`` holds the world and the dynamics; its float fields
are pytree leaves (so they can be vmapped in sweeps), its shape-changing fields are static.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from purerec.core.fields import Sections
from purerec.sim import abandonment, dynamics as DY, platform as PL
from purerec.sim.feedback import contaminate
from purerec.sim.world import true_response, World


@struct.dataclass
class EnvParams:
    world: World
    conformity: jax.Array
    noise_std: jax.Array
    temper_start: jax.Array
    temper_offset: jax.Array
    fair_threshold: jax.Array
    fair_penalty: jax.Array
    tag_threshold: jax.Array
    alpha_h: jax.Array = 0.0  # the attraction model's fields (read only when dynamics is "attraction")
    alpha_nh: jax.Array = 0.0
    beta: jax.Array = 0.0
    premium_c: jax.Array = 1.0
    harm_lambda: jax.Array = 0.0
    drift_scale: jax.Array = 1.0  # kappa of the taste block (block = "taste")
    rho: jax.Array = 1.0  # the platform's exposure decay (read only when loop is on)
    pop_mass: jax.Array = 0.0  # the logs' total exposure, sum item_pop (loop only)
    slate_size: int = struct.field(pytree_node=False, default=10)
    obs_window: int = struct.field(pytree_node=False, default=20)
    max_len: int = struct.field(pytree_node=False, default=30)
    exit_rule: str = struct.field(pytree_node=False, default="temper")
    fair_scope: str = struct.field(pytree_node=False, default="slate")
    tag_window: int = struct.field(pytree_node=False, default=10)
    dynamics: str = struct.field(pytree_node=False, default="none")
    drift_mode: str = struct.field(pytree_node=False, default="pick")
    drift_block: str = struct.field(pytree_node=False, default="full")
    harm_reward: str = struct.field(pytree_node=False, default="feedback")
    loop: bool = struct.field(pytree_node=False, default=False)  # a platform state (purerec.sim.platform)
    relabel_every: int = struct.field(pytree_node=False, default=1)
    n_popular: int = struct.field(pytree_node=False, default=0)  # size of the popular group (loop only)
    shard_axis: str | None = struct.field(pytree_node=False, default=None)  # session shards' axis (loop only)
    persist: bool = struct.field(pytree_node=False, default=False)  # users come back changed (platform.persist)
    same_user: bool = struct.field(pytree_node=False, default=False)  # a slot's next session is its user's
    horizon: int = struct.field(pytree_node=False, default=1)  # sessions per user in the evaluation (persist)
    start_pref: jax.Array | None = None  # f32[U, D] profiles new sessions start from (persist; None: true_user)

    @property
    def history_len(self) -> int:
        return max(self.obs_window, self.tag_window)


def make_params(world: World, cfg: Sections) -> EnvParams:
    e, f = cfg.env, cfg.feedback
    dyn = {}
    if e.dynamics == "attraction":
        a = cfg.attraction
        if world.harmful is None:
            raise ValueError("env.dynamics = 'attraction' needs a world with harm labels "
                             "(purerec.sim.dynamics.label_harm; datasets.get_worlds adds them)")
        c = DY.premium(world, a, e.slate_size)[0]
        dyn = dict(alpha_h=jnp.float32(a.alpha_h), alpha_nh=jnp.float32(a.alpha_nh), beta=jnp.float32(a.beta),
                   premium_c=jnp.float32(c), harm_lambda=jnp.float32(a.harm_lambda),
                   drift_scale=jnp.float32(DY.taste_scale(world)), dynamics="attraction", drift_mode=a.mode,
                   drift_block=a.block, harm_reward=a.reward)
    pf = getattr(cfg, "platform", None)
    if pf is not None and pf.loop:
        dyn.update(rho=jnp.float32(pf.rho), pop_mass=jnp.sum(world.item_pop.astype(jnp.float32)), loop=True,
                   relabel_every=pf.relabel_every, n_popular=int(np.asarray(world.popular).sum()),
                   persist=pf.persist == "user", horizon=pf.horizon)
    return EnvParams(
        world=world,
        conformity=jnp.float32(f.conformity),
        noise_std=jnp.float32(f.noise_std),
        temper_start=jnp.float32(e.temper_start),
        temper_offset=jnp.float32(e.temper_offset),
        fair_threshold=jnp.float32(e.fair_threshold),
        fair_penalty=jnp.float32(e.fair_penalty),
        tag_threshold=jnp.int32(e.tag_threshold),
        slate_size=e.slate_size,
        obs_window=e.obs_window,
        max_len=e.max_len,
        exit_rule=e.exit_rule,
        fair_scope=e.fair_scope,
        tag_window=e.tag_window,
        **dyn,
    )


@struct.dataclass
class Obs:
    items: jax.Array  # i32[W] last shown items, most recent last; 0 where empty
    feedback: jax.Array  # f32[W] their observed feedback; 0 where empty
    valid: jax.Array  # bool[W]
    t: jax.Array  # i32 steps taken in this session


@struct.dataclass
class EnvState:
    user: jax.Array  # i32
    t: jax.Array  # i32
    temper: jax.Array  # f32
    hist_items: jax.Array  # i32[H], -1 = empty, most recent last
    hist_feedback: jax.Array  # f32[H]
    hist_true: jax.Array  # f32[H] true feedback of the same items (hidden; for diagnostics)
    n_shown: jax.Array  # i32
    n_popular: jax.Array  # i32
    ret: jax.Array  # f32 return so far
    pref: jax.Array | None  # f32[D] the moving profile (dynamics "attraction"; None otherwise), hidden


def observe(state: EnvState, params: EnvParams) -> Obs:
    w = params.obs_window
    items = state.hist_items[-w:]
    valid = items >= 0
    return Obs(items=jnp.maximum(items, 0), feedback=state.hist_feedback[-w:] * valid, valid=valid, t=state.t)


def true_observation(state: EnvState, params: EnvParams) -> Obs:
    """The same window with the true feedback in place of the observed: the unbiased analogue."""
    obs = observe(state, params)
    return obs.replace(feedback=state.hist_true[-params.obs_window:] * obs.valid)


def reset(key: jax.Array, params: EnvParams) -> tuple[Obs, EnvState]:
    """Start a session with a uniformly drawn user of the world."""
    return reset_user(jax.random.randint(key, (), 0, params.world.n_users), params)


def reset_user(user: jax.Array, params: EnvParams) -> tuple[Obs, EnvState]:
    """Start a session with the given user (the test protocol's distinct users)."""
    h = params.history_len
    state = EnvState(
        user=jnp.asarray(user, jnp.int32),
        t=jnp.int32(0),
        temper=params.temper_start.astype(jnp.float32),
        hist_items=jnp.full((h,), -1, jnp.int32),
        hist_feedback=jnp.zeros((h,), jnp.float32),
        hist_true=jnp.zeros((h,), jnp.float32),
        n_shown=jnp.int32(0),
        n_popular=jnp.int32(0),
        ret=jnp.float32(0.0),
        pref=start_profile(user, params) if params.dynamics == "attraction" else None,
    )
    return observe(state, params), state


def start_profile(user: jax.Array, params: EnvParams) -> jax.Array:
    """The profile a session starts from: the user's true preference, or with users who come back
    changed (``platform.persist = user``) the profile their last session ended with."""
    table = params.world.true_user if params.start_pref is None else params.start_pref
    return table[user]


def satisfaction(state: EnvState, params: EnvParams) -> jax.Array:
    """The chance a user comes back after a session (``platform.persist = user``): the mean true
    response to the items of the session's last ``obs_window`` slates' worth of shown items (how
    the session felt at its end)."""
    obs = true_observation(state, params)
    return jnp.sum(obs.feedback) / jnp.maximum(obs.valid.sum(), 1)


def _push(hist: jax.Array, new: jax.Array) -> jax.Array:
    return jnp.concatenate([hist, new])[-hist.shape[0]:]


def step_env(key: jax.Array, state: EnvState, slate: jax.Array, params: EnvParams):
    """One step without auto-reset. Returns (obs, state, reward, terminated, truncated, info)."""
    world = params.world
    slate = slate.astype(jnp.int32)
    if params.dynamics == "attraction":
        return _step_attraction(key, state, slate, params)
    r_true = true_response(world, state.user, slate)
    fb = contaminate(key, r_true, world.pop_norm[slate], params.conformity, params.noise_std)
    reward = fb.mean()
    return advance(state, slate, params, fb=fb, r_true=r_true, reward=reward, exit_reward=reward,
                   true_reward=r_true.mean())


def _step_attraction(key, state: EnvState, slate: jax.Array, params: EnvParams):
    """``step_env`` with a moving profile: the response, the feedback (the same key as the static
    step) and the exit read the current profile; the pick (keys folded in from ``key``, so the
    static draws are untouched) then moves it (``purerec.sim.dynamics``)."""
    world = params.world
    u = state.pref
    r_true = jax.nn.sigmoid(world.true_item[slate] @ u)
    fb = contaminate(key, r_true, world.pop_norm[slate], params.conformity, params.noise_std)
    u0 = world.true_user[state.user]
    logits = world.true_item @ u
    ch = DY.choice(logits, slate, world.harmful, params.premium_c)
    k_click, k_slate, k_org = jax.random.split(jax.random.fold_in(key, 1), 3)
    clicked = jax.random.uniform(k_click) < ch.p_clk
    v = jnp.where(clicked, slate[jax.random.categorical(k_slate, logits[slate])],
                  jax.random.categorical(k_org, logits))
    alpha_v = DY.alphas(world.harmful, params.alpha_h, params.alpha_nh)
    taste = params.drift_block == "taste"
    targets = world.true_item[:, :-2] * params.drift_scale if taste else world.true_item
    moving, anchor = (u[:-2], u0[:-2]) if taste else (u, u0)
    if params.drift_mode == "mean":
        moved = DY.step_mean(moving, anchor, ch.p_pick, targets, alpha_v, params.beta)
    else:
        moved = DY.step_pick(moving, anchor, targets[v], alpha_v[v], params.beta)
    new_pref = jnp.concatenate([moved, u[-2:]]) if taste else moved
    harm_pick = world.harmful[v]
    feedback_reward = fb.mean()
    reward = feedback_reward - params.harm_lambda * harm_pick if params.harm_reward == "penalised" else feedback_reward
    obs, new_state, reward, terminated, truncated, info = advance(
        state, slate, params, fb=fb, r_true=r_true, reward=reward, exit_reward=feedback_reward,
        true_reward=r_true.mean(), pref=new_pref)
    info["dynamics"] = DY.StepInfo(p_clk=ch.p_clk, p_h=ch.p_h, clicked=clicked, harm_pick=harm_pick,
                                   drift=jnp.linalg.norm(new_pref - u0))
    return obs, new_state, reward, terminated, truncated, info


def advance(state: EnvState, slate: jax.Array, params: EnvParams, *, fb, r_true, reward, exit_reward,
            true_reward, pref=None):
    """A session after a slate, given its feedback: exposure counts, the exit rule (on
    ``exit_reward``), the history and ``step_env``'s outputs. Shared with model environments
    (DORL's user model) that predict the feedback instead of drawing it."""
    world = params.world
    n_new_pop = world.popular[slate].sum(dtype=jnp.int32)
    n_shown = state.n_shown + slate.shape[0]
    n_popular = state.n_popular + n_new_pop
    temper = state.temper
    if params.exit_rule == "temper":
        shown_p, pop_p = abandonment.imbalance_counts(params.fair_scope, slate.shape[0], n_new_pop, n_shown,
                                                      n_popular)
        temper, terminated = abandonment.temper_update(
            state.temper, exit_reward, shown_p, pop_p, params.temper_offset, params.fair_threshold,
            params.fair_penalty)
    elif params.exit_rule == "tag_repeat":
        terminated = abandonment.tag_repeat_exit(
            state.t, state.hist_items, slate, world.item_tags, params.tag_window, params.tag_threshold)
    else:
        terminated = jnp.bool_(False)
    t = state.t + 1
    truncated = (t >= params.max_len) & ~terminated
    new_state = EnvState(
        user=state.user, t=t, temper=temper,
        hist_items=_push(state.hist_items, slate),
        hist_feedback=_push(state.hist_feedback, fb),
        hist_true=_push(state.hist_true, r_true),
        n_shown=n_shown, n_popular=n_popular, ret=state.ret + reward,
        pref=state.pref if pref is None else pref,
    )
    info = {
        "feedback": fb,
        "true_feedback": r_true,
        "true_reward": true_reward,
        "n_popular": n_new_pop,
        "episode_len": t,
        "episode_return": new_state.ret,
    }
    return observe(new_state, params), new_state, reward, terminated, truncated, info


def auto_reset(step_fn, env_params=lambda p: p):
    """``step_fn`` (``step_env``'s signature) with auto-reset: when the session ends, the returned
    obs/state are a new session's; ``info['last_obs']`` keeps the ended session's final
    observation (for bootstrapping). ``env_params`` maps ``step_fn``'s params to the env's."""

    def step_auto(key, state, slate, params):
        k_step, k_reset = jax.random.split(key)
        ep = env_params(params)
        obs_st, state_st, reward, terminated, truncated, info = step_fn(k_step, state, slate, params)
        obs_re, state_re = reset_user(state_st.user, ep) if ep.same_user else reset(k_reset, ep)
        done = terminated | truncated
        pick = lambda a, b: jax.tree.map(lambda x, y: jnp.where(done, x, y), a, b)
        info["last_obs"] = obs_st
        if ep.persist:  # users come back changed: who ended, with which profile, and whether they return
            info["last_user"], info["last_pref"] = state_st.user, state_st.pref
            info["returns"] = done & (jax.random.uniform(jax.random.fold_in(k_reset, 7)) < satisfaction(state_st, ep))
        return pick(obs_re, obs_st), pick(state_re, state_st), reward, terminated, truncated, info

    return step_auto


@struct.dataclass
class LoopState:
    """A batch of sessions on a platform with memory (``platform.loop``): the per-session states
    and the one platform state they share (``purerec.sim.platform``)."""

    sessions: EnvState  # [B] per-session states
    platform: PL.Platform  # shared, not batched


def sessions_of(state):
    """The per-session states of a batch (what policies see: the platform state is the env's)."""
    return state.sessions if isinstance(state, LoopState) else state


def on_platform(sessions, params: EnvParams):
    """A batch of fresh sessions as the env state: wrapped with the platform at the logs when
    ``params.loop``, as is otherwise."""
    return LoopState(sessions, PL.init(params.world, params.persist)) if params.loop else sessions


def batched(step_fn, move_platform: bool = True):
    """``step_fn`` over a batch of sessions: one key split per session. On a ``LoopState`` the
    sessions step in the current world (``platform.current_world``) and their slates then move the
    platform; without ``move_platform`` (a learned model env, whose params are its own and whose
    imagined slates show nothing to anyone) the platform is carried through untouched."""

    def vmapped(key, state, slates, params):
        return jax.vmap(step_fn, in_axes=(0, 0, 0, None))(jax.random.split(key, slates.shape[0]), state, slates,
                                                          params)

    def batch(key, state, slates, params):
        if not isinstance(state, LoopState):
            return vmapped(key, state, slates, params)
        plat = state.platform
        now = params.replace(world=PL.current_world(params.world, plat)) if move_platform else params
        if move_platform and params.persist:
            now = now.replace(start_pref=plat.prefs)
        obs, sessions, reward, term, trunc, info = vmapped(key, state.sessions, slates, now)
        if move_platform:
            total = (lambda x: jax.lax.psum(x, params.shard_axis)) if params.shard_axis else (lambda x: x)
            if params.persist:
                gather = (lambda x: jax.lax.all_gather(x, params.shard_axis, tiled=True)) if params.shard_axis \
                    else (lambda x: x)
                plat = plat.replace(prefs=PL.store_profiles(plat.prefs, gather(info["last_user"]),
                                                            gather(info["last_pref"]), gather(term | trunc)))
            plat, info["platform"] = PL.advance(plat, slates.astype(jnp.int32), params.rho, params.pop_mass,
                                                params.n_popular, params.relabel_every, total)
        return obs, LoopState(sessions, plat), reward, term, trunc, info

    return batch


step = auto_reset(step_env)
step.__doc__ = "``step_env`` with auto-reset (``auto_reset``)."


def batch_reset(key: jax.Array, params: EnvParams, n: int):
    """``n`` fresh sessions (on the platform at the logs when ``params.loop``: a ``LoopState``)."""
    obs, state = jax.vmap(reset, in_axes=(0, None))(jax.random.split(key, n), params)
    return obs, on_platform(state, params)


batch_step = batched(step)

