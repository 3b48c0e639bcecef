"""Hostile programs through ``run_python``: each is contained, reported as a failure, the host unharmed."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import time
import warnings
from pathlib import Path

import pytest

from creditlens import sandbox
from creditlens.errors import SandboxError
from creditlens.sandbox import run_python

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None or sandbox._bwrap_unavailable() is not None,
                                 reason="bubblewrap unavailable here (make sysdeps installs it)")

MARK = "import ctypes\nctypes.CDLL(None).prctl(15, b'{mark}', 0, 0, 0)\n"  # PR_SET_NAME, inherited by forks


def tagged(source: str) -> tuple[str, str]:
    """``source`` prefixed so its processes carry a unique name (found in /proc/*/comm)."""
    mark = "cl" + secrets.token_hex(6)
    return MARK.format(mark=mark) + source, mark


def live_with_name(name: str) -> list[int]:
    """Pids of host processes whose name is ``name`` (zombies excluded)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == name:
                if " Z " not in (entry / "stat").read_text().split(")", 1)[1][:4]:
                    pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def test_plain_program_runs_with_stdin_and_stdlib():
    result = run_python("import json, sys\nprint(json.dumps({'up': sys.stdin.read().upper()}))", stdin="abc")
    assert result.ok and result.returncode == 0 and not result.timed_out
    assert result.stdout.strip() == '{"up": "ABC"}' and result.summary() == ""


def test_exception_is_reported_with_type_and_message():
    result = run_python("def f():\n    raise ValueError('bad input 42')\nf()")
    assert not result.ok and result.returncode == 1
    assert result.summary() == "exited with code 1: ValueError: bad input 42"
    assert 'File "main.py", line 2, in f' in result.stderr


def test_infinite_loop_times_out_and_is_killed():
    source, mark = tagged("while True:\n    pass\n")
    start = time.monotonic()
    result = run_python(source, timeout_s=1)
    assert time.monotonic() - start < 5
    assert result.timed_out and not result.ok and result.summary() == "timed out after 1 s"
    assert live_with_name(mark) == []


def test_memory_hog_fails_with_memory_error():
    result = run_python("x = bytearray(4 * 1024**3)\nprint('allocated')", memory_mb=256)
    assert not result.ok and "allocated" not in result.stdout
    assert "MemoryError" in result.summary()


def test_huge_output_is_truncated_to_the_bound():
    result = run_python("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", max_output_bytes=100_000)
    assert not result.ok and result.output_truncated
    assert len(result.stdout) <= 100_000 and "truncated" in result.summary()


def test_deep_recursion_fails_cleanly():
    result = run_python("def f(n):\n    return f(n + 1)\nf(0)")
    assert not result.ok and "RecursionError" in result.summary()
    unlimited = run_python("import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1)\nf(0)",
                           timeout_s=3, memory_mb=256)
    assert not unlimited.ok and unlimited.summary()


def test_exit_codes_and_signals_are_reported():
    assert run_python("import os\nos._exit(3)").summary() == "exited with code 3"
    killed = run_python("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert killed.returncode == -9 and killed.summary().startswith("killed by SIGKILL")
    exited = run_python("import sys\nsys.exit('bye')")
    assert not exited.ok and exited.returncode == 1


def test_unknown_isolation_is_rejected():
    with pytest.raises(ValueError, match="isolation"):
        run_python("pass", isolation="rlimits")


@needs_bwrap
def test_fork_bomb_is_bounded_and_leaves_nothing_behind():
    source, mark = tagged("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n")
    start = time.monotonic()
    result = run_python(source, timeout_s=2, max_processes=16)
    assert time.monotonic() - start < 8
    assert not result.ok and result.isolation == "bwrap"
    assert live_with_name(mark) == []


@needs_bwrap
def test_process_limit_holds_inside_the_sandbox():
    probe = ("import os, time\nn = 0\nfor _ in range(60):\n    try:\n        pid = os.fork()\n"
             "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(3)\n        os._exit(0)\n"
             "    n += 1\nprint(n)")
    result = run_python(probe, max_processes=10)
    assert result.ok and int(result.stdout) < 10


@needs_bwrap
def test_escaped_daemon_dies_with_the_sandbox():
    source, mark = tagged("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                          "        time.sleep(60)\n    os._exit(0)\nprint('parent done')")
    result = run_python(source)
    assert result.ok and "parent done" in result.stdout
    assert live_with_name(mark) == []


@needs_bwrap
def test_killing_the_parent_and_everyone_leaves_the_host_alive():
    parent = os.getppid()
    result = run_python("import os, signal\nfor pid in (os.getppid(), -1, 1):\n    try:\n"
                        "        os.kill(pid, signal.SIGKILL)\n    except OSError as error:\n"
                        "        print('refused', pid, error)\nprint('still here')")
    assert result.isolation == "bwrap" and "still here" in result.stdout
    assert os.getppid() == parent and run_python("print(1)").stdout == "1\n"


@needs_bwrap
def test_writes_outside_private_tmp_do_not_reach_the_host(tmp_path):
    target = tmp_path / "written_by_sandbox.txt"
    name = f"creditlens-sandbox-{secrets.token_hex(6)}"
    source = (f"open('/tmp/{name}', 'w').write('inside')\n"
              f"for path in ({str(target)!r}, '/usr/{name}', '/etc/{name}', '/{name}'):\n"
              f"    try:\n        open(path, 'w').write('x')\n        print('WROTE', path)\n"
              f"    except OSError as error:\n        print('blocked', path, type(error).__name__)\n")
    result = run_python(source)
    assert result.ok and "WROTE" not in result.stdout and result.stdout.count("blocked") == 4
    assert not target.exists() and not Path(f"/tmp/{name}").exists() and not Path(f"/usr/{name}").exists()


@needs_bwrap
def test_files_outside_the_allow_list_cannot_be_read(tmp_path, monkeypatch):
    token = secrets.token_hex(16)
    secret = tmp_path / "secret.txt"
    secret.write_text(token)
    monkeypatch.setenv("CREDITLENS_TEST_SECRET", token)
    paths = [str(secret), __file__, "/etc/shadow", "/etc/passwd"]
    source = (f"import os\nprint(dict(os.environ))\nfor path in {paths!r}:\n    try:\n"
              f"        print(open(path).read() if os.path.isfile(path) else os.listdir(path))\n"
              f"    except OSError as error:\n        print('blocked', type(error).__name__)\n")
    result = run_python(source)
    assert result.ok and token not in result.stdout
    assert "needs_bwrap" not in result.stdout and "root:" not in result.stdout
    assert result.stdout.count("blocked") == len(paths)


@needs_bwrap
def test_network_is_unreachable_even_on_loopback():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        result = run_python(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                            "s.sendall(b'hello')\nprint('connected')")
        assert not result.ok and "connected" not in result.stdout
        assert "Error" in result.summary()
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        server.close()


@needs_bwrap
def test_open_file_and_tmpfs_limits():
    files = run_python("fs = [open('/tmp/f%d' % i, 'w') for i in range(1000)]", max_open_files=32)
    assert not files.ok and "Too many open files" in files.summary()
    for folder in ("/tmp", "/dev/shm"):
        full = run_python(f"for i in range(100):\n    open('{folder}/big%d' % i, 'wb').write(b'x' * 900_000)",
                          tmp_size_mb=8)
        assert not full.ok and "No space left" in full.summary(), folder


def test_explicit_none_mode_warns_and_still_contains():
    with pytest.warns(RuntimeWarning, match="no namespace, network or file-system isolation"):
        loop = run_python("while True:\n    pass", timeout_s=1, isolation="none")
    assert loop.isolation == "none" and loop.timed_out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        hog = run_python("x = bytearray(4 * 1024**3)", memory_mb=256, isolation="none")
        out = run_python("while True:\n    print('y' * 10000)", max_output_bytes=50_000, isolation="none")
    assert "MemoryError" in hog.summary()
    assert out.output_truncated and len(out.stdout) <= 50_000


def test_missing_bwrap_is_an_error_unless_the_caller_opts_in(monkeypatch, tmp_path):
    monkeypatch.setattr(sandbox, "_bwrap_problem", ["'bwrap' is not on PATH"])
    monkeypatch.delenv(sandbox.SANDBOX_ENV, raising=False)
    marker = tmp_path / "ran"
    for isolation in ("auto", "bwrap"):
        with pytest.raises(SandboxError, match=r"^sandbox: bubblewrap is needed .*'bwrap' is not on PATH.*"
                                               r"apt-get install bubblewrap.*CREDITLENS_SANDBOX=none"):
            run_python(f"open({str(marker)!r}, 'w')", isolation=isolation)
    assert not marker.exists()  # refused before anything ran
    monkeypatch.setenv(sandbox.SANDBOX_ENV, "none")
    with pytest.warns(RuntimeWarning, match="'bwrap' is not on PATH; CREDITLENS_SANDBOX=none"):
        result = run_python("print('hi')")
    assert result.ok and result.isolation == "none" and result.stdout == "hi\n"
    with pytest.raises(SandboxError, match="bubblewrap"):
        run_python("print('hi')", isolation="bwrap")  # the env var never weakens an explicit bwrap


@needs_bwrap
def test_run_pair_joins_two_sandboxes_that_cannot_see_each_other():
    server, mark = tagged("import os, sys\nprint(len([p for p in os.listdir('/proc') if p.isdigit()]), flush=True)\n"
                          "for line in sys.stdin:\n    print(line.strip().upper(), flush=True)\n")
    client = ("import os, sys\nw, r = map(int, sys.stdin.readline().split())\nreplies = os.fdopen(r)\n"
              "print('pids seen by the server:', replies.readline().strip())\n"
              "for word in sys.stdin.read().split():\n    os.write(w, (word + '\\n').encode())\n"
              "    print(replies.readline().strip())\n")
    result, server_result = sandbox.run_pair(server, client, "alpha beta")
    assert result.ok and result.stdout.splitlines()[1:] == ["ALPHA", "BETA"], result
    assert int(result.stdout.split(":")[1].split()[0]) <= 3  # bwrap's init, the server, its prelude at most
    assert server_result.stdout == "" and live_with_name(mark) == []
    hung = sandbox.run_pair("import time\ntime.sleep(60)",
                            "import os, sys\nw, r = map(int, sys.stdin.readline().split())\nos.read(r, 1)", "",
                            timeout_s=1)[0]
    assert hung.timed_out and hung.summary() == "timed out after 1 s"
