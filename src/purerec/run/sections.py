"""The run layer's config sections: ``[eval]`` (the evaluation protocol, one for every agent) and
``[train]`` (budgets, seeds, chunks, Stage I data). Light: dataclasses only, no JAX."""

from __future__ import annotations

from dataclasses import dataclass

from purerec.core.fields import _check, MAX_BATCH, MAX_SESSIONS
from purerec.sim.sections import AD_FORMS


EVAL_PROTOCOLS = ("test", "train_report")


EVAL_ACTIONS = ("greedy", "sample")


EVAL_SPLITS = ("test", "validation")


@dataclass(frozen=True)
class EvalConfig:
    """The evaluation protocol, one for every agent (``purerec.run.evaluation``).

    ``protocol = "test"``: the held-out test world, ``n_sessions`` distinct users (capped at the
    world's users), each run to its first exit, ``repeats`` repeats with seeds ``seed + r``; a
    seed's figure is the mean over its repeats, the table gives mean +- std over training seeds.
    ``protocol = "train_report"``: the paper's likely reading (KuaiSim's report): the mean of the
    last ``report_updates`` updates' training metrics on the train world, exploration on.
    ``action``: how every agent acts at test time, ``greedy`` (mean goal and mean action) or
    ``sample`` (the training policy); ``results.json`` holds the test protocol under both.
    ``split``: which users the protocol runs on, ``test`` (the held-out test world) or
    ``validation`` (a third set of users, disjoint from the train and test users, on the test
    world's items: ``purerec.data.validation``); hyperparameters are chosen on validation only.
    """

    protocol: str = "test"
    """test (held-out users, each session to its first exit) or train_report (training metrics)."""
    split: str = "test"
    """Users the protocol runs on: test, or validation (for choosing hyperparameters)."""
    action: str = "greedy"
    """How agents act at test time: greedy (mean action) or sample (the training policy)."""
    n_sessions: int = 4096
    """Distinct users evaluated per repeat (capped at the world's users)."""
    repeats: int = 3
    """Repeats of the protocol per seed (seeds eval.seed + r)."""
    report_updates: int = 10
    """Last updates averaged by the train_report protocol."""
    ad_form: str = "exposure"
    """Which AD the tables show: exposure (|2p - 1| of exposure shares) or item (per-item shares)."""
    seed: int = 2027
    """Seed of the evaluation sessions (the same users and streams for every agent)."""

    def validate(self, p: str = "eval") -> None:
        _check(self.protocol in EVAL_PROTOCOLS, f"{p}.protocol", self.protocol, f"one of {EVAL_PROTOCOLS}")
        _check(self.action in EVAL_ACTIONS, f"{p}.action", self.action, f"one of {EVAL_ACTIONS}")
        _check(self.split in EVAL_SPLITS, f"{p}.split", self.split, f"one of {EVAL_SPLITS}")
        _check(self.n_sessions >= 1, f"{p}.n_sessions", self.n_sessions, "an integer >= 1")
        _check(1 <= self.repeats <= 100, f"{p}.repeats", self.repeats, "an integer in [1, 100]")
        _check(self.report_updates >= 1, f"{p}.report_updates", self.report_updates, "an integer >= 1")
        _check(self.ad_form in AD_FORMS, f"{p}.ad_form", self.ad_form, f"one of {AD_FORMS}")
        _check(self.seed >= 0, f"{p}.seed", self.seed, "an integer >= 0")


STAGE1_BEHAVIOURS = ("popularity", "uniform")
SEED_BATCHING = ("auto", "vmap", "map")


# What ``train.session_shards = 0`` resolves to (for agents that split their sessions): the shard
# count every published single-machine figure used (one shard per core of the 2-core machine
# they were measured on). A constant, so that the same config gives the same numbers on any machine.
DEFAULT_SESSION_SHARDS = 2


@dataclass(frozen=True)
class TrainConfig:
    """The training run: seeds (one program for all), parallel sessions, budget, chunking and outputs.

    ``session_shards`` splits the parallel sessions of a run into that many shards (data
    parallelism: each shard steps its share of the sessions and takes its share of every PPO
    minibatch; exposure counts and gradients are summed across shards). It is part of the
    algorithm's definition (each shard has its own random stream), so it belongs to the config,
    never to the machine: the shards run one per device where there are enough devices and as a
    vmapped axis on one device where there are not (``purerec.run.experiment._stage2_programs``).
    0 (the default) = ``DEFAULT_SESSION_SHARDS`` (2) where they split the batch evenly (else 1),
    1 for agents that do not split their sessions, and, over several processes, every device of
    every process (see ``resolve_session_shards``); the resolved value is what ``config.json``
    records, and a resumed run keeps it.

    ``eval_every_chunks`` (0 = only at the end) also evaluates on the test world every that many
    chunks, into the run's ``evals.jsonl``: test-world learning curves, never used for training.

    ``target_episodes`` (0 = off; default 20,000, the paper's budget) caps the training episodes
    of every seed: a ``train.py`` run drops the first chunk that would take any seed past it (the
    run ends on the chunk before; only a first chunk is always kept); ``total_updates`` stays the
    cap on updates. ``seed_batching`` picks how one program
    runs the seeds (see ``purerec.run.experiment.seed_batcher``). Sweeps always run ``total_updates``, so
    that the runs sharing one program share one budget.
    """

    seeds: tuple[int, ...] = (11, 15, 19)
    """Training seeds, run in one program (the reporting seeds are 11 15 19)."""
    num_envs: int = 256
    """Parallel sessions per seed."""
    rollout_len: int = 32
    """Env steps per session per update."""
    total_updates: int = 80
    """Most updates of a run."""
    chunk_updates: int = 2
    """Updates per compiled chunk (checkpoints between chunks)."""
    target_episodes: int = 20000
    """Training-episode cap per seed (0 = off; the paper's budget: 20,000)."""
    seed_batching: str = "auto"
    """How one program runs the seeds: auto, vmap or map."""
    session_shards: int = 0
    """Shards the sessions are split into (0 = the default for the agent; part of the algorithm)."""
    stage1_sessions: int = 512
    """Parallel sessions of Stage I's behaviour data."""
    stage1_behaviour: str = "popularity"
    """Stage I's behaviour policy: popularity or uniform."""
    run_dir: str = "runs"
    """Parent directory of new run directories."""
    eval_every_chunks: int = 0
    """Also evaluate on the test world every that many chunks (0 = only at the end)."""

    def validate(self, p: str = "train") -> None:
        _check(len(self.seeds) >= 1, f"{p}.seeds", self.seeds, "at least one integer seed")
        _check(len(set(self.seeds)) == len(self.seeds), f"{p}.seeds", self.seeds, "distinct seeds")
        _check(all(0 <= s < 2**31 for s in self.seeds), f"{p}.seeds", self.seeds, "integers in [0, 2^31)")
        _check(1 <= self.num_envs <= MAX_SESSIONS, f"{p}.num_envs", self.num_envs, f"an integer in [1, {MAX_SESSIONS}]")
        _check(1 <= self.rollout_len <= 4096, f"{p}.rollout_len", self.rollout_len, "an integer in [1, 4096]")
        _check(self.num_envs * self.rollout_len <= MAX_BATCH, f"{p}.num_envs", self.num_envs,
               f"num_envs x rollout_len <= {MAX_BATCH} env steps per update (the rollout is held in memory): "
               f"lower num_envs or rollout_len")
        _check(1 <= self.total_updates <= 10**7, f"{p}.total_updates", self.total_updates, "an integer in [1, 1e7]")
        _check(1 <= self.chunk_updates, f"{p}.chunk_updates", self.chunk_updates, "an integer >= 1")
        _check(self.total_updates % self.chunk_updates == 0, f"{p}.total_updates", self.total_updates,
               f"a multiple of chunk_updates ({self.chunk_updates})")
        _check(self.seed_batching in SEED_BATCHING, f"{p}.seed_batching", self.seed_batching,
               f"one of {SEED_BATCHING} (auto: map on CPU, vmap on accelerators)")
        _check(self.session_shards >= 0, f"{p}.session_shards", self.session_shards,
               f"an integer >= 0 (0 = {DEFAULT_SESSION_SHARDS} shards where they split the batch evenly)")
        _check(self.target_episodes >= 0, f"{p}.target_episodes", self.target_episodes,
               "an integer >= 0 (0 = run all total_updates)")
        _check(self.stage1_behaviour in STAGE1_BEHAVIOURS, f"{p}.stage1_behaviour", self.stage1_behaviour,
               f"one of {STAGE1_BEHAVIOURS} (the exposure policy of Stage I's pre-training sessions)")
        _check(1 <= self.stage1_sessions <= MAX_SESSIONS, f"{p}.stage1_sessions", self.stage1_sessions,
               f"an integer in [1, {MAX_SESSIONS}]")
        _check(self.eval_every_chunks >= 0, f"{p}.eval_every_chunks", self.eval_every_chunks,
               "an integer >= 0 (0 = only at the end)")
