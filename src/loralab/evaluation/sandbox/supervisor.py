"""Run untrusted Python programs (model-generated code, for pass@k) in layers of isolation.

`run_code(program)` writes the program into a fresh temporary directory, runs it with `python -I` in a
separate process, kills everything it started and deletes the directory. The layers, outermost first:

1. Supervisor (the calling process): a wall-clock deadline; stdout and stderr read together, each kept up
   to MAX_OUTPUT_BYTES (a program that prints more is killed at once); the run gets a new session, whose
   process group is killed at the end.
2. Namespaces, made by util-linux `unshare` where the kernel lets ordinary users create user namespaces:
   - user: the program is "root" inside, mapped to our own uid, with no privileges outside, and may not
     create user namespaces of its own (where it would have every capability again);
   - PID: it sees and can signal only its own processes, and when the namespace's first process (our
     launcher) ends, the kernel kills every process left in it, double-forked daemons included;
   - network: only a loopback interface that is down, so no connection to anything, not even 127.0.0.1;
   - IPC: SysV shared memory and semaphores of its own, gone with the namespace (never left on the host);
   - mount: the launcher remounts the whole filesystem read-only and mounts private, size-limited tmpfs
     on /tmp (which holds the work directory), /dev/shm and /run (hiding the host's sockets), and a /dev
     with only null, zero, full, random, urandom and tty (no terminals, console, disks or kernel log).
     Python's own folders that lie under the hidden ones (a venv or an installation under /tmp) are bound
     back, read-only, at the same paths, so the program's interpreter and standard library stay reachable.
3. Launcher: launcher.py, run as a script (stdlib only). It sets the mounts up, caps the PIDs of the
   namespace (pid_max, Linux >= 6.14), starts the program, reaps orphans, stops all the program's
   processes when together they hold more than the memory limit (RLIMIT_AS bounds each one alone; memfd
   files count too), kills what is left at the end and reports the exit status on a pipe that the program
   cannot reach.
4. The program's own process: rlimits (CPU seconds, address space, file size, processes, open files,
   no core dumps), no capabilities and no way to gain any (no_new_privs), an environment built from
   scratch (none of the caller's variables), stdin from /dev/null.

Without user namespaces (some containers, hardened kernels) only layers 1, 3 and 4 could remain, and then
the program could read and write the user's files, use the network and signal, trace and write to the
user's other processes (the caller's terminal included); as root also the machine's settings in /proc/sys.
So `run_code` refuses (SandboxUnavailable, saying why and how to get the namespaces) unless the caller
accepts that risk with isolation="rlimits-only"; the launcher then finds daemons as a child subreaper.
`isolation()` says which layers this machine gives and what it lacks (worded in machine.py); `loralab
sandbox` prints that. The work directory is made and deleted (never following a link out of it) in
workdir.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Literal, get_args

from loralab.evaluation.sandbox import launcher
from loralab.evaluation.sandbox.launcher import HIDDEN
from loralab.evaluation.sandbox.machine import Isolation, with_namespaces, without_namespaces
from loralab.evaluation.sandbox.workdir import work_directory

__all__ = [
    "LEVELS",
    "MAX_OUTPUT_BYTES",
    "ExecResult",
    "Isolation",
    "Level",
    "SandboxError",
    "SandboxUnavailable",
    "isolation",
    "isolation_layers",
    "probe",
    "require",
    "run_code",
]

Status = Literal["ok", "error", "timeout", "killed"]
# loralab.config reads the levels from this file's source (config/registries.py): keep them literal
Level = Literal["namespaces", "rlimits-only"]  # what run_code demands: the namespaces, or accepts less
LEVELS: tuple[str, ...] = get_args(Level)

MAX_OUTPUT_BYTES = 64 * 1024  # kept of stdout and of stderr each; more gets the program killed
MAX_PROCESSES = 64  # RLIMIT_NPROC headroom above the user's current number of processes
BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "OMP_NUM_THREADS": "1",  # numerical libraries: one thread each, to stay within the process limit
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
UNSHARE_FLAGS = (
    "--user",
    "--map-root-user",
    "--net",
    "--ipc",
    "--pid",
    "--fork",
    "--mount-proc",
    "--kill-child",
)
STOP_GRACE_S = 1.0  # after SIGTERM, how long the launcher gets to clean up before SIGKILL
DRAIN_S = 0.5  # after the launcher ended, how long to wait for the output pipes to close


class SandboxError(RuntimeError):
    """The sandbox itself failed to start (not the program): e.g. a mount or `unshare` failed."""


class SandboxUnavailable(SandboxError):
    """The isolation asked for cannot be set up on this machine, so nothing was run."""


@dataclass(frozen=True)
class ExecResult:
    """What a program did. status: "ok" = exit 0; "error" = nonzero exit (an exception, a failed assert, also
    MemoryError when one process hits the memory limit); "timeout" = wall-clock or CPU time limit; "killed" =
    stopped by another limit (memory of all its processes together, output size, file size) or a signal.
    returncode: the exit code, -N for signal N, None when the supervisor stopped the program. stdout and
    stderr keep at most MAX_OUTPUT_BYTES each; truncated says whether either was cut."""

    status: Status
    stdout: str
    stderr: str
    returncode: int | None
    duration_s: float
    truncated: bool = False


def run_code(
    program: str, timeout_s: float = 5.0, memory_mb: int = 1024, isolation: Level = "namespaces"
) -> ExecResult:
    """Run `program` (Python source) in the sandbox and return what happened; safe to call from threads.

    isolation="namespaces" (the default) raises SandboxUnavailable where this machine cannot set the
    namespaces up; "rlimits-only" accepts running the program with rlimits alone there (it can then read and
    write the user's files and use the network). Namespaces are used wherever they work, in both cases."""
    if timeout_s <= 0 or memory_mb <= 0:
        raise ValueError(f"timeout_s and memory_mb must be positive, got {timeout_s} and {memory_mb}")
    found = require(isolation)
    result, _layers = _run(program, timeout_s, memory_mb, namespaces=found.namespaces)
    return result


def require(
    isolation: Level = "namespaces", opt_in: str = 'run_code(..., isolation="rlimits-only")'
) -> Isolation:
    """This machine's isolation; raises SandboxUnavailable, one line naming what is missing, why, how to get
    it and `opt_in` (how the caller accepts the risk), when `isolation` asks for namespaces that do not work."""
    if isolation not in LEVELS:
        raise ValueError(f"isolation must be one of {', '.join(LEVELS)}, got {isolation!r}")
    found = _probe()
    if isolation == "namespaces" and not found.namespaces:
        raise SandboxUnavailable(
            f"refusing to run untrusted code: the sandbox's namespaces cannot be set up here ({found.reason}), "
            "and without them the program could read and write your files, use the network and signal your "
            f"processes. To get them: {found.how_to_fix}. To run it anyway with rlimits only, at that risk: "
            f"{opt_in}"
        )
    return found


def probe() -> Isolation:
    """What isolation this machine gives run_code (tried once, then cached)."""
    return _probe()


def isolation() -> str:
    """Which isolation layers run_code uses on this machine and what it lacks, in one line (tried once, then
    cached)."""
    return _probe().description


def isolation_layers() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the layers run_code uses on this machine, the protections it lacks), one short phrase each."""
    probe = _probe()
    return probe.active or (probe.description,), probe.missing


# ----------------------------------------------------------------------------------------------------------
# Supervisor: runs in the caller's process.

_probe_lock = threading.Lock()
_probe_cache: list[Isolation] = []


def _probe() -> Isolation:
    """Try a tiny program in the namespaces once; fall back to rlimits only when that fails."""
    with _probe_lock:
        if not _probe_cache:
            _probe_cache.append(_detect())
        return _probe_cache[0]


def _detect() -> Isolation:
    """A test run in the namespaces: the layers it reported, or why it failed and rlimits only."""
    reason = "util-linux `unshare` not found"
    if shutil.which("unshare"):
        try:
            result, layers = _run("print('ok')", 10.0, 256, namespaces=True)
            if result.status == "ok" and result.stdout == "ok\n":
                return with_namespaces(layers)
            reason = f"test run gave {result.status}: {result.stderr.strip()[-200:]}"
        except (SandboxError, OSError) as exc:
            reason = " ".join(str(exc).split())[-300:]
    return without_namespaces(reason)


def _run(program: str, timeout_s: float, memory_mb: int, namespaces: bool) -> tuple[ExecResult, list[str]]:
    """Run one program in a fresh work directory; returns its result and the layers the launcher reported."""
    with work_directory(program) as workdir:
        status_r, status_w = os.pipe()  # the launcher reports on it; the program never gets it
        start = time.monotonic()
        try:
            try:
                proc = subprocess.Popen(
                    _command(workdir, status_w, timeout_s, memory_mb, namespaces),
                    cwd=workdir,
                    env=BASE_ENV,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    pass_fds=(status_w,),
                    start_new_session=True,
                )
            finally:
                os.close(status_w)  # now only the launcher (and unshare) hold it: EOF means they have ended
            return _supervise(proc, status_r, start, start + timeout_s)
        finally:
            os.close(status_r)


def _command(workdir: str, status_fd: int, timeout_s: float, memory_mb: int, namespaces: bool) -> list[str]:
    """`[unshare FLAGS] python -I -S launcher.py CONFIG`: the launcher, in the namespaces when we have them."""
    python, keep = _interpreter()
    config = {
        "status_fd": status_fd,
        "workdir": workdir,
        "namespaces": namespaces,
        "python": python,
        "keep": keep,
        "cpu_s": int(timeout_s) + 2,
        "memory_bytes": memory_mb * 1024 * 1024,
        "nproc": _user_task_count() + MAX_PROCESSES,
        "env": BASE_ENV,
    }
    script = [sys.executable, "-I", "-S", os.path.abspath(launcher.__file__), json.dumps(config)]
    return [shutil.which("unshare") or "unshare", *UNSHARE_FLAGS, *script] if namespaces else script


def _interpreter() -> tuple[str, list[str]]:
    """The Python to run the program with (its folder's links resolved, its own name kept: a venv's `python`
    may be a link, and its pyvenv.cfg sits above that folder) and the folders under HIDDEN that it needs,
    its environment and its installation, which the launcher binds back read-only."""
    python = os.path.join(os.path.realpath(os.path.dirname(sys.executable)), os.path.basename(sys.executable))
    folders = {os.path.dirname(python), os.path.dirname(os.path.realpath(python))}
    folders |= {
        os.path.realpath(p) for p in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix)
    }
    hidden = {path for path in folders if _within(path, HIDDEN)}
    for path in hidden:
        if path in (*HIDDEN, "/dev/shm"):
            raise SandboxError(
                f"Python lives directly in {path}, which the sandbox must hide; install it or "
                "its virtual environment in a folder of its own"
            )
        if _within(path, ("/dev",)) and not _within(path, ("/dev/shm",)):
            raise SandboxError(f"Python lives under {path}, which the sandbox replaces; install it elsewhere")
    return python, sorted(path for path in hidden if not _within(os.path.dirname(path), hidden))


def _within(path: str, folders: object) -> bool:
    """Whether `path` is one of `folders` or lies inside one."""
    return any(path == folder or path.startswith(folder.rstrip("/") + "/") for folder in folders)


def _supervise(
    proc: subprocess.Popen, status_r: int, start: float, deadline: float
) -> tuple[ExecResult, list[str]]:
    """Collect the output until the end or a limit, stop and kill everything, and say what happened."""
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    streams = {out_fd: bytearray(), err_fd: bytearray(), status_r: bytearray()}
    stop_reason = None
    try:
        stop_reason = _collect(streams, status_r, deadline)
        if stop_reason:
            _signal_group(proc.pid, signal.SIGTERM)  # the launcher kills its namespace and exits
            _wait_unreaped(proc.pid, STOP_GRACE_S)
    finally:
        _signal_group(proc.pid, signal.SIGKILL)  # before reaping, so the group id cannot be reused yet
        proc.wait()
        for fd, buffer in streams.items():
            _drain(fd, buffer)
        proc.stdout.close()
        proc.stderr.close()
    duration = time.monotonic() - start
    report = _parse_report(bytes(streams[status_r]))
    stdout, stderr = bytes(streams[out_fd]), bytes(streams[err_fd])
    if "setup_error" in report:
        raise SandboxError(f"sandbox setup failed: {report['setup_error']}")
    if "layers" not in report and not stop_reason:
        raise SandboxError(
            f"sandbox did not start (exit {proc.returncode}): {stderr.decode(errors='replace')}"
        )
    status, returncode = _classify(stop_reason, report.get("returncode"))
    result = ExecResult(
        status=status,
        stdout=stdout[:MAX_OUTPUT_BYTES].decode("utf-8", errors="replace"),
        stderr=stderr[:MAX_OUTPUT_BYTES].decode("utf-8", errors="replace"),
        returncode=returncode,
        duration_s=duration,
        truncated=max(len(stdout), len(stderr)) > MAX_OUTPUT_BYTES,
    )
    return result, report.get("layers", [])


def _collect(streams: dict[int, bytearray], status_r: int, deadline: float) -> str | None:
    """Read all pipes until the launcher has ended and the output pipes are closed.

    Returns None then, or why the program must be stopped: "timeout" or "output" (printed too much)."""
    ended_at = None
    with selectors.DefaultSelector() as selector:
        for fd in streams:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            now = time.monotonic()
            if now >= deadline:
                return "timeout"
            if ended_at is not None and now >= ended_at + DRAIN_S:
                return None  # something outside our reach holds the pipes; the group kill follows
            limit = deadline if ended_at is None else min(deadline, ended_at + DRAIN_S)
            for key, _events in selector.select(timeout=limit - now):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fd)
                    if key.fd == status_r:
                        ended_at = time.monotonic()
                    continue
                streams[key.fd] += chunk
                if key.fd != status_r and len(streams[key.fd]) > MAX_OUTPUT_BYTES:
                    return "output"
    return None


def _classify(stop_reason: str | None, returncode: int | None) -> tuple[Status, int | None]:
    if stop_reason == "timeout":
        return "timeout", None
    if stop_reason == "output" or returncode is None:
        return "killed", None
    if returncode == 0:
        return "ok", 0
    if returncode > 0:
        return "error", returncode
    return ("timeout" if -returncode == signal.SIGXCPU else "killed"), returncode


def _parse_report(data: bytes) -> dict:
    report: dict = {}
    for line in data.decode(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            report.update(json.loads(line))
    return report


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _wait_unreaped(pid: int, timeout_s: float) -> None:
    """Wait until `pid` has exited, without reaping it (so its process group id stays reserved)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return
        time.sleep(0.01)


def _drain(fd: int, buffer: bytearray) -> None:
    """Read what is still buffered in a pipe, without blocking and within the output bound."""
    os.set_blocking(fd, False)
    with contextlib.suppress(OSError):
        while len(buffer) <= MAX_OUTPUT_BYTES and (chunk := os.read(fd, 65536)):
            buffer += chunk


def _user_task_count() -> int:
    """Processes and threads of this user now: RLIMIT_NPROC counts them all (outside a user namespace)."""
    count = 0
    uid = os.getuid()
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc"):
            if name.isdigit():
                with contextlib.suppress(OSError):
                    if os.stat(f"/proc/{name}").st_uid == uid:
                        count += len(os.listdir(f"/proc/{name}/task"))
    return count
