"""Get the (train, test) worlds for a config: synthetic or real files, cached on disk.

Sources: ``synthetic`` (``purerec.data.synthetic``), ``kuairec`` / ``kuairand`` (the public datasets,
``purerec.data.loaders``) and ``csv`` (the user's own logs, ``purerec.data.loaders.user_csv``).

Worlds are cached as .npz under ``world.cache_dir`` (default ``$PUREREC_CACHE`` or
``~/.cache/purerec``), keyed by a hash of every field that changes them and, for real data, the
sha256 of the content of each file the loader reads (other files in the data directory are not
looked at). A file's sha256 is kept in ``file-hashes.json`` in the cache, keyed by its path and
(size, st_mtime_ns, st_ctime_ns, inode, device), so an unchanged file is not read again; the
ctime catches a rewrite whose size and mtime were restored (``cp -p``, ``rsync -t``, ``tar x``,
``os.utime``). Writes are atomic, so a killed build never leaves a half-written cache entry, and
best-effort: a cache that cannot be written (read-only, full, a path through a file) gives a
one-line warning and the run carries on without it.

The calibration card (``purerec.data.calibration``: sizes, density, exposure Gini, popular share,
Observation 1 in both forms) of real-data worlds (kuairec, kuairand, csv) is stored next to the
cached pair as ``world-<key>-card.json``; a cache entry without one gets it computed from the
worlds. Synthetic worlds' cards are recomputed from the worlds (cheap) and not stored. With
``verbose`` the card (and its path) is printed when the worlds are built and the first time they
are loaded from the cache in a process, so every ``train.py`` run shows it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time

from purerec.core.fields import Sections
from purerec.sim.world import load_world, save_world, World

CACHE_VERSION = 1


def cache_dir(cfg: Sections) -> str:
    return cfg.world.cache_dir or os.environ.get("PUREREC_CACHE") or os.path.expanduser("~/.cache/purerec")


HASH_CACHE = "file-hashes.json"
HASH_CHUNK = 1 << 20
# A hash is stored only for a file last changed this long before it was hashed: a change within
# the same file-system timestamp tick as an earlier one (coarse, a few ms) leaves the stat as it
# was, so such a file is hashed again next time instead.
RACY_NS = 1_000_000_000


def input_files(cfg: Sections) -> list[str]:
    """The data files the configured loader reads, in its order (none for ``synthetic``);
    ``MissingFileError`` when a required one is missing."""
    src = cfg.world.source
    if src == "synthetic":
        return []
    if src == "kuairec":
        from purerec.data.loaders.kuairec import input_files as files
    elif src == "kuairand":
        from purerec.data.loaders.kuairand import input_files as files
    else:
        from purerec.data.loaders.user_csv import input_files as files
    return files(cfg.world.data_dir)


def file_sha256(path: str) -> str:
    """sha256 of a file's content, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def content_hashes(paths: list[str], cache_path: str) -> list[str]:
    """sha256 of each file's content. A file whose path and (size, mtime_ns, ctime_ns, inode,
    device) match an entry of the JSON side cache ``cache_path`` is not read; new hashes are added
    to it best-effort (an unreadable cache is ignored, an unwritable one warned about)."""
    try:
        with open(cache_path) as fh:
            cache = json.load(fh)
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    out, changed = [], False
    for p in paths:
        real = os.path.realpath(p)
        st = os.stat(real)
        entry = cache.get(real)
        if isinstance(entry, dict) and entry.get("stat") == _stamp(st) and isinstance(entry.get("sha256"), str):
            out.append(entry["sha256"])
            continue
        now = time.time_ns()
        digest = file_sha256(real)
        out.append(digest)
        if st.st_ctime_ns < now - RACY_NS:
            cache[real] = {"stat": _stamp(st), "sha256": digest}
            changed = True
    if changed:
        from purerec.core.atomic import atomic_write

        try:
            atomic_write(cache_path, lambda fh: json.dump(cache, fh, indent=1, sort_keys=True))
        except OSError as e:
            warn(f"could not store the file-hash cache {cache_path} ({e.strerror or e}); the data files are "
                 f"hashed again next run")
    return out


def _fingerprint(cfg: Sections) -> str:
    """The worlds' cache key: every world and feedback field and, for real data, the name and
    content hash of each file the loader reads. Synthetic keys have no file part."""
    w = dataclasses.asdict(cfg.world)
    w.pop("cache_dir")
    payload = {"v": CACHE_VERSION, "world": w, "feedback": dataclasses.asdict(cfg.feedback)}
    if cfg.world.source != "synthetic":
        files = input_files(cfg)
        hashes = content_hashes(files, os.path.join(cache_dir(cfg), HASH_CACHE))
        payload["files"] = [(os.path.basename(f), h) for f, h in zip(files, hashes)]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def _writable(d: str) -> bool:
    try:
        os.makedirs(d, exist_ok=True)
    except OSError:
        return False
    return os.access(d, os.W_OK | os.X_OK)


def build_worlds(cfg: Sections) -> tuple[World, World]:
    """Build without the cache (refused with ``MemoryLimitError`` before allocating when the
    estimate of ``purerec.core.memory`` exceeds the available memory)."""
    src = cfg.world.source
    if src == "synthetic":
        from purerec.core import memory
        from purerec.data.synthetic import generate

        memory.check(memory.synthetic_world(cfg.world))
        return generate(cfg.world, cfg.feedback)
    if src == "kuairec":
        from purerec.data.loaders.kuairec import load_kuairec

        return load_kuairec(cfg.world.data_dir, cfg.world)
    if src == "csv":
        from purerec.data.loaders.user_csv import load_user_csv

        return load_user_csv(cfg.world.data_dir, cfg.world)
    from purerec.data.loaders.kuairand import load_kuairand

    return load_kuairand(cfg.world.data_dir, cfg.world)


_cards_shown: set[str] = set()  # card paths already printed in this process


def _card(cfg: Sections, train: World, test: World, path: str, can_write: bool, verbose: bool, fresh: bool) -> None:
    """The worlds' calibration card at ``path``: computed (and, for real data, stored when
    ``can_write``) when ``fresh`` or missing, else read; printed with ``verbose``, once per process
    per cache entry."""
    from purerec.data.calibration import card_for_config, format_card, load_card, save_card

    if cfg.world.source == "synthetic":
        if verbose and path not in _cards_shown:
            print(format_card(card_for_config(cfg, train, test)))
            _cards_shown.add(path)
        return
    card = None
    if not fresh and os.path.exists(path):
        if not verbose:
            return
        try:
            card = load_card(path)
        except (OSError, ValueError, KeyError, TypeError):
            card = None
    stored = card is not None
    if card is None:
        card = card_for_config(cfg, train, test)
        if can_write:
            try:
                save_card(path, card)
                stored = True
            except OSError as e:
                warn(f"could not store the calibration card in {path} ({e.strerror or e})")
    if verbose and not (stored and path in _cards_shown):
        print(format_card(card))
        if stored:
            print(f"  calibration card: {path}")
            _cards_shown.add(path)


def get_worlds(cfg: Sections, use_cache: bool = True, verbose: bool = False) -> tuple[World, World]:
    """(train_world, test_world), from the cache when possible; with preference dynamics on,
    labelled with harm (``purerec.sim.dynamics.label_harm``; the cached worlds stay unlabelled)."""
    train, test = _get_worlds(cfg, use_cache, verbose)
    if cfg.env.dynamics == "attraction":
        from purerec.sim.dynamics import label_harm

        train, test = label_harm(train, test, cfg.attraction.harm_frac, cfg.attraction.harm_seed)
        if verbose:
            from purerec.sim.dynamics import card, format_card

            print(format_card(card(cfg, train, test)))
    return train, test


def _get_worlds(cfg: Sections, use_cache: bool, verbose: bool) -> tuple[World, World]:
    if not use_cache:
        return build_worlds(cfg)
    d = cache_dir(cfg)
    key = _fingerprint(cfg)
    paths = [os.path.join(d, f"world-{key}-{part}.npz") for part in ("train", "test")]
    card_path = os.path.join(d, f"world-{key}-card.json")
    if all(os.path.exists(p) for p in paths):
        try:
            train, test = load_world(paths[0]), load_world(paths[1])
        except Exception as e:  # a damaged cache entry: set it aside and rebuild
            try:
                for p in paths:
                    if os.path.exists(p):
                        os.replace(p, p + ".corrupt")
                aside = "set aside as *.corrupt"
            except OSError:
                aside = "could not set it aside"
            warn(f"cached world {paths[0]} could not be read ({type(e).__name__}); {aside}, rebuilding")
        else:
            _card(cfg, train, test, card_path, _writable(d), verbose, fresh=False)
            return train, test
    writable = _writable(d)
    if not writable:
        warn(f"world cache {d} is not writable: building the worlds without caching them "
             f"(set world.cache_dir or PUREREC_CACHE to a writable directory to cache them)")
    t0 = time.perf_counter()
    train, test = build_worlds(cfg)
    if writable:
        try:
            save_world(paths[0], train)
            save_world(paths[1], test)
        except OSError as e:
            writable = False
            warn(f"could not cache the worlds in {d} ({e.strerror or e}); carrying on without the cache")
    if verbose:
        where = f"cached in {d}" if writable else "not cached"
        print(f"built {cfg.world.source} worlds in {time.perf_counter() - t0:.1f}s "
              f"(train {train.n_users}x{train.n_items}, test {test.n_users}x{test.n_items}); {where}")
    _card(cfg, train, test, card_path, writable, verbose, fresh=True)
    return train, test
