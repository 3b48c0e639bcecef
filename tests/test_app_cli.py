"""`creditlens app`: argument handling and the streamlit command line (the browser test starts it for real)."""

from __future__ import annotations

import socket

from creditlens import cli
from creditlens.commands import app


def test_entry_page_exists_next_to_the_package():
    assert app.APP_ENTRY.is_file() and app.APP_ENTRY.parent.name == "app"
    assert (app.APP_ENTRY.parent / "pages").is_dir()


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


def test_free_port_is_bindable():
    port = app.free_port()
    with socket.socket() as sock:
        sock.bind(("localhost", port))
