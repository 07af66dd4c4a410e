"""Every sub-command answers ``--help`` (and ``-h``) with its own usage, exit 0, and runs nothing."""

from __future__ import annotations

import pytest

from purerec.cli import main

# (argv, the usage line's start, options the usage must name)
CASES = [
    (["--help"], "Command line: ``python train.py", ["--env FILE", "--resume DIR", "--reference", "--help-config"]),
    (["-h"], "Command line: ``python train.py", ["--env FILE", "--resume DIR"]),
    (["sweep", "--help"], "usage: train.py sweep FILE",
     ["--dry-run", "--budget X", "--out DIR", "--reuse DIR[,DIR]", "--coordinator", "--distributed"]),
    (["sweep", "sweeps/x.toml", "--budget", "0.1", "-h"], "usage: train.py sweep FILE", ["--dry-run"]),
    (["report", "--help"], "usage: train.py report DIR", ["DIR", "runs/"]),
    (["logs", "--help"], "usage: train.py logs --out DIR", ["--out DIR", "--env FILE", "--seed N", "logs.npz"]),
    (["logs", "--out", "d", "--help"], "usage: train.py logs --out DIR", ["--seed N"]),
]


@pytest.mark.parametrize("argv,head,names", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_help_prints_usage(argv, head, names, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written: the directory stays empty
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.lstrip().startswith(head), out[:200]
    for name in names:
        assert name in out, f"{name!r} missing from the usage of {argv}"
    assert "error" not in err and "invalid" not in out
    assert list(tmp_path.iterdir()) == []


def test_sub_command_usages_differ(capsys):
    """Each sub-command prints its own usage, not the training one."""
    outs = {}
    for cmd in ("sweep", "report", "logs"):
        assert main([cmd, "--help"]) == 0
        outs[cmd] = capsys.readouterr().out
    assert len(set(outs.values())) == 3
    for cmd, out in outs.items():
        assert f"usage: train.py {cmd}" in out
        assert "--resume DIR" not in out  # the training options are not theirs


def test_usage_errors_still_exit_2(capsys):
    """Without --help the old usage errors stand (exit 2, one line)."""
    assert main(["report"]) == 2
    assert "usage: train.py report DIR" in capsys.readouterr().err
    assert main(["logs"]) == 2
    assert "usage: train.py logs --out DIR" in capsys.readouterr().err


def test_a_closed_pipe_ends_quietly():
    """``train.py --help-config | head``: when the reader goes away the command stops without the
    misleading file-system error line, with the shell's SIGPIPE status (128 + 13)."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first write
    try:
        p = subprocess.run([sys.executable, os.path.join(root, "train.py"), "--help-config"], stdout=w,
                           stderr=subprocess.PIPE, text=True, timeout=120, cwd=root)
    finally:
        os.close(w)
    assert p.returncode == 141, p.stderr
    assert "error" not in p.stderr and "Broken pipe" not in p.stderr
