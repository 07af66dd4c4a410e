"""TensorBoard event files for a run directory (``--log tensorboard``; optional extra ``tensorboard``).

``metrics.jsonl``, ``evals.jsonl`` and ``results.json`` stay the source of truth: the event files
only mirror them, so that ``tensorboard --logdir RUN_DIR/tensorboard`` shows a run (live or
finished) with each training seed as one TensorBoard run. The writer is tensorboardX (its event
file writer and protos only: neither TensorFlow nor PyTorch is needed, nor the ``tensorboard``
package, which only the viewer needs). Layout::

    RUN_DIR/tensorboard/seed_<s>/   per seed: train/<metric> (every metrics.jsonl field) at
                                    step = update, and the evaluation's per-seed values
    RUN_DIR/tensorboard/mean/       the evaluation's mean over seeds (same tags as the seeds, so
                                    TensorBoard draws it beside them), its std (<section>_std/..)
                                    and the figures (figures/<name>, e.g. figures/curves)

Evaluation tags: ``eval/<metric>`` is the evaluation the config names (the dict's top-level
``per_seed`` / ``mean`` / ``std``), ``eval_test_greedy/``, ``eval_test_sample/`` and
``eval_train_report/`` the full breakdown (``test[rule]`` and ``train_report``); the step is the
number of updates done when it ran.

Writes are synchronous: ``flush()`` puts everything written so far on disk (fsync), ``close()``
also closes the files. Each writer opens a new event file; a run directory that is written again
(a resume) therefore gets new files beside the old ones, and the old ones may hold steps that
``metrics.jsonl`` no longer has (``experiment.run`` drops the lines of a chunk whose checkpoint
never landed). ``TensorBoardLog.from_run_dir`` avoids both: it rebuilds every event from the
run's files into a fresh hidden directory and swaps it in for ``tensorboard/``, then returns a log
that continues after them, so the events never hold a step that ``metrics.jsonl`` does not.
Rebuilt events carry the rebuild's wall time (the JSON files keep no times).
"""

from __future__ import annotations

import glob
import io
import json
import numbers
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping

from purerec.core.errors import PurerecError

SUBDIR = "tensorboard"
MEAN_RUN = "mean"
INSTALL_HINT = "pip install -e '.[tensorboard]'"
_TMP_PREFIX = ".tensorboard-"  # rebuilds in progress and replaced directories, beside SUBDIR
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # PNG colour type -> channels


class TensorBoardMissing(PurerecError, ImportError):
    """``--log tensorboard`` without tensorboardX installed."""


def require():
    """tensorboardX's ``(EventsWriter, event_pb2, summary_pb2)``; raises ``TensorBoardMissing``
    naming the extra to install when tensorboardX is not there. Cheap: call it before training
    starts so that a missing package fails the run at once."""
    try:
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto import event_pb2, summary_pb2
    except ImportError as e:
        raise TensorBoardMissing(
            f"--log tensorboard needs the optional package tensorboardX ({e}); install the extra: "
            f"{INSTALL_HINT}  (or: pip install 'tensorboardX>=2.6')") from e
    return EventsWriter, event_pb2, summary_pb2


def seed_run(seed) -> str:
    """The TensorBoard run (subdirectory of ``RUN_DIR/tensorboard``) of one training seed."""
    return f"seed_{int(seed)}"


def _number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _eval_sections(ev: Mapping) -> list[tuple[str, Mapping, bool]]:
    """(tag prefix, {"per_seed", "mean", "std"}, write std) of an evaluation dict
    (``experiment.evaluate_run``'s, an ``evals.jsonl`` line or ``results.json``)."""
    out = []
    if isinstance(ev.get("per_seed"), Mapping):
        out.append(("eval", ev, True))
    for rule, summary in sorted((ev.get("test") or {}).items()):
        if isinstance(summary, Mapping) and isinstance(summary.get("per_seed"), Mapping):
            out.append((f"eval_test_{rule}", summary, False))
    report = ev.get("train_report")
    if isinstance(report, Mapping) and isinstance(report.get("per_seed"), Mapping):
        out.append(("eval_train_report", report, False))
    return out


def _png_size(data: bytes) -> tuple[int, int, int]:
    """(height, width, channels) from a PNG's IHDR chunk."""
    if data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return height, width, _PNG_CHANNELS.get(data[25], 3)


def _png_bytes(figure) -> bytes:
    """A matplotlib figure rendered to PNG, PNG bytes as they are, or a PNG file's bytes."""
    if isinstance(figure, (bytes, bytearray)):
        return bytes(figure)
    if isinstance(figure, (str, os.PathLike)):
        with open(figure, "rb") as fh:
            return fh.read()
    if hasattr(figure, "savefig"):
        buf = io.BytesIO()
        figure.savefig(buf, format="png")
        return buf.getvalue()
    raise TypeError(f"an image is a matplotlib figure, PNG bytes or a PNG file path, not {type(figure).__name__}")


class TensorBoardLog:
    """TensorBoard event files under ``run_dir/tensorboard`` mirroring a run's JSON logs.

    ``TensorBoardLog(run_dir, seeds)`` starts ``run_dir/tensorboard`` afresh (any earlier events
    there are removed); ``TensorBoardLog.from_run_dir(run_dir)`` rebuilds them from the run's
    files first (for a resume, or to view a run trained without ``--log tensorboard``). Writers
    (one event file per TensorBoard run) open on first use. ``seeds``: the run's training seeds;
    a row or evaluation of another seed is an error (None: any seed).
    """

    def __init__(self, run_dir: str, seeds: Iterable[int] | None = None, *, fresh: bool = True):
        """``fresh=False`` keeps earlier events in ``run_dir/tensorboard`` (new files beside them)."""
        self._init(run_dir, os.path.join(run_dir, SUBDIR), seeds)
        if fresh:
            _remove_tree(self.logdir, run_dir)
        os.makedirs(self.logdir, exist_ok=True)

    def _init(self, run_dir: str, logdir: str, seeds) -> None:
        self._EventsWriter, self._event_pb2, self._summary_pb2 = require()
        self.run_dir = run_dir
        self.logdir = logdir
        self.seeds = None if seeds is None else [int(s) for s in seeds]
        self._writers: dict = {}
        self._last_update: dict[int, int] = {}  # per seed, the last metrics row written
        self._eval_steps: set[int] = set()
        self._image_steps: set[tuple[str, int]] = set()
        self._closed = False

    # -- writing -------------------------------------------------------------------------------

    def _writer(self, run: str):
        if self._closed:
            raise RuntimeError(f"{self.logdir}: this TensorBoardLog is closed")
        w = self._writers.get(run)
        if w is None:
            d = os.path.join(self.logdir, run)
            os.makedirs(d, exist_ok=True)
            # A unique, creation-ordered suffix: two writers opened in the same second (a rebuild,
            # then the log continuing after it) must not share a file name.
            w = self._EventsWriter(os.path.join(d, "events"), filename_suffix=f".{time.time_ns()}.purerec")
            self._writers[run] = w
        return w

    def _check_seed(self, seed: int) -> int:
        seed = int(seed)
        if self.seeds is not None and seed not in self.seeds:
            raise ValueError(f"seed {seed} is not one of this run's seeds {self.seeds}")
        return seed

    def _event(self, run: str, step: int, values: list) -> None:
        """One event in ``run`` at ``step`` holding the summary values (none: nothing written)."""
        if values:
            summary = self._summary_pb2.Summary(value=values)
            self._writer(run).write_event(self._event_pb2.Event(summary=summary, step=int(step), wall_time=time.time()))

    def _write(self, run: str, step: int, values: Iterable[tuple[str, float]]) -> None:
        V = self._summary_pb2.Summary.Value
        self._event(run, step, [V(tag=tag, simple_value=float(v)) for tag, v in values])

    def scalars(self, rows: Iterable[Mapping]) -> int:
        """``metrics.jsonl`` rows (``{"seed", "update", <metric>: number, ...}``): every numeric
        field as ``train/<metric>`` in the seed's run at step ``update``, one event per row.
        Per seed, updates must increase across calls (a step written twice is a ValueError:
        rebuild with ``from_run_dir`` instead). Returns the number of rows written."""
        n = 0
        for row in rows:
            seed, update = self._check_seed(row["seed"]), int(row["update"])
            last = self._last_update.get(seed)
            if last is not None and update <= last:
                raise ValueError(f"metrics row seed {seed} update {update}: update {last} is already written "
                                 f"(rows must come in update order, each once; rebuild with "
                                 f"TensorBoardLog.from_run_dir after truncating metrics.jsonl)")
            self._write(seed_run(seed), update,
                        [(f"train/{k}", v) for k, v in row.items() if k not in ("seed", "update") and _number(v)])
            self._last_update[seed] = update
            n += 1
        return n

    def evaluation(self, update: int, ev: Mapping | None, figures: Mapping | None = None) -> None:
        """An evaluation at step ``update`` (updates done): ``experiment.evaluate_run``'s dict, an
        ``evals.jsonl`` line or ``results.json`` (see the module doc for the tags). ``figures``:
        ``{name: matplotlib figure | PNG path | PNG bytes}``, each an image ``figures/<name>`` in
        the ``mean`` run. An evaluation (or a figure) already written at this step is skipped, so
        the final evaluation may be passed even when it is the last periodic one. A dict without
        per-seed results (``results.json`` of a run not evaluated at the end) or None adds no
        scalars (and does not mark the step as evaluated)."""
        update = int(update)
        sections = _eval_sections(ev) if ev else []
        if sections and update not in self._eval_steps:
            per_run: dict[str, list[tuple[str, float]]] = {}
            for prefix, summary, with_std in sections:
                for seed, row in summary["per_seed"].items():
                    per_run.setdefault(seed_run(self._check_seed(seed)), []).extend(
                        (f"{prefix}/{k}", v) for k, v in row.items() if _number(v))
                mean = per_run.setdefault(MEAN_RUN, [])
                mean.extend((f"{prefix}/{k}", v) for k, v in (summary.get("mean") or {}).items() if _number(v))
                if with_std:
                    mean.extend((f"{prefix}_std/{k}", v) for k, v in (summary.get("std") or {}).items() if _number(v))
            for run, values in per_run.items():
                self._write(run, update, values)
            self._eval_steps.add(update)
        for name, figure in (figures or {}).items():
            self.image(name, figure, update)

    def image(self, name: str, figure, update: int) -> None:
        """``figures/<name>`` in the ``mean`` run at step ``update``: a matplotlib figure (rendered
        to PNG; the caller closes it), a PNG file path or PNG bytes. None is ignored (e.g.
        ``plot_run_curves`` without matplotlib); a (name, step) already written is skipped."""
        if figure is None or (f"figures/{name}", int(update)) in self._image_steps:
            return
        data = _png_bytes(figure)
        height, width, channels = _png_size(data)
        S = self._summary_pb2.Summary
        image = S.Image(height=height, width=width, colorspace=channels, encoded_image_string=data)
        self._event(MEAN_RUN, update, [S.Value(tag=f"figures/{name}", image=image)])
        self._image_steps.add((f"figures/{name}", int(update)))

    def flush(self) -> None:
        """Everything written so far on disk (each event file flushed and fsynced)."""
        for w in self._writers.values():
            w.flush()

    def close(self) -> None:
        """Flush and close the event files (idempotent); the log takes no more writes."""
        if not self._closed:
            for w in self._writers.values():
                w.close()
            self._writers.clear()
            self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- rebuilding ----------------------------------------------------------------------------

    @classmethod
    def from_run_dir(cls, run_dir: str, seeds: Iterable[int] | None = None, *,
                     results: bool = True) -> "TensorBoardLog":
        """Rebuild ``run_dir/tensorboard`` from ``metrics.jsonl`` (unreadable lines, as a kill
        leaves, are skipped), ``evals.jsonl`` and, with ``results``, ``results.json`` (its final
        evaluation at step ``updates`` and ``curves.png``), into a fresh directory that then
        replaces ``tensorboard/``; returns a log (open) that continues after those events.
        ``seeds`` defaults to config.json's ``train.seeds``, else the seeds in metrics.jsonl.
        A resumed training run passes ``results=False`` (its results.json is rewritten at the
        end) after truncating metrics.jsonl / evals.jsonl to its checkpoint."""
        require()
        metrics = _read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
        evals = _read_jsonl(os.path.join(run_dir, "evals.jsonl"))
        final = _read_json(os.path.join(run_dir, "results.json")) if results else None
        if seeds is None:
            cfg = _read_json(os.path.join(run_dir, "config.json")) or {}
            seeds = (cfg.get("train") or {}).get("seeds") or sorted({int(r["seed"]) for r in metrics if "seed" in r})
        logdir = os.path.join(run_dir, SUBDIR)
        for stale in glob.glob(os.path.join(run_dir, _TMP_PREFIX + "*")):  # a rebuild cut short
            shutil.rmtree(stale, ignore_errors=True)
        tmp = tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=run_dir)
        try:
            builder = cls.__new__(cls)
            builder._init(run_dir, tmp, seeds)
            by_seed: dict[int, list[dict]] = {}
            for r in metrics:
                if "seed" not in r or "update" not in r:
                    continue
                by_seed.setdefault(int(r["seed"]), []).append(r)
            for rows in by_seed.values():  # per seed in update order (each kept once)
                seen: dict[int, dict] = {}
                for r in rows:
                    seen[int(r["update"])] = r
                builder.scalars(seen[u] for u in sorted(seen))
            for ev in sorted(evals, key=lambda e: e.get("update", 0)):
                if "update" in ev:
                    builder.evaluation(ev["update"], ev)
            if final and "updates" in final:
                curves = os.path.join(run_dir, "curves.png")
                builder.evaluation(final["updates"], final,
                                   figures={"curves": curves} if os.path.exists(curves) else None)
            builder.close()
            _remove_tree(logdir, run_dir)
            os.replace(tmp, logdir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log = cls(run_dir, seeds, fresh=False)
        log._last_update = dict(builder._last_update)
        log._eval_steps = set(builder._eval_steps)
        log._image_steps = set(builder._image_steps)
        return log


def _remove_tree(path: str, run_dir: str) -> None:
    """Remove ``path`` by first renaming it to a hidden sibling (so a half-deleted tree is never
    seen under its name), then deleting that."""
    if os.path.lexists(path):
        gone = tempfile.mkdtemp(prefix=_TMP_PREFIX + "old-", dir=run_dir)
        os.replace(path, os.path.join(gone, "x"))
        shutil.rmtree(gone, ignore_errors=True)


def _read_jsonl(path: str) -> list[dict]:
    out = []
    if os.path.exists(path):
        with open(path) as fh:
            for ln in fh:
                try:
                    row = json.loads(ln)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    out.append(row)
    return out


def _read_json(path: str):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None
