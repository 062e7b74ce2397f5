"""The tokenised-data cache is the user's, as the XDG convention has it, never a folder where a command is run."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from rnnlab.data.cache import TensorCache, default_cache_dir
from rnnlab.data.novel import NovelDataModule

from conftest import CONF_DIR


def test_the_cache_is_rnnlab_cache_dir_else_xdg_cache_home_else_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("RNNLAB_CACHE_DIR", raising=False)
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "rnnlab"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # the specification: a relative one is ignored
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "rnnlab"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "rnnlab"
    monkeypatch.setenv("RNNLAB_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    assert TensorCache(None, "novel").cache_dir == tmp_path / "mine"  # a DataModule built without a cache_dir


def test_the_packaged_paths_leave_the_cache_to_the_user_default(monkeypatch, tmp_path):
    monkeypatch.delenv("RNNLAB_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    paths = OmegaConf.load(Path(CONF_DIR) / "paths" / "default.yaml")
    assert paths.cache_dir is None
    assert NovelDataModule(cache_dir=paths.cache_dir).cache.cache_dir == tmp_path / "xdg" / "rnnlab"
