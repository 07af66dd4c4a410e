"""The agents' config sections: ``[agent]`` (shared by every kind), ``[slate]`` (the slate head) and
each algorithm's own (``[ppo]`` for HRL/FLAT, ``[a2c]``, ``[td3]``, ...; ``[replay]`` for the
off-policy ones). Declared here, beside the agents, and composed by ``purerec.config``; light
(dataclasses only, no JAX) so that loading a config does not import the agents."""

from __future__ import annotations

from dataclasses import dataclass

from purerec.core.fields import _check, _check_rate, traced
from purerec.state.sections import AGENT_ALIASES, AGENTS


AGENT_ACTIONS = ("hyper", "plackett_luce")


SLATE_HEADS = ("auto", "native", "topk", "grouped")


SLATE_TAILS = ("auto", "fixed", "learned")


SCORES = ("dot", "cos")


FAIR_REWARDS = ("slate", "batch")


@dataclass(frozen=True)
class AgentConfig:
    """Which agent, its hierarchy and how its policies act: see ``purerec.agents.nets``.

    ``kind``: a registered agent (``purerec.agents``): hrl, flat, a2c, td3, dnair, sac4ir; or the
    alias dsrm_hrl = hrl with ``state.purifier = dsrm`` (the method). With ``state.purifier =
    auto``, hrl is the paper's "HRL" row (no purifier) and flat its "FLAT" row (DSRM + one PPO
    policy). The fields below are the HRL / FLAT agents'; baselines read their own sections. ``action``: ``hyper`` (the worker's Gaussian
    hyper-action over the scorer's coefficients, deterministic slate by the slate head (``[slate]``); the
    authors' KuaiSim lineage) or ``plackett_luce`` (slates sampled over all items from the
    scores). ``fair_reward``: the manager's Fair_t, ``slate`` = -Gini of the popular/long-tail
    exposure of this session's slate L_t (= -|2p_t - 1| / 2; a per-session signal) or ``batch``
    = -Gini of item exposure over all sessions' slates of the last ``fair_window`` steps.
    """

    kind: str = "dsrm_hrl"
    """The agent: dsrm_hrl, hrl, flat, a2c, td3, bcq, mofir, dorl, dnair, sac4ir, fcpo, hsrl, hsrl_flat, hrl_tce/rce/bod."""
    lambda_fair: float = traced(1.0)
    """lambda of the manager's reward r + lambda Fair (HRL)."""
    manager_interval: int = 4
    """Steps between the manager's goals z (HRL)."""
    fair_reward: str = "slate"
    """The manager's Fair_t: slate (this slate's -Gini) or batch (all sessions' slates)."""
    fair_window: int = 1
    """Steps of slates the batch Fair_t looks back over."""
    hidden: int = 64
    """Hidden width of the HRL / FLAT networks."""
    action: str = "hyper"
    """hyper (Gaussian hyper-action, slate by the head) or plackett_luce (sampled slates)."""
    score: str = "dot"
    """Item scoring of the worker (eq. 6): dot or cos."""
    action_std: float = 0.05
    """Std of the worker's Gaussian hyper-action."""
    manager_std: float = 0.3
    """Std of the manager's Gaussian goal."""
    pop_scale: float = 0.05
    """Scale of the popularity term in the worker's item scores (eq. 6)."""
    context: bool = True
    """Append (step, popular share of the history) to the state."""
    init_logit_scale: float = 10.0
    """Initial scale of the Plackett-Luce logits."""

    def validate(self, p: str = "agent") -> None:
        _check(self.kind in AGENTS, f"{p}.kind", self.kind, f"one of {AGENTS}")
        _check(0 <= self.lambda_fair <= 1000, f"{p}.lambda_fair", self.lambda_fair, "in [0, 1000]")
        _check(1 <= self.manager_interval <= 1000, f"{p}.manager_interval", self.manager_interval,
               "an integer in [1, 1000]")
        _check(self.fair_reward in FAIR_REWARDS, f"{p}.fair_reward", self.fair_reward, f"one of {FAIR_REWARDS}")
        _check(1 <= self.fair_window <= 1000, f"{p}.fair_window", self.fair_window, "an integer in [1, 1000]")
        _check(1 <= self.hidden <= 4096, f"{p}.hidden", self.hidden, "an integer in [1, 4096]")
        _check(self.action in AGENT_ACTIONS, f"{p}.action", self.action, f"one of {AGENT_ACTIONS}")
        _check(self.score in SCORES, f"{p}.score", self.score, f"one of {SCORES}")
        _check(0 < self.action_std <= 2.0, f"{p}.action_std", self.action_std, "in (0, 2]")
        _check(0 < self.manager_std <= 2.0, f"{p}.manager_std", self.manager_std, "in (0, 2]")
        _check(0 < self.pop_scale <= 100.0, f"{p}.pop_scale", self.pop_scale,
               "in (0, 100] (the initial weight kappa of eq. 6's popularity term)")
        _check(0 < self.init_logit_scale <= 1000, f"{p}.init_logit_scale", self.init_logit_scale, "in (0, 1000]")

    @property
    def resolved_kind(self) -> str:
        """The registry kind (aliases resolved)."""
        return AGENT_ALIASES[self.kind][0] if self.kind in AGENT_ALIASES else self.kind


@dataclass(frozen=True)
class SlateConfig:
    """How every agent's item scores become a slate (``purerec.agents.heads``): one axis for every agent.

    ``head``: ``native`` (the method's own rule, per agent in ``purerec.agents.REGISTRY``),
    ``topk`` (the K best scores), ``grouped`` (``round(K x share)`` long-tail items, the rest
    popular, each part the top of its group by score) or ``auto`` (the agent's default: native,
    except DSRM-HRL / HRL / FLAT / MOFIR, whose default is grouped with a learned share; the
    README shows why with numbers). ``tail``: under a grouped head, the long-tail share is
    ``fixed`` (``tail_share``) or ``learned`` from the agent's own action; ``auto`` = the agent's
    default. ``tail_share``: the fixed long-tail share (traced: a sweep over it is one program).
    """

    head: str = "auto"
    """How scores become a slate: auto, native, topk or grouped (long-tail quota)."""
    tail: str = "auto"
    """Under grouped: the long-tail share is fixed (tail_share) or learned; auto = the agent's default."""
    tail_share: float = traced(0.5)
    """The fixed long-tail share of a grouped slate (traced)."""

    def validate(self, p: str = "slate") -> None:
        _check(self.head in SLATE_HEADS, f"{p}.head", self.head, f"one of {SLATE_HEADS}")
        _check(self.tail in SLATE_TAILS, f"{p}.tail", self.tail, f"one of {SLATE_TAILS}")
        _check(0 <= self.tail_share <= 1, f"{p}.tail_share", self.tail_share,
               "in [0, 1] (the long-tail share of a grouped slate)")


@dataclass(frozen=True)
class PPOConfig:
    """PPO for both levels (defaults from the sibling HRL4PFG code where public)."""

    actor_lr: float = traced(3e-4)
    """Actor learning rate (manager and worker; traced, 0 = frozen)."""
    critic_lr: float = traced(1e-3)
    """Critic learning rate (traced)."""
    gamma: float = traced(0.9)
    """Discount factor (traced)."""
    gae_lambda: float = traced(0.95)
    """GAE lambda (traced)."""
    clip_eps: float = traced(0.2)
    """PPO clipping epsilon (traced)."""
    ent_coef: float = traced(0.001)
    """Entropy bonus coefficient (traced)."""
    vf_coef: float = traced(0.5)
    """Value-loss coefficient (traced)."""
    epochs: int = 4
    """PPO epochs per update."""
    minibatches: int = 4
    """Minibatches per epoch (must divide num_envs x rollout_len)."""
    max_grad_norm: float = 0.5
    """Gradient-norm clip."""

    def validate(self, p: str = "ppo") -> None:
        for name in ("actor_lr", "critic_lr"):
            _check(0 <= getattr(self, name) < 1, f"{p}.{name}", getattr(self, name), "in [0, 1) (0 freezes that network)")
        _check(0 <= self.gamma <= 1, f"{p}.gamma", self.gamma, "in [0, 1]")
        _check(0 <= self.gae_lambda <= 1, f"{p}.gae_lambda", self.gae_lambda, "in [0, 1]")
        _check(0 < self.clip_eps < 1, f"{p}.clip_eps", self.clip_eps, "in (0, 1)")
        _check(self.ent_coef >= 0, f"{p}.ent_coef", self.ent_coef, ">= 0")
        _check(self.vf_coef >= 0, f"{p}.vf_coef", self.vf_coef, ">= 0")
        _check(1 <= self.epochs <= 100, f"{p}.epochs", self.epochs, "an integer in [1, 100]")
        _check(self.minibatches >= 1, f"{p}.minibatches", self.minibatches, "an integer >= 1")
        _check(self.max_grad_norm > 0, f"{p}.max_grad_norm", self.max_grad_norm, "> 0")



@dataclass(frozen=True)
class ReplayConfig:
    """The replay buffer and gradient steps of the off-policy agents (TD3, DNaIR, SAC4IR).

    128 x 16 per update (not 256 x 64): 4x cheaper, within 0.25 R_cum of it for TD3 and DNaIR in
    the tuning runs, and what keeps every baseline's Table-4 run under a minute on 2 CPU cores.

    Each update adds the ``num_envs x rollout_len`` transitions of its rollout (flashbax item
    buffer, FIFO) and then takes ``grad_steps`` gradient steps on minibatches of ``batch_size``
    uniformly sampled transitions (none before the buffer holds ``min_size``).
    """

    capacity: int = 100000
    """Transitions the replay buffer holds (FIFO)."""
    batch_size: int = 128
    """Transitions per gradient step."""
    grad_steps: int = 16
    """Gradient steps per update."""
    min_size: int = 2048
    """Transitions the buffer needs before learning starts."""

    def validate(self, p: str = "replay") -> None:
        _check(self.capacity >= 1, f"{p}.capacity", self.capacity, "an integer >= 1")
        _check(1 <= self.batch_size <= self.capacity, f"{p}.batch_size", self.batch_size, "an integer in [1, capacity]")
        _check(self.grad_steps >= 1, f"{p}.grad_steps", self.grad_steps, "an integer >= 1")
        _check(self.batch_size <= self.min_size <= self.capacity, f"{p}.min_size", self.min_size,
               "an integer in [batch_size, capacity]")


@dataclass(frozen=True)
class A2CConfig:
    """A2C (general RL, the KuaiSim lineage): a Gaussian hyper-action = the coefficients of a
    linear scorer over the item basis, top-K slate; synchronous advantage actor-critic on the
    env reward (``purerec.agents.a2c``)."""

    actor_lr: float = traced(3e-4)
    """Actor learning rate (traced)."""
    critic_lr: float = traced(1e-3)
    """Critic learning rate (traced)."""
    gamma: float = traced(0.9)
    """Discount factor (traced)."""
    gae_lambda: float = traced(1.0)
    """GAE lambda (1 = Monte Carlo advantages; traced)."""
    ent_coef: float = traced(0.0)
    """Entropy bonus coefficient (traced)."""
    vf_coef: float = traced(0.5)
    """Value-loss coefficient (traced)."""
    action_std: float = 0.3
    """Std of the Gaussian hyper-action."""
    minibatches: int = 4
    """Minibatches per update (must divide num_envs x rollout_len)."""
    hidden: int = 64
    """Hidden width of actor and critic."""
    max_grad_norm: float = 0.5
    """Gradient-norm clip."""

    def validate(self, p: str = "a2c") -> None:
        _check_rate(p, "actor_lr", self.actor_lr)
        _check_rate(p, "critic_lr", self.critic_lr)
        _check(0 <= self.gamma <= 1, f"{p}.gamma", self.gamma, "in [0, 1]")
        _check(0 <= self.gae_lambda <= 1, f"{p}.gae_lambda", self.gae_lambda, "in [0, 1]")
        _check(self.ent_coef >= 0, f"{p}.ent_coef", self.ent_coef, ">= 0")
        _check(self.vf_coef >= 0, f"{p}.vf_coef", self.vf_coef, ">= 0")
        _check(0 < self.action_std <= 2.0, f"{p}.action_std", self.action_std, "in (0, 2]")
        _check(self.minibatches >= 1, f"{p}.minibatches", self.minibatches, "an integer >= 1")
        _check(1 <= self.hidden <= 4096, f"{p}.hidden", self.hidden, "an integer in [1, 4096]")
        _check(self.max_grad_norm > 0, f"{p}.max_grad_norm", self.max_grad_norm, "> 0")


@dataclass(frozen=True)
class TD3Config:
    """TD3 (Fujimoto et al. 2018; general RL): a deterministic actor outputs a query in item-
    embedding space (plus a popularity weight), the slate is the top-K of its scores; twin
    critics, target policy smoothing, delayed actor (``purerec.agents.td3``)."""

    actor_lr: float = traced(1e-4)
    """Actor learning rate (traced)."""
    critic_lr: float = traced(1e-3)
    """Critic learning rate (traced)."""
    gamma: float = traced(0.9)
    """Discount factor (traced)."""
    tau: float = traced(0.01)
    """Polyak rate of the target networks (traced)."""
    explore_std: float = traced(0.1)
    """Std of the exploration noise on the actor's query (traced)."""
    policy_noise: float = traced(0.2)
    """Std of the target-policy smoothing noise (traced)."""
    noise_clip: float = traced(0.5)
    """Clip of the target-policy smoothing noise (traced)."""
    policy_delay: int = 2
    """Critic updates per actor update."""
    hidden: int = 64
    """Hidden width of actor and critics."""
    max_grad_norm: float = 10.0
    """Gradient-norm clip."""

    def validate(self, p: str = "td3") -> None:
        _check_rate(p, "actor_lr", self.actor_lr)
        _check_rate(p, "critic_lr", self.critic_lr)
        _check(0 <= self.gamma <= 1, f"{p}.gamma", self.gamma, "in [0, 1]")
        _check(0 < self.tau <= 1, f"{p}.tau", self.tau, "in (0, 1]")
        for name in ("explore_std", "policy_noise", "noise_clip"):
            _check(getattr(self, name) >= 0, f"{p}.{name}", getattr(self, name), ">= 0")
        _check(1 <= self.policy_delay <= 100, f"{p}.policy_delay", self.policy_delay, "an integer in [1, 100]")
        _check(1 <= self.hidden <= 4096, f"{p}.hidden", self.hidden, "an integer in [1, 4096]")
        _check(self.max_grad_norm > 0, f"{p}.max_grad_norm", self.max_grad_norm, "> 0")


@dataclass(frozen=True)
class DNaIRConfig:
    """DNaIR (Shi et al. 2023; fairness-aware): DQN with per-item Q values, slate = top-K of Q,
    reward + ``novelty_weight`` x the slate's mean q_i / log10(pop_i + 1.1) (``purerec.agents.dnair``).

    ``novelty_weight`` 0.05, not the port's 0.2: the bonus reaches 1 / log10(1.1) ~ 24 per item
    against a reward in [0, 1], and 0.2 made the agent show only long-tail items (test Len 12.0,
    below random exposure); grid 0 / 0.02 / 0.04 / 0.05 / 0.06 / 0.08 / 0.2 on the KuaiRec-like
    world (seed 11): only ~0.05 mixes the groups (README, "Baselines")."""

    lr: float = traced(1e-3)
    """Q-network learning rate (traced)."""
    gamma: float = traced(0.9)
    """Discount factor (traced)."""
    tau: float = traced(0.01)
    """Polyak rate of the target network (traced)."""
    epsilon: float = traced(0.1)
    """epsilon of epsilon-greedy exploration (traced)."""
    novelty_weight: float = traced(0.05)
    """Weight of the novelty bonus q_i / log10(pop_i + 1.1) (traced)."""
    hidden: int = 64
    """Hidden width of the Q network."""
    max_grad_norm: float = 10.0
    """Gradient-norm clip."""

    def validate(self, p: str = "dnair") -> None:
        _check_rate(p, "lr", self.lr)
        _check(0 <= self.gamma <= 1, f"{p}.gamma", self.gamma, "in [0, 1]")
        _check(0 < self.tau <= 1, f"{p}.tau", self.tau, "in (0, 1]")
        _check(0 <= self.epsilon <= 1, f"{p}.epsilon", self.epsilon, "in [0, 1]")
        _check(self.novelty_weight >= 0, f"{p}.novelty_weight", self.novelty_weight, ">= 0")
        _check(1 <= self.hidden <= 4096, f"{p}.hidden", self.hidden, "an integer in [1, 4096]")
        _check(self.max_grad_norm > 0, f"{p}.max_grad_norm", self.max_grad_norm, "> 0")


@dataclass(frozen=True)
class SAC4IRConfig:
    """SAC4IR (Shi et al. 2023; fairness-aware): discrete soft actor-critic over items, twin Q,
    automatic temperature with target entropy ``target_entropy_ratio`` x log|I|; fairness
    enters only through the entropy (``purerec.agents.sac4ir``)."""

    actor_lr: float = traced(3e-4)
    """Policy learning rate (traced)."""
    critic_lr: float = traced(1e-3)
    """Twin-Q learning rate (traced)."""
    alpha_lr: float = traced(1e-4)
    """Temperature learning rate (traced)."""
    gamma: float = traced(0.9)
    """Discount factor (traced)."""
    tau: float = traced(0.01)
    """Polyak rate of the target critics (traced)."""
    target_entropy_ratio: float = traced(0.8)
    """Target entropy as a share of log |I| (traced)."""
    init_log_alpha: float = -1.5
    """Initial log temperature."""
    hidden: int = 64
    """Hidden width of policy and critics."""
    max_grad_norm: float = 10.0
    """Gradient-norm clip."""

    def validate(self, p: str = "sac4ir") -> None:
        for name in ("actor_lr", "critic_lr", "alpha_lr"):
            _check_rate(p, name, getattr(self, name))
        _check(0 <= self.gamma <= 1, f"{p}.gamma", self.gamma, "in [0, 1]")
        _check(0 < self.tau <= 1, f"{p}.tau", self.tau, "in (0, 1]")
        _check(0 < self.target_entropy_ratio <= 1, f"{p}.target_entropy_ratio", self.target_entropy_ratio, "in (0, 1]")
        _check(-10 <= self.init_log_alpha <= 2, f"{p}.init_log_alpha", self.init_log_alpha, "in [-10, 2]")
        _check(1 <= self.hidden <= 4096, f"{p}.hidden", self.hidden, "an integer in [1, 4096]")
        _check(self.max_grad_norm > 0, f"{p}.max_grad_norm", self.max_grad_norm, "> 0")


@dataclass(frozen=True)
class OfflineConfig:
    """The logged data of the offline and model-based agents (BCQ, DORL; ``purerec.sim.logs``): the
    train world's logging policy (Plackett-Luce over log(1 + pop), the rich-get-richer policy
    behind the world's popularity counts) run for ``sessions`` parallel sessions x ``max_len``
    steps (sessions that end are replaced, so more sessions than that are logged)."""

    sessions: int = 1024
    """Parallel sessions of the logging policy that produce the offline logs (BCQ, DORL)."""

    def validate(self, p: str = "offline") -> None:
        _check(1 <= self.sessions <= 65536, f"{p}.sessions", self.sessions, "an integer in [1, 65536]")


@dataclass(frozen=True)
class BCQConfig:
    """Discrete BCQ (Fujimoto et al. 2019; offline general RL), slate version: per-item Q and
    imitation (behaviour) heads learned from the logs only; the slate is the top-K by Q among the
    items whose imitation probability is at least ``threshold`` x that of the K-th most likely
    item (``purerec.agents.bcq``). Gradient steps per update and batch: ``replay.grad_steps``,
    ``replay.batch_size``.

    Grid (KuaiRec-like, seed 11, stopped at update 32 by the 20,000-episode cap), greedy Len / R_cum:
    threshold 0.6 13.49 / 10.46; 0.05 13.95 / 11.33 (most_popular: 14.01 / 12.25). The issue's
    0.6 is kept as the default."""

    lr: float = traced(1e-3)
    """Q and imitation learning rate (traced)."""
    gamma: float = traced(0.9)
    """Discount factor (traced)."""
    threshold: float = traced(0.6)
    """Imitation threshold tau: items at least tau x the K-th likeliest's probability are eligible (traced)."""
    imitation_penalty: float = traced(0.01)
    """Weight of the penalty on the imitation logits in the BCQ loss (traced)."""
    target_every: int = 320
    """Gradient steps between target-network copies."""
    hidden: int = 64
    """Hidden width of the Q and imitation networks."""
    max_grad_norm: float = 10.0
    """Gradient-norm clip."""

    def validate(self, p: str = "bcq") -> None:
        _check_rate(p, "lr", self.lr)
        _check(0 <= self.gamma <= 1, f"{p}.gamma", self.gamma, "in [0, 1]")
        _check(0 <= self.threshold <= 1, f"{p}.threshold", self.threshold, "in [0, 1]")
        _check(self.imitation_penalty >= 0, f"{p}.imitation_penalty", self.imitation_penalty, ">= 0")
        _check(1 <= self.target_every <= 100000, f"{p}.target_every", self.target_every, "an integer in [1, 100000]")
        _check(1 <= self.hidden <= 4096, f"{p}.hidden", self.hidden, "an integer in [1, 4096]")
        _check(self.max_grad_norm > 0, f"{p}.max_grad_norm", self.max_grad_norm, "> 0")


@dataclass(frozen=True)
class DORLConfig:
    """DORL (Gao et al. 2023; model-based offline RL with a fairness-minded entropy bonus): an
    ensemble of ``models`` heteroscedastic user models fitted on the logs, then the A2C policy
    (section ``a2c``) trained in the learned model with reward max(0, r^ - lambda_var max var +
    lambda_ent P_E - r_min) (``purerec.agents.dorl``). Defaults: the authors' KuaiRec values
    (KuaiRand: lambda_var 0.01, lambda_ent 0.05, set in envs/kuairand.toml).

    Grid (KuaiRec-like, seed 11, the paper's budget), greedy Len / R_cum: (lambda_var, lambda_ent) =
    (0.05, 5) 14.06 / 12.12; (0.05, 0.05) 14.05 / 12.27; (0.5, 0.05) 14.07 / 12.37: within seed
    noise of each other, so the authors' values are kept."""

    models: int = 5
    """Members of the user-model ensemble."""
    model_lr: float = 1e-3
    """User-model learning rate."""
    model_steps: int = 2000
    """User-model gradient steps (fitted inside the program)."""
    model_batch: int = 256
    """User-model minibatch size."""
    model_hidden: int = 64
    """Hidden width of each user model."""
    lambda_var: float = traced(0.05)
    """Weight of the ensemble-variance penalty in the model reward (traced)."""
    lambda_ent: float = traced(5.0)
    """Weight of the entropy bonus in the model reward (traced)."""
    r_min: float = traced(0.0)
    """Floor subtracted from the model reward (traced)."""

    def validate(self, p: str = "dorl") -> None:
        _check(1 <= self.models <= 64, f"{p}.models", self.models, "an integer in [1, 64]")
        _check_rate(p, "model_lr", self.model_lr)
        _check(1 <= self.model_steps <= 1000000, f"{p}.model_steps", self.model_steps, "an integer in [1, 1e6]")
        _check(1 <= self.model_batch <= 65536, f"{p}.model_batch", self.model_batch, "an integer in [1, 65536]")
        _check(1 <= self.model_hidden <= 4096, f"{p}.model_hidden", self.model_hidden, "an integer in [1, 4096]")
        for name in ("lambda_var", "lambda_ent"):
            _check(0 <= getattr(self, name) <= 1000, f"{p}.{name}", getattr(self, name), "in [0, 1000]")
        _check(-10 <= self.r_min <= 10, f"{p}.r_min", self.r_min, "in [-10, 10]")


@dataclass(frozen=True)
class MOFIRConfig:
    """MOFIR (Ge et al. 2022; fairness-aware multi-objective RL), a reading (no public code): DDPG
    whose actor and critic take a preference vector omega = [1 - w, w]; the critic outputs
    [utility, fairness] Q values and the actor maximises omega . Q; w ~ U[0, 1] per training
    session, ``eval_weight`` at test (swept to draw the Pareto front; ``purerec.agents.mofir``).

    Grid (KuaiRec-like, seed 11, greedy Len / R_cum / AD): actor_lr 1e-4 13.13 / 9.27 / 0.59 (the
    query collapses onto ~1% of the items); **3e-5 22.63 / 15.60 / 0.18 (default)**; a plain
    top-K slate (``slate.head = topk``) at 1e-4: 13.65 / 10.93 / 1.0."""

    actor_lr: float = traced(3e-5)
    """Actor learning rate (traced)."""
    critic_lr: float = traced(1e-3)
    """Critic learning rate (traced)."""
    gamma: float = traced(0.9)
    """Discount factor (traced)."""
    tau: float = traced(0.01)
    """Polyak rate of the target networks (traced)."""
    explore_std: float = traced(0.1)
    """Std of the exploration noise (traced)."""
    eval_weight: float = traced(0.5)
    """Fairness weight w of the preference vector [1 - w, w] at test time (traced)."""
    hidden: int = 64
    """Hidden width of actor and critic."""
    max_grad_norm: float = 10.0
    """Gradient-norm clip."""

    def validate(self, p: str = "mofir") -> None:
        _check_rate(p, "actor_lr", self.actor_lr)
        _check_rate(p, "critic_lr", self.critic_lr)
        _check(0 <= self.gamma <= 1, f"{p}.gamma", self.gamma, "in [0, 1]")
        _check(0 < self.tau <= 1, f"{p}.tau", self.tau, "in (0, 1]")
        _check(0 <= self.explore_std <= 10, f"{p}.explore_std", self.explore_std, "in [0, 10]")
        _check(0 <= self.eval_weight <= 1, f"{p}.eval_weight", self.eval_weight, "in [0, 1]")
        _check(1 <= self.hidden <= 4096, f"{p}.hidden", self.hidden, "an integer in [1, 4096]")
        _check(self.max_grad_norm > 0, f"{p}.max_grad_norm", self.max_grad_norm, "> 0")


FCPO_COSTS = ("popular", "imbalance")


# Agents whose slates come from per-item values: a learned tail share is one more discrete choice.
DISCRETE_SLATE_AGENTS = ("dnair", "sac4ir", "bcq", "hsrl", "hsrl_flat")


@dataclass(frozen=True)
class FCPOConfig:
    """FCPO (Ge et al. 2021; long-term fairness as a constraint): constrained policy optimisation
    (CPO, Achiam et al. 2017) of a Gaussian hyper-action policy with cost = the number of popular
    items in the slate and the limit ``cost_limit`` x K per step; the trust-region step is solved
    in the dual with conjugate gradients and a backtracking line search (``purerec.agents.fcpo``)."""

    cost_limit: float = traced(0.5)
    """Cost limit per step as a share of K (traced)."""
    max_kl: float = traced(0.01, rate=True)
    """Trust-region size, the KL bound of a CPO step (traced, a rate: 0 = frozen)."""
    gamma: float = traced(0.9)
    """Discount factor (traced)."""
    gae_lambda: float = traced(0.98)
    """GAE lambda for reward and cost (traced)."""
    critic_lr: float = traced(1e-3)
    """Reward and cost critics' learning rate (traced)."""
    damping: float = traced(0.1)
    """Damping of the Fisher-vector products (traced)."""
    action_std: float = 0.3
    """Std of the Gaussian hyper-action's score coordinates."""
    pop_std: float = 2.5
    """Std of the popularity coordinate of the hyper-action."""
    cost: str = "popular"
    """The constrained cost: popular (popular items per slate) or imbalance (|2p - 1| per slate)."""
    cg_iters: int = 10
    """Conjugate-gradient iterations per CPO step."""
    line_search_iters: int = 10
    """Backtracking line-search steps per CPO step."""
    backtrack: float = 0.8
    """Step shrink factor of the line search."""
    critic_minibatches: int = 4
    """Critic minibatches per epoch."""
    critic_epochs: int = 2
    """Critic epochs per update."""
    hidden: int = 64
    """Hidden width of policy and critics."""
    max_grad_norm: float = 10.0
    """Critic gradient-norm clip."""

    def validate(self, p: str = "fcpo") -> None:
        _check(0 <= self.cost_limit <= 1, f"{p}.cost_limit", self.cost_limit, "in [0, 1] (a share of the slate)")
        _check(0 <= self.max_kl <= 1, f"{p}.max_kl", self.max_kl, "in [0, 1] (0 freezes the policy)")
        _check(0 < self.pop_std <= 10.0, f"{p}.pop_std", self.pop_std, "in (0, 10]")
        _check(self.cost in FCPO_COSTS, f"{p}.cost", self.cost, f"one of {FCPO_COSTS}")
        _check(0 <= self.gamma <= 1, f"{p}.gamma", self.gamma, "in [0, 1]")
        _check(0 <= self.gae_lambda <= 1, f"{p}.gae_lambda", self.gae_lambda, "in [0, 1]")
        _check_rate(p, "critic_lr", self.critic_lr)
        _check(0 <= self.damping <= 10, f"{p}.damping", self.damping, "in [0, 10]")
        _check(0 < self.action_std <= 2.0, f"{p}.action_std", self.action_std, "in (0, 2]")
        _check(1 <= self.cg_iters <= 100, f"{p}.cg_iters", self.cg_iters, "an integer in [1, 100]")
        _check(1 <= self.line_search_iters <= 100, f"{p}.line_search_iters", self.line_search_iters,
               "an integer in [1, 100]")
        _check(0 < self.backtrack < 1, f"{p}.backtrack", self.backtrack, "in (0, 1)")
        _check(self.critic_minibatches >= 1, f"{p}.critic_minibatches", self.critic_minibatches, "an integer >= 1")
        _check(1 <= self.critic_epochs <= 100, f"{p}.critic_epochs", self.critic_epochs, "an integer in [1, 100]")
        _check(1 <= self.hidden <= 4096, f"{p}.hidden", self.hidden, "an integer in [1, 4096]")
        _check(self.max_grad_norm > 0, f"{p}.max_grad_norm", self.max_grad_norm, "> 0")


HSRL_UPDATES = ("faithful", "ppo")


@dataclass(frozen=True)
class HSRLConfig:
    """HSRL (Wang et al. 2025): items as Semantic IDs (residual balanced k-means,
    ``purerec.data.semantic_ids``) and a coarse-to-fine policy, one softmax per level with a soft
    residual context, item probability = the renormalised product of its levels' (``purerec.agents.hsrl``).
    ``hsrl_flat`` is the same agent with one softmax over all items instead (the scaling study's
    comparison)."""

    levels: int = 3
    """Levels L of a Semantic ID (the public code's 3)."""
    codes: int = 64
    """Codes V per level (64: 64^3 codes for our 3-11k items; the public code uses 16-256)."""
    collision_digit: bool = True
    """Append a last token, the item's rank among items sharing its code (TIGER), so a code names one item."""
    kmeans_iters: int = 10
    """Lloyd iterations of the balanced k-means per level."""
    sid_seed: int = 0
    """Seed of the k-means initialisation (the same seed gives the same IDs)."""
    width: int = 32
    """Width of the level contexts and token tables (the public code's SASRec d = 32)."""
    hidden: int = 64
    """Hidden width of the state MLP and the critic."""
    update: str = "faithful"
    """faithful (the public code's off-policy A2C with replay, clipped advantage, Polyak target critic) or ppo."""
    actor_lr: float = traced(1e-3)
    """Actor learning rate (the public code's 1e-3; traced, 0 = frozen)."""
    critic_lr: float = traced(1e-3)
    """Critic learning rate (traced)."""
    gamma: float = traced(0.9)
    """Discount factor (the public code's 0.9; traced)."""
    ent_coef: float = traced(0.1)
    """Entropy bonus over the level softmaxes (the public code's 0.1; traced)."""
    tau: float = traced(0.01)
    """Polyak rate of the target critic (faithful; the public code's 0.01; traced)."""
    adv_clip: float = 1.0
    """Advantages are clipped to [-adv_clip, adv_clip] (faithful; the public code's 1)."""
    max_grad_norm: float = 0.5
    """Gradient-norm clip."""

    def validate(self, p: str = "hsrl") -> None:
        _check(1 <= self.levels <= 8, f"{p}.levels", self.levels, "an integer in [1, 8]")
        _check(2 <= self.codes <= 4096, f"{p}.codes", self.codes, "an integer in [2, 4096]")
        _check(1 <= self.kmeans_iters <= 1000, f"{p}.kmeans_iters", self.kmeans_iters, "an integer in [1, 1000]")
        _check(self.sid_seed >= 0, f"{p}.sid_seed", self.sid_seed, "an integer >= 0")
        _check(1 <= self.width <= 4096, f"{p}.width", self.width, "an integer in [1, 4096]")
        _check(1 <= self.hidden <= 4096, f"{p}.hidden", self.hidden, "an integer in [1, 4096]")
        _check(self.update in HSRL_UPDATES, f"{p}.update", self.update, f"one of {HSRL_UPDATES}")
        _check_rate(p, "actor_lr", self.actor_lr)
        _check_rate(p, "critic_lr", self.critic_lr)
        _check(0 <= self.gamma <= 1, f"{p}.gamma", self.gamma, "in [0, 1]")
        _check(self.ent_coef >= 0, f"{p}.ent_coef", self.ent_coef, ">= 0")
        _check(0 < self.tau <= 1, f"{p}.tau", self.tau, "in (0, 1]")
        _check(self.adv_clip > 0, f"{p}.adv_clip", self.adv_clip, "> 0")
        _check(self.max_grad_norm > 0, f"{p}.max_grad_norm", self.max_grad_norm, "> 0")
