"""Run untrusted Python (model-written code) in a bubblewrap sandbox with resource limits.

``run_python(source)`` starts the standard-library-only interpreter (``python -I -S``) inside
``bwrap`` with no network, a read-only view of the interpreter and system libraries (nothing else of
the host's file system), a private size-bounded tmpfs as ``/tmp``, its own PID/IPC/UTS namespaces,
and ``--die-with-parent``. A prelude inside the sandbox sets rlimits on CPU time, address space,
processes, file size and open files, and (when the host runs as root, where the kernel ignores
``RLIMIT_NPROC``) switches to an unused uid so the process limit holds. On timeout the whole process
group is killed. stdout and stderr go to files bounded by the file-size limit and are read back
truncated. ``run_pair(server, client, ...)`` runs two such programs joined by pipes, so a verifier can
call untrusted code that lives in another process. Where bwrap is missing or cannot start, model code
runs only with an explicit opt-in (``isolation="none"`` or ``CREDITLENS_SANDBOX=none``): the same prelude
without namespaces, with a ``RuntimeWarning``; otherwise :class:`SandboxError` says how to install it.
"""

from __future__ import annotations

import contextlib
import itertools
import numbers
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from creditlens.errors import SandboxError

ISOLATIONS = ("auto", "bwrap", "none")
SANDBOX_ENV = "CREDITLENS_SANDBOX"  # "none": let isolation="auto" run without bubblewrap (rlimits only)

# Runs first inside the sandbox: limits, then drop root, then the program as ``__main__``.
_PRELUDE = r"""
import os, resource, sys
_l = [int(v) for v in sys.argv[1:7]]
_src = open(sys.argv[7], encoding="utf-8").read()
for _r, _v in zip((resource.RLIMIT_CPU, resource.RLIMIT_AS, resource.RLIMIT_NPROC,
                   resource.RLIMIT_FSIZE, resource.RLIMIT_NOFILE), _l[:5]):
    resource.setrlimit(_r, (_v, _v))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
if _l[5] >= 0:
    os.setgroups([]); os.setgid(_l[5]); os.setuid(_l[5])
sys.argv = ["main.py"]
_code = compile(_src, "main.py", "exec")
del _l, _src, _r, _v
try:
    exec(_code, {"__name__": "__main__", "__builtins__": __builtins__})
except BaseException as _e:
    if isinstance(_e, SystemExit):
        raise
    import traceback
    traceback.print_exception(type(_e), _e, _e.__traceback__.tb_next)
    sys.exit(1)
"""

_UID_BASE = 1_500_000_000
_uid_counter = itertools.count()
_probe_lock = threading.Lock()
_bwrap_problem: list[str | None] = []  # filled once: [None] when bwrap works, else [reason]


@dataclass(frozen=True)
class SandboxResult:
    """What a sandboxed run did. ``ok`` means exit code 0 within the time limit."""

    ok: bool
    returncode: int  # negative: killed by that signal
    stdout: str
    stderr: str
    timed_out: bool
    isolation: str  # "bwrap" or "none" (rlimits and a process group only)
    duration_s: float
    output_truncated: bool
    timeout_s: float

    def summary(self) -> str:
        """One line saying why the run failed ("" when ``ok``), for feedback text."""
        if self.timed_out:
            return f"timed out after {self.timeout_s:g} s"
        if self.ok:
            return ""
        if self.returncode < 0:
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:
                return f"killed by signal {-self.returncode}"
            hint = {"SIGKILL": " (memory, CPU or process limit)", "SIGXCPU": " (CPU time limit)",
                    "SIGSEGV": " (segmentation fault, e.g. too deep recursion)"}.get(name, "")
            return f"killed by {name}{hint}"
        last = [line for line in self.stderr.strip().splitlines() if line.strip()]
        tail = f": {last[-1].strip()}" if last else ""
        if self.output_truncated:
            tail += " (output exceeded the size limit and was truncated)"
        return f"exited with code {self.returncode}{tail}"


def run_python(
    source: str,
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    stdin: str | None = None,
    max_processes: int = 16,
    max_open_files: int = 64,
    max_output_bytes: int = 1 << 20,
    tmp_size_mb: int = 64,
    isolation: str = "auto",
) -> SandboxResult:
    """Run ``source`` as ``__main__`` (stdlib only, cwd ``/tmp``) and report what happened.

    ``timeout_s`` is wall-clock, in (0, 86400) (CPU time is capped a second above it); ``memory_mb`` bounds the
    address space; ``max_output_bytes`` bounds stdout, stderr and every file the program writes;
    ``isolation`` is "auto" (bwrap; without it, an error unless ``CREDITLENS_SANDBOX=none`` opts in),
    "bwrap" (error when unavailable) or "none" (rlimits only, with a warning). Thread-safe. A bad argument
    (a non-str source, bytes stdin, a timeout that is not a finite positive number, a limit that is not
    a whole number >= 1) raises :class:`SandboxError` before anything runs.
    """
    _check_arguments(source, timeout_s, memory_mb, stdin, max_processes, max_open_files, max_output_bytes,
                     tmp_size_mb, isolation)
    return _run(source, float(timeout_s), int(memory_mb), stdin, max_processes, max_open_files,
                max_output_bytes, tmp_size_mb, _mode(isolation))


def run_pair(
    server: str,
    client: str,
    client_stdin: str,
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    max_output_bytes: int = 1 << 20,
    isolation: str = "auto",
) -> tuple[SandboxResult, SandboxResult]:
    """Run ``server`` and ``client`` in two sandboxes (limits as :func:`run_python`) joined by two pipes.

    The server's stdin and stdout are the channel (its result's stdout is empty). The client first reads one line ``"W R"`` from its
    stdin (the file descriptors that write to the server's stdin and read the server's stdout), then
    ``client_stdin``. Neither program can see or signal the other. Both are killed when the client exits
    or ``timeout_s`` (wall-clock, for both) has passed. Returns the (client, server) results.
    """
    _check_arguments(server, timeout_s, memory_mb, client_stdin, 16, 64, max_output_bytes, 64, isolation)
    _check_arguments(client, timeout_s, memory_mb, None, 16, 64, max_output_bytes, 64, isolation)
    mode = _mode(isolation)
    limits = dict(timeout_s=float(timeout_s), memory_mb=int(memory_mb), max_processes=16, max_open_files=64,
                  max_output_bytes=int(max_output_bytes), tmp_size_mb=64, mode=mode)
    with tempfile.TemporaryDirectory(prefix="creditlens-sandbox-") as work, contextlib.ExitStack() as stack:
        server_in, to_server = os.pipe()
        from_server, server_out = os.pipe()
        files = [stack.enter_context(tempfile.TemporaryFile(dir=work)) for _ in range(4)]  # [0] stays empty
        start = time.monotonic()
        try:
            server_run = stack.enter_context(_started(server, os.path.join(work, "server"), server_in, server_out,
                                                      files[1], (), **limits))
            client_run = stack.enter_context(_started(client, os.path.join(work, "client"), subprocess.PIPE,
                                                      files[2], files[3], (to_server, from_server), **limits))
        finally:
            for fd in (server_in, to_server, from_server, server_out):
                os.close(fd)
        timed_out = _communicate(client_run.proc, f"{to_server} {from_server}\n{client_stdin}", timeout_s)
        client_run.stop()
        server_run.stop()
        duration = time.monotonic() - start
        results = [_result(run, out, err, timed_out, duration, max_output_bytes, timeout_s)
                   for run, out, err in ((client_run, files[2], files[3]), (server_run, files[0], files[1]))]
    return results[0], results[1]


def _mode(isolation: str) -> str:
    """The isolation to use: "bwrap" when it works, else "none" only where the caller opted in."""
    if isolation == "none":
        warnings.warn("creditlens.sandbox: isolation='none': rlimits and a separate process group only, no "
                      "namespace, network or file-system isolation", RuntimeWarning, stacklevel=3)
        return "none"
    problem = _bwrap_unavailable()
    if problem is None:
        return "bwrap"
    if isolation == "auto" and os.environ.get(SANDBOX_ENV) == "none":
        warnings.warn(f"creditlens.sandbox: {problem}; {SANDBOX_ENV}=none, so model code runs with rlimits and a "
                      "separate process group only: no namespace, network or file-system isolation",
                      RuntimeWarning, stacklevel=3)
        return "none"
    raise SandboxError(f"sandbox: bubblewrap is needed to run model code ({problem}); install it (Debian/Ubuntu: "
                       f"apt-get install bubblewrap, or `make sysdeps`), or set {SANDBOX_ENV}=none to run the code "
                       "without isolation (rlimits only) at your own risk")


def _check_arguments(source, timeout_s, memory_mb, stdin, max_processes, max_open_files, max_output_bytes,
                     tmp_size_mb, isolation) -> None:
    """Raise :class:`SandboxError` naming the first argument of :func:`run_python` that is unusable."""
    if not isinstance(source, str):
        raise SandboxError(f"run_python: source must be a str of Python code, got {type(source).__name__}")
    if stdin is not None and not isinstance(stdin, str):
        raise SandboxError(f"run_python: stdin must be a str or None, got {type(stdin).__name__} "
                           "(decode bytes first)")
    for name, text in (("source", source), ("stdin", stdin or "")):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise SandboxError(f"run_python: {name} is not valid Unicode (lone surrogate at index {error.start})") from None
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, numbers.Real) or not 0 < timeout_s < 86_400:
        raise SandboxError(f"run_python: timeout_s must be a number of seconds in (0, 86400), got {timeout_s!r}")
    for name, value in (("memory_mb", memory_mb), ("max_processes", max_processes),
                        ("max_open_files", max_open_files), ("max_output_bytes", max_output_bytes),
                        ("tmp_size_mb", tmp_size_mb)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise SandboxError(f"run_python: {name} must be a whole number >= 1, got {value!r}")
    if isolation not in ISOLATIONS:
        raise SandboxError(f"run_python: isolation={isolation!r}; choose one of {ISOLATIONS}")


class _Started:
    """A sandboxed process: ``proc``, its isolation ``mode``, and ``stop()`` that kills all it started."""

    def __init__(self, proc: subprocess.Popen, mode: str, interpreter: str, uid: int):
        self.proc, self.mode, self.interpreter, self.uid = proc, mode, interpreter, uid

    def stop(self) -> None:
        _kill_tree(self.proc)
        if self.mode == "none" and self.uid >= 0:
            _kill_uid(self.interpreter, self.uid)


@contextlib.contextmanager
def _started(source, work, stdin, stdout, stderr, pass_fds, *, timeout_s, memory_mb, max_processes, max_open_files,
             max_output_bytes, tmp_size_mb, mode) -> Iterator[_Started]:
    """Start ``source`` in a sandbox whose files live in the new folder ``work``; stop it on exit."""
    interpreter, uid = _interpreter_and_uid(mode)
    limits = [int(timeout_s) + 1, memory_mb << 20, max_processes, max_output_bytes, max_open_files, uid]
    os.mkdir(work)
    main = os.path.join(work, "main.py")
    with open(main, "w", encoding="utf-8") as handle:
        handle.write(source)
    inner_main = "/sandbox/main.py" if mode == "bwrap" else main
    program = [interpreter, "-I", "-S", "-c", _PRELUDE, *map(str, limits), inner_main]
    if mode == "bwrap":
        command, cwd = _bwrap_command(main, tmp_size_mb) + program, "/"
    else:
        command, cwd = program, work
        if uid >= 0:
            os.chmod(work, 0o777)
            os.chmod(os.path.dirname(work), 0o755)
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
           "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.Popen(command, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, env=env,
                            pass_fds=pass_fds, start_new_session=True)
    started = _Started(proc, mode, interpreter, uid)
    try:
        yield started
    finally:
        started.stop()


def _communicate(proc: subprocess.Popen, stdin: str, timeout_s: float) -> bool:
    """Feed ``stdin`` and wait for ``proc``; True when ``timeout_s`` passed first."""
    try:
        proc.communicate(input=stdin.encode(), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return True
    return False


def _result(run: _Started, out, err, timed_out, duration, max_output_bytes, timeout_s) -> SandboxResult:
    stdout, cut_out = _read_bounded(out, max_output_bytes)
    stderr, cut_err = _read_bounded(err, max_output_bytes)
    returncode = run.proc.returncode
    if run.mode == "bwrap" and returncode > 128 and returncode - 128 in signal.valid_signals():
        returncode = -(returncode - 128)  # bwrap's init reports a killed child as 128 + signal
    return SandboxResult(ok=returncode == 0 and not timed_out, returncode=returncode, stdout=stdout,
                         stderr=stderr, timed_out=timed_out, isolation=run.mode, duration_s=duration,
                         output_truncated=cut_out or cut_err, timeout_s=timeout_s)


def _run(source, timeout_s, memory_mb, stdin, max_processes, max_open_files, max_output_bytes,
         tmp_size_mb, mode) -> SandboxResult:
    limits = dict(timeout_s=timeout_s, memory_mb=memory_mb, max_processes=max_processes,
                  max_open_files=max_open_files, max_output_bytes=max_output_bytes, tmp_size_mb=tmp_size_mb,
                  mode=mode)
    with tempfile.TemporaryDirectory(prefix="creditlens-sandbox-") as work, \
            tempfile.TemporaryFile(dir=work) as out, tempfile.TemporaryFile(dir=work) as err:
        start = time.monotonic()
        with _started(source, os.path.join(work, "run"), subprocess.PIPE, out, err, (), **limits) as run:
            timed_out = _communicate(run.proc, stdin or "", timeout_s)
        return _result(run, out, err, timed_out, time.monotonic() - start, max_output_bytes, timeout_s)


def _bwrap_command(main: str, tmp_size_mb: int) -> list[str]:
    """bwrap arguments: namespaces, read-only system dirs and interpreter, private /tmp."""
    command = ["bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
               "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--hostname", "sandbox"]
    if os.geteuid() != 0:
        command.append("--unshare-user")
    for path in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(path):
            command += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            command += ["--ro-bind", path, path]
    for path in sorted({os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix)}):
        if not path.startswith("/usr"):
            parents = [p for p in _ancestors(path) if p not in ("/", path)]
            command += [arg for p in parents for arg in ("--perms", "0755", "--dir", p)]
            command += ["--ro-bind", path, path]
    for path in ("/etc/ld.so.cache", "/etc/localtime"):
        if os.path.exists(path):
            command += ["--ro-bind", os.path.realpath(path), path]
    size = str(tmp_size_mb << 20)
    command += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev", "--perms", "1777", "--size", size,
                "--tmpfs", "/dev/shm", "--perms", "1777", "--size", size, "--tmpfs", "/tmp",
                "--dir", "/sandbox", "--ro-bind", main, "/sandbox/main.py", "--remount-ro", "/", "--chdir", "/tmp", "--"]
    return command


def _ancestors(path: str) -> list[str]:
    """``/a/b/c`` -> ``["/", "/a", "/a/b", "/a/b/c"]``."""
    parts = path.strip("/").split("/")
    return ["/"] + ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def _interpreter_and_uid(mode: str) -> tuple[str, int]:
    """The interpreter to run and the unused uid to switch to when the host is root (-1: keep)."""
    interpreter = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    if os.geteuid() != 0:
        return interpreter, -1
    if mode == "none" and not _world_accessible(interpreter):
        system = os.path.realpath(shutil.which("python3", path="/usr/bin:/bin") or "/")
        if not (system.startswith("/usr/") and _world_accessible(system)):
            warnings.warn("creditlens.sandbox: no interpreter readable by other users, so isolation='none' "
                          "runs as root, where the kernel does not enforce the process limit",
                          RuntimeWarning, stacklevel=3)
            return interpreter, -1
        interpreter = system
    return interpreter, _UID_BASE + (os.getpid() % 65536) * 256 + next(_uid_counter) % 256


def _world_accessible(path: str) -> bool:
    """True when every directory above ``path`` is searchable, and ``path`` usable, by other users."""
    return all(os.stat(p).st_mode & stat.S_IXOTH for p in _ancestors(path))


def _kill_tree(proc: subprocess.Popen) -> None:
    """Kill the run and wait until it is gone. Killing bwrap's init (the child of ``proc``) first makes
    the kernel empty its PID namespace before ``proc`` can exit, so nothing outlives the wait."""
    for child in _children(proc.pid) if proc.poll() is None else []:
        _signal(lambda child=child: os.kill(child, signal.SIGKILL))
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    _signal(lambda: os.killpg(proc.pid, signal.SIGKILL))
    proc.wait()


def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    children = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as handle:
                if int(handle.read().rsplit(")", 1)[1].split()[1]) == pid:
                    children.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return children


def _signal(send) -> None:
    try:
        send()
    except (ProcessLookupError, PermissionError):
        pass


def _kill_uid(interpreter: str, uid: int) -> None:
    """Kill every process of the fallback's private uid (children that left the process group)."""
    subprocess.run([interpreter, "-I", "-S", "-c", "import os; os.kill(-1, 9)"], user=uid, group=uid,
                   extra_groups=[], cwd="/", check=False, stderr=subprocess.DEVNULL)


def _read_bounded(handle, limit: int) -> tuple[str, bool]:
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    handle.seek(0)
    return handle.read(limit).decode("utf-8", errors="replace"), size >= limit


def _bwrap_unavailable() -> str | None:
    """None when bwrap can run a sandboxed program here, else why not (probed once per process)."""
    with _probe_lock:
        if not _bwrap_problem:
            if shutil.which("bwrap") is None:
                _bwrap_problem.append("'bwrap' is not on PATH")
            else:
                result = _run("print('ok')", 10.0, 256, None, 16, 64, 1 << 16, 8, "bwrap")
                ok = result.ok and result.stdout.strip() == "ok"
                _bwrap_problem.append(None if ok else f"bwrap failed to start: {result.summary()} "
                                      f"{result.stderr.strip()[-300:]}")
        return _bwrap_problem[0]
