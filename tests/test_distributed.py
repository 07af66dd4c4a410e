"""Several processes: the launch (flags, variables, errors) and two processes on localhost.

The two-process test runs the README's commands (``--coordinator localhost:PORT --num-processes 2
--process-id I``: a single run, its resume, a sweep), one CPU device per process, and checks that
every record equals the one of a single process with two local devices: the sharded program is
the same, only where the devices live differs. Another starts ``train.py sweep FILE
--distributed`` under SLURM's variables (JAX's cluster detection).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from purerec.run.distributed import Launch, launch_from, LaunchError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "train.py")

TINY_ENV = """
[world]
n_users = 200
n_items = 150
n_test_users = 64
n_test_items = 100
n_tags = 8
true_dim = 4
emb_dim = 4
log_density = 0.2
cache_dir = ""
[env]
max_len = 10
slate_size = 4
[train]
num_envs = 16
rollout_len = 8
total_updates = 4
chunk_updates = 2
seeds = [1, 2]
stage1_sessions = 32
[encoder]
train_steps = 5
[dsrm]
steps = 2
train_steps = 5
hidden = 16
[eval]
n_sessions = 16
repeats = 1
"""


# --- the launch --------------------------------------------------------------------------------

def test_no_launch_without_flags_or_variables():
    assert launch_from({}, {}) is None


def test_flags_variables_and_jax_names():
    want = Launch(coordinator="h0:1234", num_processes=3, process_id=2)
    assert launch_from({"coordinator": "h0:1234", "num-processes": "3", "process-id": "2"}, {}) == want
    env = {"PUREREC_COORDINATOR": "h0:1234", "PUREREC_NUM_PROCESSES": "3", "PUREREC_PROCESS_ID": "2"}
    assert launch_from({}, env) == want
    # JAX's own names (the installed JAX reads only the first itself) are read as the same three.
    jax_env = {"JAX_COORDINATOR_ADDRESS": "h0:1234", "JAX_NUM_PROCESSES": "3", "JAX_PROCESS_ID": "2"}
    assert launch_from({}, jax_env) == want
    # A flag wins over a variable.
    assert launch_from({"process-id": "0"}, env).process_id == 0
    # --distributed alone: JAX detects the cluster.
    assert launch_from({"distributed": True}, {}) == Launch()
    assert launch_from({"distributed": True, "init-timeout": "7"}, {}).timeout_s == 7.0


@pytest.mark.parametrize("opts, match", [
    ({"coordinator": "h0:1234"}, r"without --num-processes \(or PUREREC_NUM_PROCESSES\) and --process-id"),
    ({"coordinator": "h0", "num-processes": "2", "process-id": "0"}, "must be HOST:PORT"),
    ({"coordinator": "h0:99999", "num-processes": "2", "process-id": "0"}, r"a port in \[1, 65535\]"),
    ({"coordinator": "h0:1234", "num-processes": "0", "process-id": "0"}, "an integer >= 1"),
    ({"coordinator": "h0:1234", "num-processes": "2", "process-id": "2"}, r"an integer in \[0, 2\)"),
    ({"coordinator": "h0:1234", "num-processes": "2", "process-id": "x"}, r"--process-id 'x'"),
    ({"distributed": True, "init-timeout": "0"}, r"--init-timeout '0': must be a number of seconds"),
])
def test_bad_launches_are_named(opts, match):
    with pytest.raises(LaunchError, match=match):
        launch_from(opts, {})


def _free_port(lo: int | None = None) -> int:
    """A port nobody listens on: any (the OS picks) or one in [lo, 65535]."""
    for port in ([0] if lo is None else range(lo + os.getpid() % 1000, 65536)):
        with socket.socket() as s:
            try:
                s.bind(("localhost", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


def _env(devices: int, cache: str | None = None, **extra) -> dict:
    """A clean environment with ``devices`` CPU devices; with ``cache``, a persistent compilation
    cache there (a resumed run does not compile its programs again), and XLA's cheaper
    CPU optimisation: the test's speed, the same flags on both sides of every comparison."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JAX_", "PUREREC_COORD",
                                                                     "PUREREC_NUM", "PUREREC_PROCESS"))}
    env.pop("XLA_FLAGS", None)
    env.update(JAX_PLATFORMS="cpu", PUREREC_HOST_DEVICES=str(devices), **extra)
    if cache:
        env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
                   XLA_FLAGS="--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
    return env


def test_unreachable_coordinator_is_one_line_within_the_timeout(tmp_path):
    port = _free_port()  # nobody serves it: process 1 waits for a process 0 that never starts
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, TRAIN, "--coordinator", f"localhost:{port}", "--num-processes", "2",
                           "--process-id", "1", "--init-timeout", "3", "--out", str(tmp_path / "r")],
                          cwd=ROOT, env=_env(1), capture_output=True, text=True, timeout=120)
    took = time.perf_counter() - t0
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and f"localhost:{port}" in errors[0] and "--init-timeout 3s" in errors[0], proc.stderr
    assert "Check failure" not in proc.stderr  # stopped before JAX's own abort
    assert took < 60
    assert not (tmp_path / "r").exists()
    bad = subprocess.run([sys.executable, TRAIN, "--coordinator", "no-such-host.invalid:1234", "--num-processes",
                          "2", "--process-id", "1"], cwd=ROOT, env=_env(1), capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "does not resolve" in bad.stderr, bad.stderr


# --- two processes on localhost ----------------------------------------------------------------

def _both(cmds: list[list[str]], envs: list[dict], tmp_path, tag: str) -> list[str]:
    """Start the processes together, wait for all; their output (failing with it)."""
    t0 = time.perf_counter()
    logs = [open(tmp_path / f"{tag}-{i}.log", "w+") for i in range(len(cmds))]
    procs = [subprocess.Popen(c, cwd=ROOT, env=e, stdout=fh, stderr=subprocess.STDOUT, text=True)
             for c, e, fh in zip(cmds, envs, logs)]
    try:
        codes = [p.wait(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    outs = []
    for fh in logs:
        fh.seek(0)
        outs.append(fh.read())
        fh.close()
    assert codes == [0] * len(cmds), "\n".join(o[-3000:] for o in outs)
    print(f"{tag}: {time.perf_counter() - t0:.1f}s")
    return outs


def _metrics(path) -> list[dict]:
    path = str(path)
    with open(path if path.endswith(".jsonl") else os.path.join(path, "metrics.jsonl")) as fh:
        return [json.loads(ln) for ln in fh]


def _results(run_dir) -> dict:
    with open(os.path.join(run_dir, "results.json")) as fh:
        return json.load(fh)


def _records(sweep_dir) -> dict:
    out = {}
    for name in os.listdir(os.path.join(sweep_dir, "runs")):
        with open(os.path.join(sweep_dir, "runs", name)) as fh:
            rec = json.load(fh)
        out[rec["run_id"]] = {k: rec[k] for k in ("status", "metrics", "curves", "stage1", "point", "seed")}
    return out


REFERENCE = """
import sys
from purerec.core.hostdevices import expose_host_cores
expose_host_cores()
import jax
from purerec.config import load_config
from purerec.run.evaluation import reference_rows
from purerec.run.experiment import run
from purerec.run.sweep import load_sweep, run_sweep
env_file, spec, d = sys.argv[1:]
assert jax.process_count() == 1 and jax.local_device_count() == 2
cfg = load_config(env_file, {})
reference_rows(cfg)  # first: the reference policies' rows are cached on disk for every process
run(cfg, run_dir=d + "/one", progress=False)
run_sweep(load_sweep(spec), d + "/one_sweep")
"""

# One Python session per process running the README's commands one after another (``cli.main``
# with the same arguments as ``train.py``): a single run, its resume after losing the last
# checkpoint, and a sweep. One session saves starting JAX and building the worlds three times.
BY_HAND = """
import os, shutil, sys
from purerec.core.hostdevices import expose_host_cores
expose_host_cores()
from purerec.cli import main
from purerec.run import distributed
port, pid, env_file, spec, d = sys.argv[1:]
hand = ["--coordinator", "localhost:" + port, "--num-processes", "2", "--process-id", pid]
assert main([*hand, "--env", env_file, "--no-progress", "--out", d + "/two"]) == 0
if pid == "0":
    shutil.copy(d + "/two/metrics.jsonl", d + "/first_metrics.jsonl")
    shutil.rmtree(d + "/two/checkpoints/4")
    os.remove(d + "/two/results.json")
distributed.barrier("test")
assert main([*hand, "--resume", d + "/two", "--no-progress"]) == 0
assert main(["sweep", spec, *hand, "--out", d + "/two_sweep"]) == 0
"""


@pytest.mark.slow
def test_two_processes_on_localhost_match_one_process_with_two_devices(tmp_path):
    env_file = tmp_path / "tiny.toml"
    env_file.write_text(TINY_ENV)
    spec = tmp_path / "sweep.toml"
    spec.write_text(f'[sweep]\nname = "dist"\nenvs = ["{env_file}"]\nseeds = [1, 2]\n'
                    '[grid]\n"agent.lambda_fair" = [0.0, 0.5]\n')
    py, cache, d = sys.executable, str(tmp_path / "xla_cache"), str(tmp_path)
    port = str(_free_port())
    # All three at once: one process with two local devices (the reference), and two processes
    # with one device each, launched by hand.
    outs = _both([[py, "-c", REFERENCE, str(env_file), str(spec), d]]
                 + [[py, "-c", BY_HAND, port, str(i), str(env_file), str(spec), d] for i in (0, 1)],
                 [_env(2, cache), _env(1, cache), _env(1, cache)], tmp_path, "all")
    assert "distributed: 2 processes, 2 devices (1 here)" in outs[1]
    assert "process 1: done; process 0 wrote" in outs[2]
    one, two = tmp_path / "one", tmp_path / "two"
    assert json.load(open(two / "config.json"))["train"]["session_shards"] == 2
    assert json.load(open(one / "config.json"))["train"]["session_shards"] == 2
    # The single run: every logged number and the evaluation equal the one-process run's.
    ref = _metrics(one)
    assert len(ref) == 8 and _metrics(tmp_path / "first_metrics.jsonl") == ref
    res_one, res_two = _results(one), _results(two)
    assert res_two["processes"] == 2 and "processes" not in res_one
    assert res_two["per_seed"] == res_one["per_seed"] and res_two["test"] == res_one["test"]
    # Its resume over two processes, after losing the last checkpoint and the results.
    assert f"resumed {two} after update 2" in outs[1]
    assert _metrics(two) == ref
    # The sweep: 4 runs in one program over the two processes' devices, records equal.
    assert "4 runs in 1 groups" in outs[1] and "2 device(s)" in outs[1]
    one_rec, two_rec = _records(tmp_path / "one_sweep"), _records(tmp_path / "two_sweep")
    assert len(one_rec) == 4 and all(r["status"] == "ok" for r in one_rec.values())
    assert two_rec == one_rec


def test_slurm_variables_are_detected_with_distributed_alone(tmp_path):
    """``train.py sweep FILE --distributed`` under SLURM's variables (``srun`` sets them): JAX's
    cluster detection joins the two processes (the plan counts both devices); a dry run."""
    env_file = tmp_path / "tiny.toml"
    env_file.write_text(TINY_ENV)
    spec = tmp_path / "sweep.toml"
    spec.write_text(f'[sweep]\nname = "dist"\nenvs = ["{env_file}"]\nseeds = [1]\n'
                    '[grid]\n"agent.lambda_fair" = [0.0, 0.5]\n')
    port = _free_port(61440)  # JAX's SLURM detection serves port 61440 + job id % 4096
    slurm = lambda i: _env(1, SLURM_JOB_ID=str(port - 61440), SLURM_STEP_NODELIST="localhost", SLURM_NTASKS="2",
                           SLURM_PROCID=str(i), SLURM_LOCALID=str(i))
    cmd = [sys.executable, TRAIN, "sweep", str(spec), "--distributed", "--dry-run", "--out", str(tmp_path / "s")]
    outs = _both([cmd, cmd], [slurm(0), slurm(1)], tmp_path, "slurm")
    assert "distributed: 2 processes, 2 devices (1 here)" in outs[0]
    assert "2 runs in 1 groups" in outs[0] and "2 device(s)" in outs[0]
    assert "sweep dist" not in outs[1]  # process 0 speaks for both
