"""The simulator's config sections: ``[feedback]`` (popularity contamination), ``[env]`` (slate,
window, exit rules) and ``[attraction]`` (preferences that move). Light: dataclasses only, no JAX."""

from __future__ import annotations

from dataclasses import dataclass

from purerec.core.fields import _check, traced


EXIT_RULES = ("temper", "tag_repeat", "none")


FAIR_SCOPES = ("slate", "session")


AD_FORMS = ("exposure", "item")


@dataclass(frozen=True)
class FeedbackConfig:
    """Popularity contamination of observed feedback (see ``purerec.sim.feedback``)."""

    conformity: float = 0.8
    """Weight of item popularity in observed feedback (popularity contamination), in [0, 1]."""
    noise_std: float = 0.05
    """Std of the Gaussian noise on observed feedback."""

    def validate(self, p: str = "feedback") -> None:
        _check(0.0 <= self.conformity <= 1.0, f"{p}.conformity", self.conformity, "in [0, 1]")
        _check(self.noise_std >= 0.0, f"{p}.noise_std", self.noise_std, ">= 0 (a standard deviation)")


@dataclass(frozen=True)
class EnvConfig:
    """Session dynamics: slate, observation window and exit rules (see ``purerec.sim.abandonment``)."""

    slate_size: int = 10
    """Items per slate, K."""
    obs_window: int = 20
    """Last W shown items (and their feedback) an agent observes."""
    max_len: int = 30
    """Most steps in one session (the paper: 30 on KuaiRec, 50 on KuaiRand)."""
    exit_rule: str = "temper"
    """Abandonment rule: temper (patience + fairness exit), tag_repeat or none."""
    fair_scope: str = "slate"
    """What the fairness exit looks at: slate (this step's slate, the authors' rule) or session."""
    temper_init: float = 0.0
    """Starting patience (0 = max_len)."""
    temper_offset: float = traced(2.0)
    """Satisfaction bar: patience changes by clip(mean reward - offset, -2, 0) per step (traced)."""
    fair_threshold: float = traced(0.3)
    """Imbalance |2p - 1| of popular items at which the fairness exit costs patience (traced)."""
    fair_penalty: float = traced(1.0)
    """Patience lost when the fairness threshold is exceeded (traced)."""
    tag_window: int = 10
    """Steps of history the tag-repetition rule looks back over."""
    tag_threshold: int = 1
    """Repeats of a tag within tag_window that end the session (tag_repeat rule)."""
    dynamics: str = "none"
    """none (fixed true preference) or attraction (preferences move toward picks; [attraction])."""

    def validate(self, n_items: int | None = None, p: str = "env") -> None:
        hi = n_items if n_items is not None else "n_items"
        _check(self.slate_size >= 1 and (n_items is None or self.slate_size <= n_items),
               f"{p}.slate_size", self.slate_size, f"an integer in [1, {hi}] (the test world's item count)")
        _check(1 <= self.obs_window <= 1000, f"{p}.obs_window", self.obs_window, "an integer in [1, 1000]")
        _check(1 <= self.max_len <= 10000, f"{p}.max_len", self.max_len, "an integer in [1, 10000]")
        _check(self.exit_rule in EXIT_RULES, f"{p}.exit_rule", self.exit_rule, f"one of {EXIT_RULES}")
        _check(self.fair_scope in FAIR_SCOPES, f"{p}.fair_scope", self.fair_scope,
               f"one of {FAIR_SCOPES} (slate: this step's slate, the authors' rule; session: all items shown so far)")
        _check(self.temper_init >= 0, f"{p}.temper_init", self.temper_init,
               ">= 0 (0 means: start at max_len)")
        _check(self.temper_offset >= 0, f"{p}.temper_offset", self.temper_offset, ">= 0")
        _check(0.0 <= self.fair_threshold <= 1.0, f"{p}.fair_threshold", self.fair_threshold, "in [0, 1]")
        _check(self.fair_penalty >= 0, f"{p}.fair_penalty", self.fair_penalty, ">= 0")
        _check(1 <= self.tag_window <= 1000, f"{p}.tag_window", self.tag_window, "an integer in [1, 1000]")
        _check(self.tag_threshold >= 0, f"{p}.tag_threshold", self.tag_threshold, "an integer >= 0")
        _check(self.dynamics in DYNAMICS, f"{p}.dynamics", self.dynamics,
               f"one of {DYNAMICS} (none: a fixed true preference per session; attraction: the profile "
               "moves toward what the user picks, settings in [attraction])")

    @property
    def history_len(self) -> int:
        """Length of the item history kept in the state: enough for the obs and the tag rule."""
        return max(self.obs_window, self.tag_window)

    @property
    def temper_start(self) -> float:
        return float(self.temper_init) if self.temper_init > 0 else float(self.max_len)


DYNAMICS = ("none", "attraction")


DRIFT_MODES = ("pick", "mean")


DRIFT_BLOCKS = ("full", "taste")


HARM_REWARDS = ("feedback", "penalised")


@dataclass(frozen=True)
class AttractionConfig:
    """Preferences that move (``env.dynamics = "attraction"``; ``purerec.sim.dynamics``, Chee et al.
    KDD 2024): the user picks one item per slate by a logit with an outside option (``premium_c``)
    and the picked item attracts the profile, u <- beta u0 + alpha_v v + (1 - alpha_v - beta) u.
    Read only when the dynamics are on; the default world never sees these fields.

    ``alpha_h`` / ``alpha_nh``: attraction toward a harmful / other pick (the paper's 0.5 / 0.25).
    ``beta``: pull back toward the initial profile (0.2). ``premium_c``: the outside option's weight;
    0 = ``click_target``'s rule when that is set (c such that the median user's top-k safe slate on
    the initial profile is clicked with that probability: the paper's regime of p_CLK > 0.5), else
    the authors' rule per world (half the smallest gap between the catalogue's and a random safe
    slate's total score over users); recorded in the calibration card. ``harm_lambda``: lambda
    of J = sum_t (p_CLK - lambda p_H) (100). ``harm_frac``: share of items labelled harmful in
    worlds without labels (a region of taste space: the items farthest along a random taste
    direction). ``mode``: ``pick`` (the sampled pick moves the profile) or ``mean`` (the expectation
    over picks, the paper's code). ``block``: ``full`` (the whole factor vector moves, as the
    paper's code does with its MF vectors) or ``taste`` (only the taste block moves, toward kappa q_v
    with kappa matching the scales of user and item tastes; biases stay). ``reward``: what agents are
    trained on, ``feedback`` (the slate's mean observed feedback) or ``penalised`` (minus
    ``harm_lambda`` times 1[the pick was harmful]). ``harm_seed``: seed of the harm direction.
    """

    alpha_h: float = traced(0.5)
    """Attraction toward a picked harmful item (the harm paper: 0.5; traced)."""
    alpha_nh: float = traced(0.25)
    """Attraction toward a picked safe item (0.25; traced)."""
    beta: float = traced(0.2)
    """Pull back toward the initial profile per step (0.2; traced)."""
    premium_c: float = 0.0
    """Weight of the outside option in the pick (0 = set by click_target, else by the authors' rule)."""
    click_target: float = 0.0
    """0 = off; in (0, 1): c such that the median user's top-k safe slate is clicked with this probability."""
    harm_lambda: float = traced(100.0)
    """lambda of J = sum_t (p_CLK - lambda p_H) and of the penalised reward (traced)."""
    harm_frac: float = 0.2
    """Share of items labelled harmful in worlds without labels."""
    mode: str = "pick"
    """What moves the profile: pick (the sampled pick) or mean (the expectation, the paper's code)."""
    block: str = "full"
    """Which part of the profile moves: full (all factors) or taste (taste block only)."""
    reward: str = "feedback"
    """Agents' training reward: feedback, or penalised (minus harm_lambda for a harmful pick)."""
    harm_seed: int = 0
    """Seed of the harm direction in taste space."""

    def validate(self, p: str = "attraction") -> None:
        for name in ("alpha_h", "alpha_nh", "beta"):
            v = getattr(self, name)
            _check(0 <= v <= 1, f"{p}.{name}", v, "in [0, 1]")
        _check(max(self.alpha_h, self.alpha_nh) + self.beta <= 1, f"{p}.beta", self.beta,
               f"at most 1 - max(alpha_h, alpha_nh) = {1 - max(self.alpha_h, self.alpha_nh):g} (the step is a "
               "convex combination of u0, the pick and the profile)")
        _check(self.premium_c >= 0, f"{p}.premium_c", self.premium_c, ">= 0 (0 = the authors' rule per world)")
        _check(0 <= self.click_target < 1, f"{p}.click_target", self.click_target,
               "in [0, 1) (0 = off: c by premium_c or the authors' rule)")
        _check(not (self.click_target > 0 and self.premium_c > 0), f"{p}.click_target", self.click_target,
               "0 when attraction.premium_c is given (one rule sets c)")
        _check(self.harm_lambda >= 0, f"{p}.harm_lambda", self.harm_lambda, ">= 0")
        _check(0 < self.harm_frac < 1, f"{p}.harm_frac", self.harm_frac, "in (0, 1)")
        _check(self.mode in DRIFT_MODES, f"{p}.mode", self.mode, f"one of {DRIFT_MODES}")
        _check(self.block in DRIFT_BLOCKS, f"{p}.block", self.block, f"one of {DRIFT_BLOCKS}")
        _check(self.reward in HARM_REWARDS, f"{p}.reward", self.reward, f"one of {HARM_REWARDS}")
        _check(self.harm_seed >= 0, f"{p}.harm_seed", self.harm_seed, "an integer >= 0")


COST_LABELS = ("current", "frozen")


PERSIST = ("none", "user")


@dataclass(frozen=True)
class PlatformConfig:
    """A platform state shared by all sessions (``purerec.sim.platform``; "Worlds with memory"):
    item exposure mass fed by every session's slates and decayed by ``rho``, the popular labels
    recomputed every ``relabel_every`` batched steps. With ``persist = user`` (and preferences that
    move, ``env.dynamics = attraction``) the platform also keeps every user's profile as their last
    session left it: a user's next session starts there, and after each session the user comes back
    with probability ``purerec.sim.env.satisfaction`` (the mean true response to what the session
    last showed); the evaluation then also follows each test user over ``horizon`` sessions.
    Read only when ``loop`` is on; the default world never sees these fields (its run ids, caches
    and numbers are those from before)."""

    loop: bool = False
    """Whether exposures feed back: a platform state shared by all sessions (off: fixed by the logs)."""
    rho: float = traced(0.999)
    """Decay of the exposure mass per batched step (1 = frozen at the logs; traced)."""
    relabel_every: int = 100
    """Batched steps between recomputations of the popular labels."""
    cost_labels: str = "current"
    """Labels a constrained agent's cost (FCPO) counts: current (the platform's) or frozen (the logs')."""
    persist: str = "none"
    """none (every session starts from the user's true preference) or user (from where their last one left it)."""
    horizon: int = 5
    """Sessions per user in the evaluation's horizon protocol (persist = user)."""

    def validate(self, p: str = "platform") -> None:
        _check(0.0 <= self.rho <= 1.0, f"{p}.rho", self.rho, "in [0, 1] (1 keeps the logs' popularity)")
        _check(1 <= self.relabel_every <= 10**6, f"{p}.relabel_every", self.relabel_every,
               "an integer in [1, 1000000] (batched steps)")
        _check(self.cost_labels in COST_LABELS, f"{p}.cost_labels", self.cost_labels, f"one of {COST_LABELS}")
        _check(self.persist in PERSIST, f"{p}.persist", self.persist, f"one of {PERSIST}")
        _check(1 <= self.horizon <= 100, f"{p}.horizon", self.horizon, "an integer in [1, 100] (sessions per user)")
