"""Memory estimates before allocating: a world build or a run that cannot fit in the machine's
available memory is refused at once with ``MemoryLimitError`` (the estimate, its parts and the
config fields to lower), instead of climbing for minutes into an OOM kill.

The estimates are deliberately simple sums of the big arrays (bytes), not exact accounting:

* a synthetic world (``synthetic_world``): the logging simulation holds dense
  train-users x universe-items arrays (scores, exposure mask, observed and true feedback, the
  MF input): ``LOG_ENTRY_BYTES`` per entry, measured as the peak resident memory of
  ``purerec.data.synthetic.generate`` on CPU (61 B per entry from 2e7 to 4e7 entries); plus the NumPy
  factors and tags (float64) and the World arrays of the universe, train and test worlds;
* a real-data world (``logged_world``, checked by ``purerec.data.loaders.common.assemble_worlds`` once
  the logs are read): the dense train-users x items feedback and mask the item embeddings are
  factorised from (``DENSE_ENTRY_BYTES`` per entry) plus the World arrays;
* a run (``training``, on the loaded worlds, which are already in memory): per seed the rollout (num_envs x rollout_len steps,
  each two observation windows and three slates), the per-step item tables (num_envs x items
  scores, ``ITEM_TABLE_COPIES`` float32 copies: logits, masses, the Plackett-Luce blocks, top-k),
  the replay buffer of the agents that have one (replay.capacity transitions), and the test
  protocol's eval.n_sessions x test items tables and trajectories.

Available memory: the smaller of /proc/meminfo's MemAvailable and the cgroup's limit minus its
usage (containers, Slurm), else ``os.sysconf`` free pages; where none can be read (not Linux)
nothing is refused. ``FIXED_BYTES`` (the JAX runtime and compiler) is added to every estimate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from purerec.core.errors import PurerecError

GiB = 1 << 30
LOG_ENTRY_BYTES = 64  # synthetic logging simulation, per (train user, universe item)
DENSE_ENTRY_BYTES = 24  # real data: dense feedback f32 + mask bool, their device copies, the centred MF input
ITEM_TABLE_COPIES = 8  # float32 [sessions, items] arrays alive in one env step (scores, masses, top-k)
FIXED_BYTES = 512 << 20  # the JAX runtime, the compiler


class MemoryLimitError(PurerecError, ValueError):
    """A world or run would need more memory than the machine has available."""


@dataclass(frozen=True)
class Estimate:
    """An estimate in bytes: ``parts`` (description -> bytes), what it is for and the config
    fields (or the data) that set its size."""

    what: str
    parts: dict[str, int]
    fields: tuple[str, ...]

    @property
    def total(self) -> int:
        return FIXED_BYTES + sum(self.parts.values())

    def describe(self) -> str:
        big = sorted(self.parts.items(), key=lambda kv: -kv[1])
        return ", ".join(f"{k} {_gib(v)}" for k, v in big if v >= (1 << 20)) or "small arrays"


def _gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB"


def world_arrays(n_users: int, n_items: int, true_dim: int, emb_dim: int, n_tags: int) -> int:
    """Bytes of one ``World``: true_user f32[U, D+2] and user_ids i32[U]; per item true_item
    f32[D+2], item_emb f32[E], tags bool[T], item_pop / item_log_reward / item_log_true f32,
    popular bool, item_ids i32."""
    d = true_dim + 2
    return n_users * (4 * d + 4) + n_items * (4 * d + 4 * emb_dim + n_tags + 3 * 4 + 1 + 4)


def synthetic_world(w) -> Estimate:
    """The peak of building the synthetic (train, test) worlds of ``WorldConfig`` ``w``."""
    n_u, n_i = max(w.n_users, w.n_test_users), max(w.n_items, w.n_test_items)
    d = w.true_dim + 2
    return Estimate(
        what=f"building the synthetic worlds ({w.n_users:,} train users x {n_i:,} items logged)",
        parts={
            "logs (train users x items)": w.n_users * n_i * LOG_ENTRY_BYTES,
            "factors and tags (NumPy)": 3 * 8 * d * (n_u + n_i) + n_i * w.n_tags * (8 + 8 + 1),
            "worlds (universe, train, test)": (world_arrays(n_u, n_i, w.true_dim, w.emb_dim, w.n_tags)
                                               + world_arrays(w.n_users, w.n_items, w.true_dim, w.emb_dim, w.n_tags)
                                               + world_arrays(w.n_test_users, w.n_test_items, w.true_dim,
                                                              w.emb_dim, w.n_tags)),
        },
        fields=("world.n_users", "world.n_items" if w.n_items >= w.n_test_items else "world.n_test_items"))


def logged_world(n_train_users: int, n_items: int, n_test_users: int, n_test_items: int, w) -> Estimate:
    """Building real-data worlds from logs of these sizes (``assemble_worlds``)."""
    return Estimate(
        what=f"building the worlds from the logs ({n_train_users:,} train users x {n_items:,} items)",
        parts={
            "dense train logs (users x items)": n_train_users * n_items * DENSE_ENTRY_BYTES,
            "worlds (train, test)": (world_arrays(n_train_users, n_items, w.true_dim, w.emb_dim, 0)
                                     + world_arrays(n_test_users, n_test_items, w.true_dim, w.emb_dim, 0)),
        },
        fields=("the data: keep fewer users or items in the logs (world.data_dir)",))


def training(cfg, train_items: int, test_items: int, agent_sections: tuple[str, ...] = ()) -> Estimate:
    """A run of ``cfg`` on loaded worlds with these item counts (see the module docstring); the
    worlds themselves are already in memory when it is checked, so they are not counted.
    ``agent_sections``: the config sections the agent reads (``purerec.agents.spec_of(cfg).sections``;
    a replay buffer is counted when they include ``replay``)."""
    t, e, ev = cfg.train, cfg.env, cfg.eval
    seeds = len(t.seeds)
    step = 2 * e.obs_window * 8 + 3 * e.slate_size * 4 + 64  # obs and next obs (item, feedback), slates, scalars
    parts = {
        "rollouts (seeds x num_envs x rollout_len)": seeds * t.num_envs * t.rollout_len * step,
        "item tables (seeds x num_envs x items)": seeds * t.num_envs * train_items * 4 * ITEM_TABLE_COPIES,
        "evaluation (eval.n_sessions x test items)": (ev.n_sessions * test_items * 4 * ITEM_TABLE_COPIES
                                                     + ev.n_sessions * e.max_len * (e.slate_size * 4 + 32)),
    }
    fields = ["train.num_envs", "train.rollout_len", "train.seeds", "eval.n_sessions"]
    if "replay" in agent_sections:
        parts["replay buffers (seeds x replay.capacity)"] = seeds * cfg.replay.capacity * step
        fields.append("replay.capacity")
    if cfg.world.source == "synthetic":
        fields += ["world.n_items", "world.n_test_items"]
    return Estimate(what="the training run", parts=parts, fields=tuple(fields))


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_int(path: str) -> int | None:
    try:
        with open(path) as fh:
            text = fh.read().strip()
        return None if text == "max" else int(text)
    except (OSError, ValueError):
        return None


def _cgroup_available() -> int | None:
    """The cgroup's limit minus its usage (v2, else v1); None without a limit."""
    for limit_path, usage_path in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_path), _read_int(usage_path)
        if limit is not None and usage is not None and limit < (1 << 60):
            return max(limit - usage, 0)
    return None


def available_bytes() -> int | None:
    """Memory this process can still allocate: min(MemAvailable, cgroup limit - usage), else the
    free physical pages; None where nothing can be read."""
    found = [v for v in (_meminfo_available(), _cgroup_available()) if v is not None]
    if found:
        return min(found)
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check(est: Estimate) -> None:
    """``MemoryLimitError`` when ``est`` exceeds the available memory (nothing is refused where
    the available memory cannot be read)."""
    avail = available_bytes()
    if avail is None or est.total <= avail:
        return
    raise MemoryLimitError(f"{est.what} would need about {_gib(est.total)} of memory ({est.describe()}), but "
                           f"{_gib(avail)} is available: lower {', '.join(est.fields)}")


def check_run(cfg, train_w, test_w, agent_sections: tuple[str, ...] = ()) -> None:
    """A run's estimate on its loaded worlds, before anything is compiled."""
    check(training(cfg, train_w.n_items, test_w.n_items, agent_sections))
