"""`creditlens app`: argument handling, the port check and the streamlit command line (the browser test
starts it for real), and the dashboard shipping inside the package."""

from __future__ import annotations

import socket
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from creditlens import cli
from creditlens.commands import app

REPO = Path(__file__).resolve().parents[1]


def test_entry_page_and_pages_live_in_the_top_level_app_directory():
    assert app.APP_ENTRY == REPO / "app" / "Runs.py" and app.APP_ENTRY.is_file()
    pages = sorted(p.name for p in (REPO / "app" / "pages").glob("*.py"))
    assert pages == ["1_Token_credit.py", "2_Decomposition.py", "3_pMI_check.py", "4_Live_scoring.py"]
    for script in [app.APP_ENTRY, *(REPO / "app" / "pages").glob("*.py")]:
        assert "sys.path" not in script.read_text(), script  # pages import creditlens.app.common
    assert not (REPO / "creditlens" / "app").exists()


def test_pyproject_lists_every_package():
    """pyproject.toml names its packages (app/ is mapped to creditlens.app): a new subpackage must be added there."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "creditlens").rglob("__init__.py")}
    assert set(setuptools["packages"]) == found | {"creditlens.app"}
    assert setuptools["package-dir"] == {"creditlens.app": "app"}


@pytest.mark.slow
def test_wheel_ships_the_dashboard_and_it_runs_outside_the_repository(tmp_path):
    """Build the wheel, unpack it away from the checkout, and check `creditlens app` finds its pages there."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(REPO)], check=True, capture_output=True)
    wheel = next(dist.glob("creditlens-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("creditlens/app/Runs.py", "creditlens/app/common.py", "creditlens/app/pages/3_pMI_check.py",
                 "creditlens/commands/app.py", "creditlens/training/trainers.py", "creditlens/envs/shortcut.py"):
        assert name in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = ("from creditlens.commands import app; import creditlens.app.common as c; "
             "print(app.APP_ENTRY.is_file(), app.APP_ENTRY, c.REPO_RUNS.is_dir())")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, check=True)
    found, entry, repo_runs = done.stdout.split()
    assert found == "True" and entry == str(site / "creditlens" / "app" / "Runs.py") and repo_runs == "False"


def test_command_line_passes_runs_dir_and_port(tmp_path):
    command = app.streamlit_command(str(tmp_path), 8765, "localhost")
    assert command[1:4] == ["-m", "streamlit", "run"] and command[4] == str(app.APP_ENTRY)
    assert command[command.index("--server.port") + 1] == "8765"
    assert command[command.index("--server.address") + 1] == "localhost"
    assert command[-3:] == ["--", "--runs-dir", str(tmp_path)]
    assert "--" not in app.streamlit_command(None, 8765, "localhost")


def test_missing_runs_dir_is_a_one_line_error(tmp_path, capsys):
    assert cli.main(["app", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_file_is_refused_unless_it_is_a_token_table(tmp_path, capsys, monkeypatch):
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    assert cli.main(["app", str(notes)]) == 2
    err = capsys.readouterr().err
    assert "notes.txt' is a file, not a directory" in err and ".parquet" in err and "does not exist" not in err
    table = tmp_path / "step_000005.parquet"
    table.write_bytes(b"")
    started = {}
    monkeypatch.setattr(app.os, "execve", lambda path, command, env: started.update(command=command, env=env))
    assert cli.main(["app", str(table), "--port", "0"]) == 0
    assert started["env"]["CREDITLENS_RUNS_DIR"] == str(table) and started["command"][-1] == str(table)


def test_free_port_is_bindable_and_check_port_refuses_a_busy_one(capsys, tmp_path):
    port = app.free_port()
    with socket.socket() as sock:
        sock.bind(("localhost", port))
        sock.listen()
        assert sock.getsockname()[1] == port
        with pytest.raises(ValueError, match=f"port {port} on localhost is busy"):
            app.check_port(port)
        assert cli.main(["app", str(tmp_path), "--port", str(port)]) == 2
        assert f"port {port} on localhost is busy" in capsys.readouterr().err
    assert app.check_port(port) == port  # free again once the listener is gone
    assert app.check_port(0) > 0
