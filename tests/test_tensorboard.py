"""TensorBoard logging (``purerec.report.tensorboard``, ``--log tensorboard``): the event files, read back
here without TensorFlow (TFRecord framing and CRCs parsed by hand, events decoded with
tensorboardX's protos), hold exactly the run's ``metrics.jsonl`` scalars of every seed (same step,
same float32 value, each once), its evaluations and figures; a resume rebuilds them so that no
stale step survives; a missing package names the extra to install."""

from __future__ import annotations

import glob
import io
import json
import os
import struct
import sys

import numpy as np
import pytest

from purerec.core.errors import PurerecError
from purerec.report.tensorboard import TensorBoardLog, TensorBoardMissing
from purerec.run.evaluation import seed_summary
from purerec.run.experiment import _append_metrics, _truncate_metrics

SEEDS = [0, 7, 11]
CHUNK = 4
METRICS = ("Len", "AD", "R_cum", "episodes", "actor_loss")
EXTRA = "pip install -e '.[tensorboard]'"


# -- a reader that needs neither TensorFlow nor tensorboard ------------------------------------

def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def _crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _masked(data: bytes) -> int:
    c = _crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_run(run_logdir: str):
    """Every event file of one TensorBoard run: ({tag: [(step, value)]}, {tag: [(step, Image)]}).
    Checks each record's framing (uint64 length, masked CRC-32C of it, payload, masked CRC-32C)."""
    from tensorboardX.proto import event_pb2

    scalars, images = {}, {}
    files = sorted(glob.glob(os.path.join(run_logdir, "events.out.tfevents.*")))
    assert files, f"no event file in {run_logdir}"
    for path in files:
        with open(path, "rb") as fh:
            data = fh.read()
        pos, first = 0, True
        while pos < len(data):
            header = data[pos:pos + 8]
            (n,) = struct.unpack("<Q", header)
            assert struct.unpack("<I", data[pos + 8:pos + 12])[0] == _masked(header), path
            payload = data[pos + 12:pos + 12 + n]
            assert len(payload) == n, f"{path}: record cut short"
            assert struct.unpack("<I", data[pos + 12 + n:pos + 16 + n])[0] == _masked(payload), path
            pos += 16 + n
            ev = event_pb2.Event.FromString(payload)
            if first:
                assert ev.file_version.startswith("brain.Event:"), path
                first = False
            for v in ev.summary.value:
                if v.HasField("image"):
                    images.setdefault(v.tag, []).append((ev.step, v.image))
                else:
                    assert v.HasField("simple_value"), v
                    scalars.setdefault(v.tag, []).append((ev.step, v.simple_value))
    return scalars, images


def read_all(run_dir: str):
    logdir = os.path.join(run_dir, "tensorboard")
    return {run: read_run(os.path.join(logdir, run)) for run in sorted(os.listdir(logdir))}


# -- what the JSON files say the events must be -----------------------------------------------

def _rows(path):
    with open(path) as fh:
        return [json.loads(ln) for ln in fh]


def _eval_tags(ev):
    """{run: {tag: value}} of one evaluation dict, as the module's doc specifies its tags."""
    out = {}
    sections = [("eval", ev, True)] + [(f"eval_test_{r}", s, False) for r, s in ev["test"].items()] + \
               [("eval_train_report", ev["train_report"], False)]
    for prefix, summary, std in sections:
        for seed, row in summary["per_seed"].items():
            out.setdefault(f"seed_{seed}", {}).update({f"{prefix}/{k}": v for k, v in row.items()})
        out.setdefault("mean", {}).update({f"{prefix}/{k}": v for k, v in summary["mean"].items()})
        if std:
            out["mean"].update({f"{prefix}_std/{k}": v for k, v in summary["std"].items()})
    return out


def expected_scalars(run_dir, evals):
    """{run: {tag: sorted [(step, float32 value)]}} from metrics.jsonl and the given
    (update, evaluation) pairs."""
    exp: dict = {}
    for row in _rows(os.path.join(run_dir, "metrics.jsonl")):
        for k, v in row.items():
            if k not in ("seed", "update"):
                exp.setdefault(f"seed_{row['seed']}", {}).setdefault(f"train/{k}", []).append(
                    (row["update"], float(np.float32(v))))
    for update, ev in evals:
        for run, tags in _eval_tags(ev).items():
            for tag, v in tags.items():
                exp.setdefault(run, {}).setdefault(tag, []).append((update, float(np.float32(v))))
    return {run: {tag: sorted(pts) for tag, pts in tags.items()} for run, tags in exp.items()}


def assert_mirrors(run_dir, evals, figures):
    """The event files hold exactly the expected scalars (no tag, step or value more or less) and
    the figures {tag: [step, ...]} as PNGs whose stated size is the image's."""
    import matplotlib.image

    got = read_all(run_dir)
    exp = expected_scalars(run_dir, evals)
    assert set(got) == set(exp) == {f"seed_{s}" for s in SEEDS} | {"mean"}
    for run in exp:
        scalars, _ = got[run]
        assert set(scalars) == set(exp[run]), run
        for tag in exp[run]:
            assert sorted(scalars[tag]) == exp[run][tag], (run, tag)
    for run in got:
        if run != "mean":
            assert not got[run][1], f"{run}: images belong to the mean run"
    images = got["mean"][1]
    assert {tag: [s for s, _ in v] for tag, v in images.items()} == figures
    for tag, v in images.items():
        for _, img in v:
            assert img.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"
            pixels = matplotlib.image.imread(io.BytesIO(img.encoded_image_string), format="png")
            assert pixels.shape[:2] == (img.height, img.width) and img.colorspace == pixels.shape[2]


# -- a fake run ----------------------------------------------------------------------------------

def fake_logs(rng):
    """A chunk's logs as the compiled chunk returns them: {name: [seeds, updates]}."""
    logs = {k: rng.normal(size=(len(SEEDS), CHUNK)) * 10.0 ** rng.integers(-3, 4) for k in METRICS}
    logs["episodes"] = rng.integers(0, 50, size=(len(SEEDS), CHUNK)).astype(np.float32)
    return logs


def fake_eval(rng):
    """An evaluation dict shaped as ``experiment.evaluate_run``'s (after a JSON round trip)."""
    row = lambda: {"Len": float(rng.uniform(1, 20)), "AD": float(rng.uniform()), "R_cum": float(rng.normal()),
                   "Len_repeat_std": float(rng.uniform())}
    test = {rule: seed_summary({str(s): row() for s in SEEDS}) for rule in ("greedy", "sample")}
    report = seed_summary({str(s): {"Len": float(rng.uniform(1, 20)), "AD": float(rng.uniform())} for s in SEEDS})
    ev = {"protocol": "test", "action": "greedy", "n_sessions": 64, "repeats": 2, "ad_form": "gini",
          "test": test, "train_report": report, "eval_compiles_per_seed": [1] * len(SEEDS), **test["greedy"]}
    return json.loads(json.dumps(ev))


def new_rows(metrics_path, seen):
    rows = _rows(metrics_path)
    return rows[seen:], len(rows)


@pytest.fixture(scope="module")
def tbx():
    return pytest.importorskip("tensorboardX")


def _figure():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2.0, 1.5), dpi=50)
    fig.add_subplot().plot([0, 1, 2], [1, 0, 2])
    return fig


def train(run_dir, tb, rng, chunks, first_chunk=0, eval_at=(), seen=0):
    """The training loop's side of it: metrics.jsonl rows after each chunk, then the same rows
    to TensorBoard; an evaluation (evals.jsonl) after the chunks in ``eval_at``."""
    metrics, evals_path = os.path.join(run_dir, "metrics.jsonl"), os.path.join(run_dir, "evals.jsonl")
    evals = []
    for c in range(first_chunk, first_chunk + chunks):
        _append_metrics(metrics, fake_logs(rng), c * CHUNK, SEEDS)
        rows, seen = new_rows(metrics, seen)
        assert tb.scalars(rows) == len(SEEDS) * CHUNK
        done = (c + 1) * CHUNK
        if c in eval_at:
            ev = fake_eval(rng)
            with open(evals_path, "a") as fh:
                fh.write(json.dumps({"update": done, **ev}, sort_keys=True) + "\n")
            tb.evaluation(done, ev, figures={"eval_fig": _figure()})
            evals.append((done, ev))
        tb.flush()
    return evals, seen


def new_run(tmp_path):
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "config.json"), "w") as fh:
        json.dump({"train": {"seeds": SEEDS}}, fh)
    return run_dir


# -- tests ---------------------------------------------------------------------------------------

def test_reader_crc_is_crc32c():
    assert _crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value


def test_events_mirror_metrics_evaluations_and_figures(tbx, tmp_path):
    from purerec.report.tables import plot_run_curves

    rng = np.random.default_rng(0)
    run_dir = new_run(tmp_path)
    tb = TensorBoardLog(run_dir, SEEDS)
    evals, _ = train(run_dir, tb, rng, chunks=3, eval_at=(1,))
    # flush() is a barrier: everything so far is readable before close.
    assert_mirrors(run_dir, evals, {"figures/eval_fig": [2 * CHUNK]})
    # The end of a run: the final evaluation and the curves figure; passing the same evaluation
    # again (the last periodic one reused as the final) writes nothing twice.
    final = fake_eval(rng)
    curves = plot_run_curves(run_dir)
    assert curves and os.path.exists(curves)
    tb.evaluation(3 * CHUNK, {"updates": 3 * CHUNK, "episodes": {"0": 5.0}})  # not an evaluation: no scalars
    tb.evaluation(3 * CHUNK, final, figures={"curves": curves})
    tb.evaluation(3 * CHUNK, final, figures={"curves": curves})
    tb.close()
    tb.close()  # idempotent
    figures = {"figures/eval_fig": [2 * CHUNK], "figures/curves": [3 * CHUNK]}
    assert_mirrors(run_dir, evals + [(3 * CHUNK, final)], figures)
    with open(curves, "rb") as fh:
        png = fh.read()
    assert read_all(run_dir)["mean"][1]["figures/curves"][0][1].encoded_image_string == png
    n_rows = len(_rows(os.path.join(run_dir, "metrics.jsonl")))
    assert n_rows == 3 * CHUNK * len(SEEDS)
    # every row of every seed: all its metrics at its step, counted once
    got = read_all(run_dir)
    assert sum(len(got[f"seed_{s}"][0][f"train/{k}"]) for s in SEEDS for k in METRICS) == n_rows * len(METRICS)
    with pytest.raises(RuntimeError, match="closed"):
        tb.scalars([{"seed": 0, "update": 99, "Len": 1.0}])


def test_resume_rebuild_drops_stale_steps(tbx, tmp_path):
    """A kill after chunk 3's rows (events included) but before its checkpoint: the resume
    truncates metrics.jsonl to update 8 and trains chunk 3 again with other values; the rebuilt
    events hold the new values only, once each."""
    rng = np.random.default_rng(1)
    run_dir = new_run(tmp_path)
    tb = TensorBoardLog(run_dir, SEEDS)
    evals, _ = train(run_dir, tb, rng, chunks=3, eval_at=(1, 2))
    tb.flush()  # the killed process never closes
    stale = {s: v for s, v in read_all(run_dir)["seed_7"][0]["train/AD"] if s > 2 * CHUNK}
    with open(os.path.join(run_dir, "metrics.jsonl"), "a") as fh:
        fh.write('{"seed": 0, "upda')  # a line cut short by the kill
    metrics, evals_path = os.path.join(run_dir, "metrics.jsonl"), os.path.join(run_dir, "evals.jsonl")
    _truncate_metrics(metrics, 2 * CHUNK)
    _truncate_metrics(evals_path, 2 * CHUNK)
    tb2 = TensorBoardLog.from_run_dir(run_dir, SEEDS, results=False)
    # straight after the rebuild: exactly the truncated files (figures are not in them)
    assert_mirrors(run_dir, evals[:1], {})
    seen = len(_rows(metrics))
    evals2, _ = train(run_dir, tb2, rng, chunks=1, first_chunk=2, eval_at=(2,), seen=seen)
    tb2.close()
    assert_mirrors(run_dir, evals[:1] + evals2, {"figures/eval_fig": [3 * CHUNK]})
    fresh = dict(read_all(run_dir)["seed_7"][0]["train/AD"])
    assert len(stale) == CHUNK and all(fresh[s] != v for s, v in stale.items())
    assert not glob.glob(os.path.join(run_dir, ".tensorboard-*")), "a rebuild left its temporary directory"


def test_from_run_dir_exports_a_finished_run(tbx, tmp_path):
    """A run trained without --log tensorboard: its files alone rebuild the events (seeds from
    config.json, the final evaluation from results.json at its step, curves.png as a figure)."""
    from purerec.report.tables import plot_run_curves

    rng = np.random.default_rng(2)
    run_dir = new_run(tmp_path)
    metrics, evals_path = os.path.join(run_dir, "metrics.jsonl"), os.path.join(run_dir, "evals.jsonl")
    evals = []
    for c in range(3):
        _append_metrics(metrics, fake_logs(rng), c * CHUNK, SEEDS)
    ev = fake_eval(rng)
    with open(evals_path, "w") as fh:
        fh.write(json.dumps({"update": 3 * CHUNK, **ev}) + "\n")
    evals.append((3 * CHUNK, ev))
    curves = plot_run_curves(run_dir)
    with open(os.path.join(run_dir, "results.json"), "w") as fh:  # the final evaluation = the last periodic one
        json.dump({"run_dir": run_dir, "seeds": SEEDS, "updates": 3 * CHUNK, "curves_png": curves, **ev}, fh)
    os.makedirs(os.path.join(run_dir, "tensorboard", "seed_99"))  # stale events of something else
    with open(os.path.join(run_dir, "tensorboard", "seed_99", "events.out.tfevents.0.x"), "wb"):
        pass
    os.makedirs(os.path.join(run_dir, ".tensorboard-leftover"))  # a rebuild cut short
    with TensorBoardLog.from_run_dir(run_dir) as tb:
        assert tb.seeds == SEEDS
    assert_mirrors(run_dir, evals, {"figures/curves": [3 * CHUNK]})
    assert not glob.glob(os.path.join(run_dir, ".tensorboard-*"))


def test_rows_twice_or_of_another_seed_are_refused(tbx, tmp_path):
    run_dir = new_run(tmp_path)
    with TensorBoardLog(run_dir, SEEDS) as tb:
        tb.scalars([{"seed": 0, "update": 1, "Len": 1.0}, {"seed": 7, "update": 1, "Len": 2.0}])
        with pytest.raises(ValueError, match="already written"):
            tb.scalars([{"seed": 0, "update": 1, "Len": 1.0}])
        with pytest.raises(ValueError, match="not one of this run's seeds"):
            tb.scalars([{"seed": 3, "update": 1, "Len": 1.0}])
        with pytest.raises(ValueError, match="not a PNG"):
            tb.image("bad", b"GIF89a" + bytes(40), 1)
    scalars, _ = read_run(os.path.join(run_dir, "tensorboard", "seed_0"))
    assert scalars == {"train/Len": [(1, 1.0)]}


def test_missing_package_names_the_extra(tmp_path, monkeypatch):
    for mod in ("tensorboardX", "tensorboardX.event_file_writer", "tensorboardX.proto"):
        monkeypatch.setitem(sys.modules, mod, None)  # import of it fails
    run_dir = new_run(tmp_path)
    with pytest.raises(TensorBoardMissing) as err:
        TensorBoardLog(run_dir, SEEDS)
    assert EXTRA in str(err.value) and "tensorboardX" in str(err.value)
    assert isinstance(err.value, PurerecError) and isinstance(err.value, ImportError)
    with pytest.raises(TensorBoardMissing, match=r"\.\[tensorboard\]"):
        TensorBoardLog.from_run_dir(run_dir)
    assert not os.path.exists(os.path.join(run_dir, "tensorboard")), "nothing is written before the check"
