"""The persistent compilation cache of the entry points (``purerec.core.compile_cache``)."""

from __future__ import annotations

import os

import jax

from purerec.core import compile_cache


def test_cache_path_follows_the_variables(monkeypatch, tmp_path):
    monkeypatch.delenv("PUREREC_JAX_CACHE", raising=False)
    monkeypatch.setenv("PUREREC_CACHE", str(tmp_path))
    assert compile_cache.cache_path() == os.path.join(str(tmp_path), "jax")
    monkeypatch.setenv("PUREREC_JAX_CACHE", str(tmp_path / "elsewhere"))
    assert compile_cache.cache_path() == str(tmp_path / "elsewhere")
    for off in ("off", "0", "", "None"):
        monkeypatch.setenv("PUREREC_JAX_CACHE", off)
        assert compile_cache.cache_path() is None
        assert compile_cache.enable() is None


def test_an_unwritable_cache_is_a_warning_not_an_error(monkeypatch, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("PUREREC_JAX_CACHE", str(blocker / "jax"))  # fails for root too
    before = jax.config.jax_compilation_cache_dir
    assert compile_cache.enable() is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: compilation cache off") and "PUREREC_JAX_CACHE" in err
    assert jax.config.jax_compilation_cache_dir == before  # left as it was


def test_enable_points_jax_at_the_directory(monkeypatch, tmp_path):
    before = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    monkeypatch.setenv("PUREREC_JAX_CACHE", str(tmp_path / "c"))
    try:
        assert compile_cache.enable(min_compile_secs=2.5) == str(tmp_path / "c")
        assert os.path.isdir(tmp_path / "c")
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "c")
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 2.5
    finally:
        jax.config.update("jax_compilation_cache_dir", before[0])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])
