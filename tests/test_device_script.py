"""benchmarks/device.sh: the GPU-day script runs on CPU with --quick and prints every figure, positive."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join("benchmarks", "device.sh")


def _env(tmp_path) -> dict:
    src = os.path.join(ROOT, "src")
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": path, "PUREREC_CACHE": str(tmp_path / "cache")}


@pytest.mark.parametrize("args, rc, text", [
    (["--help"], 0, "--quick"),
    (["--seeds", "1"], 2, "--seeds must be >= 2"),
    (["--seeds", "x"], 2, "--seeds must be an integer"),
    (["--frobnicate"], 2, "unknown option --frobnicate"),
])
def test_device_script_arguments(tmp_path, args, rc, text):
    proc = subprocess.run(["bash", SCRIPT, *args], cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == rc
    assert text in proc.stdout + proc.stderr
    assert "== devices" not in proc.stdout  # nothing was run


@pytest.mark.slow
def test_device_script_quick(tmp_path):
    """The whole script at tiny sizes (a few minutes on 2 busy cores): env-steps/s without and
    with learning, 1 vs 2 seeds' wall time and Table 4 (a2c), each printed and positive, and
    equal to the JSON the benchmarks wrote."""
    out = tmp_path / "out"
    proc = subprocess.run(["bash", SCRIPT, "--quick", "--out", str(out)], cwd=ROOT, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    text = proc.stdout
    assert "installing the CUDA extra" not in text  # --quick installs nothing
    assert "| world | items | case |" in text  # env_throughput's table
    assert "| seeds | wall s (run total) |" in text and "info  2 seeds wall" in text  # 1 vs 2 seeds
    assert "| method | wall s here (1 seed, incl. compile) |" in text and "| A2C |" in text  # Table 4
    summary = dict(re.findall(r"^summary: (\w+) = (\S+)", text, re.M))
    assert summary.pop("backend") == "cpu"
    want = {"env_steps_per_s_no_learning_env", "env_steps_per_s_no_learning_score",
            "env_steps_per_s_learning_1_seed", "env_steps_per_s_learning_2_seeds", "wall_s_1_seed",
            "wall_s_2_seeds", "table4_wall_s_a2c"}
    assert set(summary) == want
    for name, value in summary.items():
        assert float(value) > 0, name
    # The printed figures are the benchmarks' own measurements.
    env = json.load(open(out / "env_throughput.json"))
    env_rows = [r for r in env["rows"] if r["case"] == "env"]
    assert len(env_rows) == 1 and env_rows[0]["batch"] == 256
    r = env_rows[0]
    assert float(summary["env_steps_per_s_no_learning_env"]) == pytest.approx(
        r["batch"] * r["steps"] / r["run_s"], abs=0.5)
    seeds = json.load(open(out / "seeds.json"))
    assert seeds["1 seed"]["seeds"] == [11] and seeds["2 seeds"]["seeds"] == [11, 15]
    assert float(summary["wall_s_1_seed"]) == pytest.approx(seeds["1 seed"]["total_s"], abs=0.005)
    assert float(summary["wall_s_2_seeds"]) == pytest.approx(seeds["2 seeds"]["total_s"], abs=0.005)
    one = seeds["1 seed"]
    assert float(summary["env_steps_per_s_learning_1_seed"]) == pytest.approx(
        one["env_steps_per_seed"] / one["run_s"], abs=0.5)
    table4 = json.load(open(out / "table4.json"))
    assert [t["agent"] for t in table4.values()] == ["a2c"]
    assert float(summary["table4_wall_s_a2c"]) == pytest.approx(table4["a2c"]["total_s"], abs=0.005)
