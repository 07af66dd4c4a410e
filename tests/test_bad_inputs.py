"""Bad inputs, table-driven: each gets its error class and a message that names the offending
field or file, and leaves everything that existed on disk before the call unchanged.

Cases cover config values and types, environment TOML files, the command line, sweep specs and
the CSV loaders; run directories, checkpoints and caches are in ``test_reliability.py``.
"""

from __future__ import annotations

import gzip
import os

import pytest

from purerec.cli import main
from purerec.config import ConfigError, load_config
from purerec.core.errors import PurerecError, SweepSpecError
from purerec.data.loaders.csvio import DataFormatError, read_columns
from purerec.run.sweep import load_sweep


def snapshot(root) -> dict:
    """Every file under ``root``: (size, mtime_ns, first bytes)."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            st = os.stat(p)
            with open(p, "rb") as fh:
                out[p] = (st.st_size, st.st_mtime_ns, fh.read(256))
    return out


# ------------------------------------------------------------------------------------------
# config values: (override field, value, what the message must say)
CONFIG_CASES = [
    ("world.score_offset", "nan", "finite"),
    ("feedback.noise_std", "inf", "finite"),
    ("agent.init_logit_scale", "inf", "finite"),
    ("agent.lambda_fair", "1e38", "[0, 1000]"),
    ("train.num_envs", "100000000", "[1, 65536]"),
    ("world.n_users", "0", "[2,"),
    ("world.n_items", "1e9", "[2,"),
    ("world.data_dir", "/tmp", "world.source"),
    ("env.max_len", "0", "[1,"),
    ("env.slate_size", "0", "[1,"),
    ("ppo.actor_lr", "2", "[0, 1)"),
    ("agent.kind", "nope", "one of"),
    ("state.purifier", "nope", "one of"),
    ("train.seeds", ["3", "3"], "distinct"),
    ("dsrm.steps", "0", "[1, 1000]"),
    ("train.seed_batching", "x", "one of"),
    ("a2c.minibatches", "3", "divisor"),
    ("eval.n_sessions", "0", ">= 1"),
    ("fcpo.cost_limit", "2", "[0, 1]"),
    ("bcq.threshold", "-1", "[0, 1]"),
    ("dorl.models", "0", "[1, 64]"),
    ("mofir.eval_weight", "nan", "finite"),
    ("denoise.rce_beta", "inf", "finite"),
    ("offline.sessions", "0", "[1, 65536]"),
    ("agent.context", "maybe", "true or false"),
    ("replay.batch_size", "200000", "capacity"),
    ("feedback.conformity", "-1", "[0, 1]"),
    ("dsrm.beta_end", "2", "beta_start"),
    ("world.popular_frac", "1.5", "(0, 1)"),
    ("env.exit_rule", "x", "one of"),
    ("ppo.clip_eps", "nan", "finite"),
    ("train.num_envs", "abc", "a number"),
    ("td3.policy_delay", "0", "[1, 100]"),
]


@pytest.mark.parametrize("field,value,says", CONFIG_CASES, ids=[f"{c[0]}={c[1]}" for c in CONFIG_CASES])
def test_config_value(field, value, says):
    with pytest.raises(ConfigError) as ei:
        load_config(None, {field: value})
    assert ei.value.field == field and field in str(ei.value) and says in str(ei.value), str(ei.value)


def test_unknown_and_ambiguous_field_names():
    with pytest.raises(ConfigError, match="max_lenn.*no such config field"):
        load_config(None, {"max_lenn": "3"})
    with pytest.raises(ConfigError, match="ambiguous"):
        load_config(None, {"gamma": "0.5"})


def test_chunk_not_dividing_the_budget_names_both_fields():
    with pytest.raises(ConfigError, match=r"train.total_updates.*multiple of chunk_updates \(7\)"):
        load_config(None, {"train.chunk_updates": "7", "train.total_updates": "80"})


# ------------------------------------------------------------------------------------------
# environment TOML files: (file bytes or None for "missing" / "dir", field named, what it says)
TOML_CASES = [
    ("missing", "--env", "existing TOML"),
    ("dir", "--env", "not a directory"),
    (b"[env\nmax_len = 3\n", "--env", "valid TOML"),
    (b"", "--env", "empty"),
    (b"# only a comment\n", "--env", "empty"),
    (b"[gird]\nx = 1\n", "gird", "unknown field"),
    (b"env = 5\n", "env", "TOML table"),
    (b"\x00\x01\x02\xff\xfe", "--env", "UTF-8"),
    (b"[env]\nmax_lenn = 3\n", "env.max_lenn", "unknown field"),
    (b"[env]\nmax_len = \"x\"\n", "env.max_len", "a number"),
    (b"[world]\nscore_offset = nan\n", "world.score_offset", "finite"),
]


@pytest.mark.parametrize("content,field,says", TOML_CASES, ids=[f"toml{i}" for i in range(len(TOML_CASES))])
def test_env_file(tmp_path, content, field, says):
    path = tmp_path / "env.toml"
    if content == "dir":
        path.mkdir()
    elif content != "missing":
        path.write_bytes(content)
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError) as ei:
        load_config(str(path))
    assert field in str(ei.value) and says in str(ei.value), str(ei.value)
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------------------
# the command line: (argv, text the one-line error must hold); exit code 2, no traceback
def _cli_cases(tmp):
    run = tmp / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "metrics.jsonl").write_text('{"seed": 1, "update": 1}\n')
    broken = tmp / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    empty = tmp / "empty"
    empty.mkdir()
    afile = tmp / "afile"
    afile.write_text("x")
    gz = tmp / "gzdata"
    gz.mkdir()
    for name in ("big_matrix.csv", "small_matrix.csv", "item_categories.csv"):
        (gz / name).write_bytes(gzip.compress(b"user_id,video_id,watch_ratio\n1,2,0.5\n"))
    data = ["--world.source", "kuairec", "--world.data-dir", str(gz), "--world.cache-dir", str(tmp / "cache")]
    return [
        ([*data, "--out", str(tmp / "z")], "gzip-compressed"),
        ([*data, "--reference"], "gzip-compressed"),
        (["envs/kuairand.toml"], "--env envs/kuairand.toml"),
        (["trian"], "subcommands"),
        (["--resume", str(run), "--env", "envs/kuairec.toml"], "--resume"),
        (["--resume", str(run), "--out", str(tmp / "x")], "--resume"),
        (["--resume", str(tmp / "nope")], "no such run directory"),
        (["--resume", str(empty)], "no config.json"),
        (["--resume", str(broken)], "config.json is damaged"),
        (["--out", str(afile)], "is a file"),
        (["--out", str(run)], "already holds a run"),
        (["--env"], "Missing value for argument '--env'"),
        (["--reference", "--out", str(tmp / "y")], "--reference"),
        (["--max-lenn", "3"], "max-lenn"),
        (["--lambda", "1e38"], "agent.lambda_fair"),
        (["--world.data-dir", str(empty)], "world.source"),
        (["logs", "--env", "envs/kuairec.toml"], "Missing from train.py logs: --out DIR"),
        (["logs", "--out", str(tmp / "l"), "--seed", "abc"], "--seed"),
        (["sweep", "sweeps/table2.toml", "--budget", "abc"], "--budget"),
        (["sweep", "sweeps/table2.toml", "--budget", "0"], "--budget"),
        (["sweep", "sweeps/table2.toml", "--reuse", str(empty)], "--reuse"),
        (["sweep", str(tmp / "nope.toml")], "sweep spec"),
        (["report", str(empty)], "a sweep directory"),
        (["--log", "wandb"], "--log"),
        (["--resume", str(run), "--log", "tensorboard"], "--log"),
        (["--coordinator", "h0:1234", "--out", str(tmp / "d")], "--num-processes"),
        (["--coordinator", "h0", "--num-processes", "2", "--process-id", "0"], "HOST:PORT"),
        (["--coordinator", "h0:1234", "--num-processes", "2", "--process-id", "5"], "--process-id"),
        (["sweep", "sweeps/table2.toml", "--process-id", "1"], "--coordinator"),
        # ---- run / sweep / logs directories kept apart (issue 29, item 8; helper h3) ----
        (["sweep", "sweeps/table2.toml", "--out", str(run)], "is a run directory"),
        (["sweep", "sweeps/table2.toml", "--out", str(gz)], "not a sweep's"),
        (["--out", _sweep_dir(tmp)], "is a sweep directory"),
        (["logs", "--out", str(run)], "is a run directory"),
        (["logs", "--out", _sweep_dir(tmp)], "is a sweep directory"),
        (["logs", "--out", _old_logs(tmp)], "already holds logs.npz"),
        # ---- end of h3's block ----
    ]


def _sweep_dir(tmp):
    """A sweep directory (h3's cases)."""
    d = tmp / "sweep_dir"
    (d / "runs").mkdir(parents=True, exist_ok=True)
    (d / "sweep.json").write_text("{}")
    return str(d)


def _old_logs(tmp):
    """A directory holding earlier logs (h3's cases)."""
    d = tmp / "old_logs"
    d.mkdir(exist_ok=True)
    (d / "logs.npz").write_bytes(b"PK")
    (d / "logs.json").write_text("{}")
    return str(d)


def test_command_line_errors_are_one_line(tmp_path, capsys):
    cases = _cli_cases(tmp_path)
    assert len(cases) >= 22
    before = snapshot(tmp_path)
    for argv, says in cases:
        code = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, (argv, err)
        assert len(err) == 1 and err[0].startswith("error: ") and says in err[0], (argv, err)
        assert snapshot(tmp_path) == before, argv


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ConfigError):
        main(["--debug", "--lambda", "1e38"])


def test_disk_full_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    from purerec import cli

    def full(*a, **k):
        raise OSError(28, "No space left on device", str(tmp_path / "out" / "logs.npz"))

    monkeypatch.setattr(cli, "logs_main", full)
    assert main(["logs", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "logs.npz" in err[0] and "No space left" in err[0]


# ------------------------------------------------------------------------------------------
# sweep specs: (spec text with {env} for a valid env file, key named, what it says)
SPEC_CASES = [
    ('[sweep]\nenvs = ["{env}"]\nseeds = "abc"\n', "sweep.seeds", "list of integers"),
    ('[sweep]\nenvs = ["{env}"]\nseeds = 5\n', "sweep.seeds", "list of integers"),
    ('[sweep]\nenvs = ["{env}"]\nseeds = [1.5]\n', "sweep.seeds", "list of integers"),
    ('[sweep]\nenvs = "{env}"\nseeds = [1]\n', "sweep.envs", "list of env files"),
    ('[sweep]\nenvs = ["{env}"]\nseeds = [1]\n[gird]\n"env.max_len" = [30]\n', "gird", "unknown section"),
    ('[sweep]\nenvs = ["{env}"]\n', "sweep.seeds", "required"),
    ('[sweep]\nseeds = [1]\n', "sweep.envs", "required"),
    ('[sweep]\nenvs = ["{env}"]\nseeds = [1, 1]\n', "sweep.seeds", "distinct"),
    ('[sweep]\nenvs = ["{env}"]\nseeds = [1]\nbudgett = "x"\n', "sweep.budgett", "unknown key"),
    ('[sweep]\nenvs = ["{env}"]\nseeds = [1]\n[grid]\n"env.max_len" = 30\n', "grid.env.max_len", "non-empty list"),
    ('[sweep]\nenvs = ["{env}"]\nseeds = [1]\n[grid]\n"env.max_lenn" = [30]\n', "grid.env.max_lenn", "no such"),
    ('[sweep]\nenvs = ["{env}", "missing.toml"]\nseeds = [1]\n', "sweep.envs", "existing"),
    ('[sweep]\nenvs = ["{env}"]\nseeds = [1]\n[base]\n"train.nope" = 1\n', "base.train.nope", "no such"),
    ('[sweep]\nenvs = ["{env}"]\nseeds = [1]\ngrid = 5\n', "sweep.grid", "unknown key"),
    ('[sweep]\nenvs = ["{env}"]\nseeds = [1]\n[grid]\n"env.max_len" = [30, 30]\n', "grid.env.max_len", "distinct"),
    ('[sweep]\nenvs = ["{env}", "{env}"]\nseeds = [1]\n', "sweep.envs", "distinct"),
    ('[sweep\nenvs = ["{env}"]\n', "sweep spec", "valid TOML"),
]


@pytest.mark.parametrize("text,key,says", SPEC_CASES, ids=[f"spec{i}" for i in range(len(SPEC_CASES))])
def test_sweep_spec(tmp_path, text, key, says):
    env = tmp_path / "e.toml"
    env.write_text("[env]\nmax_len = 30\n")
    spec = tmp_path / "s.toml"
    spec.write_text(text.replace("{env}", str(env)))
    before = snapshot(tmp_path)
    with pytest.raises(PurerecError) as ei:
        load_sweep(str(spec))
    msg = str(ei.value)
    assert key in msg and says in msg, msg
    assert isinstance(ei.value, (SweepSpecError, ConfigError))
    if not isinstance(ei.value, ConfigError):
        assert str(spec) in msg  # names the spec file
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------------------
# CSV files: (bytes, columns, text the message must hold besides the file name)
COLS = {"user_id": "int", "video_id": "int", "watch_ratio": "float"}
CSV_CASES = [
    (gzip.compress(b"user_id,video_id,watch_ratio\n1,2,0.5\n"), "gzip"),
    (b"PK\x03\x04rest-of-a-zip", "zip"),
    (b"user_id,video_id,watch_ratio\n1,2,\x000.5\n", "binary"),
    ("user_id,video_id,watch_ratio\n1,2,0.5\n3,4,caf\u00e9\n".encode("latin-1"), "UTF-8"),
    (b"user_id,video_id\n1,2\n", "missing required column"),
    (b"user_id,video_id,watch_ratio\n1,2,0.5\n1,x,0.5\n", "line 3, column 'video_id'"),
    (b"user_id,video_id,watch_ratio\n1,2,0.5\n1,2\n", "line 3: expected 3 fields"),
    (b"", "empty"),
    (b"user_id,video_id,watch_ratio\n1.5,2,0.5\n", "line 2, column 'user_id'"),
]


@pytest.mark.parametrize("data,says", CSV_CASES, ids=[f"csv{i}" for i in range(len(CSV_CASES))])
def test_csv_file(tmp_path, data, says):
    path = tmp_path / "big_matrix.csv"
    path.write_bytes(data)
    before = snapshot(tmp_path)
    with pytest.raises(DataFormatError) as ei:
        read_columns(str(path), COLS)
    assert str(path) in str(ei.value) and says in str(ei.value), str(ei.value)
    assert snapshot(tmp_path) == before


def test_no_valid_rows_names_the_file(tmp_path):
    from purerec.config import WorldConfig
    from purerec.data.loaders.kuairec import BIG, CATEGORIES, SMALL, load_kuairec

    (tmp_path / BIG).write_text("user_id,video_id,watch_ratio\n1,2,\n3,4,\n")
    (tmp_path / SMALL).write_text("user_id,video_id,watch_ratio\n1,2,0.5\n")
    (tmp_path / CATEGORIES).write_text('video_id,feat\n2,"[1]"\n4,"[0]"\n')
    with pytest.raises(DataFormatError, match=rf"train logs \({str(tmp_path / BIG)}\) have no valid rows"):
        load_kuairec(str(tmp_path), WorldConfig(source="kuairec", data_dir=str(tmp_path)))


def test_missing_data_file_names_the_directory(tmp_path):
    from purerec.data.datasets import build_worlds

    cfg = load_config(None, {"world.source": "kuairec", "world.data_dir": str(tmp_path)})
    with pytest.raises(PurerecError, match=r"big_matrix.csv' was not found in directory"):
        build_worlds(cfg)


def test_plots_need_no_extra_install():
    """matplotlib is a regular dependency: a sweep's report never ends in an ImportError."""
    import tomllib

    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyproject.toml"), "rb") as fh:
        deps = tomllib.load(fh)["project"]["dependencies"]
    assert any(d.replace(" ", "").startswith("matplotlib") for d in deps)


# ==========================================================================================
# Issue 29 (cache, memory, small inputs): each bad input with its case; keep this block last.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# PUREREC_HOST_DEVICES is read before the CLI (and JAX) start: one line, exit code 2.
HOST_DEVICES_CASES = ["abc", "0", "-3", "2.5"]


@pytest.mark.parametrize("value", HOST_DEVICES_CASES)
def test_host_devices_variable_is_one_line(value):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PUREREC_HOST_DEVICES"] = value
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--reference"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert err[0].startswith(f"error: PUREREC_HOST_DEVICES = '{value}' is invalid") and ">= 1" in err[0]


# Worlds too big for the available memory (16 GiB here): refused at once, naming the fields.
MEMORY_CASES = [
    (["--world.n-users", "2000000", "--world.n-items", "100"], "world.n_test_items"),  # 2M x 3,327 logged
    (["--world.n-users", "5000000", "--world.n-items", "5000000"], "world.n_items"),
]


@pytest.mark.parametrize("argv,says", MEMORY_CASES, ids=["2Mx100", "5Mx5M"])
def test_world_beyond_the_memory(tmp_path, capsys, monkeypatch, argv, says):
    from purerec.core import memory

    monkeypatch.setattr(memory, "available_bytes", lambda: 16 << 30)
    before = snapshot(tmp_path)
    assert main(["--reference", *argv, "--world.cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "would need about" in err[0] and "world.n_users" in err[0] and says in err[0], err
    assert snapshot(tmp_path) == before


# csv-world timestamps: ISO 8601 with a UTC offset is converted to UTC without any NumPy warning;
# a malformed offset names the file, line and column. (second row's value, UTC seconds or message)
TIMESTAMP_CASES = [
    ("2024-01-01T10:00:00+02:00", 1704096000.0),
    ("2024-01-01 09:00:00Z", 1704099600.0),
    ("2024-01-01T10:00:00-0530", 1704123000.0),
    ("2024-01-01T10:00:00.250+01:00", 1704099600.25),
    ("2024-01-01T10:00:00+2", "line 3, column 'timestamp'"),
    ("2024-01-01T10:00:00+02:00junk", "line 3, column 'timestamp'"),
]


@pytest.mark.parametrize("value,want", TIMESTAMP_CASES, ids=[f"ts{i}" for i in range(len(TIMESTAMP_CASES))])
def test_timestamp_with_an_offset(tmp_path, value, want):
    import warnings

    from purerec.data.loaders.user_csv import read_logs

    path = tmp_path / "interactions.csv"
    path.write_text(f"user_id,item_id,feedback,timestamp\nu1,i1,0.5,2024-01-01T00:00:00+00:00\nu2,i2,0.5,{value}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if isinstance(want, str):
            with pytest.raises(DataFormatError) as ei:
                read_logs(str(path))
            assert str(path) in str(ei.value) and want in str(ei.value), str(ei.value)
        else:
            logs = read_logs(str(path))
            assert logs.time.tolist() == [1704067200.0, want]


# ------------------------------------------------------------------------------------------
# what to do after a file-system error, per command (issue 29, item 8; helper h3)
@pytest.mark.parametrize("argv,then", [(["--reference"], "run the command again"),
                                       (["--out", "RUN"], "--resume the run")])
def test_a_write_error_says_what_to_do_for_its_command(tmp_path, capsys, monkeypatch, argv, then):
    """``--reference`` writes no run: its error never says '--resume the run'."""
    def full(*a, **k):
        raise OSError(28, "No space left on device", str(tmp_path / "cache" / "rows.json"))

    monkeypatch.setattr("purerec.data.datasets.get_worlds", full)
    monkeypatch.setattr("purerec.run.experiment.get_worlds", full)
    argv = [str(tmp_path / "r") if a == "RUN" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rows.json: No space left on device" in err[0] and err[0].endswith(f"then {then})"), err
    assert ("--resume" in err[0]) == (then == "--resume the run")
