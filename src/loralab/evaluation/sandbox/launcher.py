"""The sandbox's launcher: supervisor.py runs this file as a script, `python -I -S launcher.py CONFIG`, inside
the namespaces that `unshare` made (or without them, in the rlimits-only fallback).

It sets the sandbox up (in the namespaces: pid_max, no nested user namespaces, the read-only filesystem with
private /tmp, /dev/shm, /run and /dev, Python's own folders bound back; otherwise it becomes a child
subreaper), forks the program with its rlimits, no capabilities, no_new_privs and a fresh environment, reaps
orphans, stops all the program's processes when together they hold more than the memory limit, kills what is
left at the end and reports on a pipe that the program cannot reach. CONFIG is a JSON object: status_fd,
workdir, namespaces, python, keep (folders to bind back), cpu_s, memory_bytes, nproc, env. On status_fd it
writes JSON lines: {"layers": [...]} once set up (or {"setup_error": "..."}), then {"returncode": N}.

It runs in isolated mode without site, from wherever the caller's Python lives (a venv under /tmp, an
installation copied there, another user's): import nothing outside the standard library.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import signal
import struct
import sys

MAX_FILE_BYTES = 16 * 1024 * 1024  # RLIMIT_FSIZE: largest file the program may write
MAX_OPEN_FILES = 256
PID_NS_MAX = 301  # pid_max inside the PID namespace (the kernel's minimum): at most ~300 processes
TMPFS = (("/tmp", "size=64m,mode=1777"), ("/run", "size=1m,mode=755"))  # /dev/shm: see _make_dev
HIDDEN = ("/tmp", "/run", "/dev")  # what the launcher covers with fresh mounts (Python is bound back)
DEV_SHM = "size=16m,mode=1777"
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")  # bound from the host into the new /dev
DEV_LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
}
PROGRAM_NAME = "program.py"
MEMORY_CHECK_S = 0.1  # how often the launcher adds up the memory of all the program's processes

PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_CHILD_SUBREAPER = 4, 24, 36
PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 38, 47, 4
MS_NOSUID, MS_NODEV, MS_BIND, MS_MOVE, MS_REC = 2, 4, 4096, 8192, 16384
SYS_MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = 442, -100, 0x8000, 1
LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _launch(config: dict) -> None:
    """Set the sandbox up, run the program as our child, report its exit status, kill the rest."""
    status_fd = config["status_fd"]
    os.set_inheritable(status_fd, False)  # the program must not get it
    signal.signal(signal.SIGTERM, lambda *_: _end(status_fd, None))  # the supervisor stops us
    try:
        workdir, layers = _prepare(config)
    except Exception as exc:
        _report(status_fd, setup_error=f"{type(exc).__name__}: {exc}")
        os._exit(1)
    _report(status_fd, layers=layers)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})  # for sigtimedwait in _wait_for
    pid = os.fork()
    if pid == 0:
        _exec_program(config, workdir)
    _end(status_fd, _wait_for(pid, config["memory_bytes"]))


def _prepare(config: dict) -> tuple[str, list[str]]:
    """Namespaces: PID cap and mounts; otherwise become a subreaper. Returns the work dir and the layers."""
    workdir, layers = config["workdir"], []
    if config["namespaces"]:
        with open(os.path.join(workdir, PROGRAM_NAME), "rb") as file:
            program = file.read()
        if _cap_pids():
            layers.append(f"at most {PID_NS_MAX - 1} PIDs (pid_max)")
        if _forbid_user_namespaces():
            layers.append("no nested user namespaces")
        kept = [(path, os.open(path, os.O_PATH | os.O_DIRECTORY)) for path in config["keep"]]  # before hiding
        _make_readonly("/")
        for path, options in TMPFS:
            if os.path.isdir(path):
                _mount_tmpfs(path, options)
        layers.append("read-only filesystem, private tmpfs /tmp /dev/shm /run")
        if _make_dev():
            layers.append("/dev with only " + " ".join(DEV_NODES))
        for path, folder_fd in kept:
            _bind_readonly(folder_fd, path)
            os.close(folder_fd)
        if kept:
            layers.append(
                "Python's own folders kept there, read-only: " + " ".join(path for path, _fd in kept)
            )
        workdir = os.path.join("/tmp", os.path.basename(workdir))  # inside the private /tmp
        os.mkdir(workdir, 0o700)
        with open(os.path.join(workdir, PROGRAM_NAME), "wb") as file:
            file.write(program)
    else:
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_DUMPABLE, 0)  # the program may not ptrace us or open /proc/<launcher>/fd
    os.chdir(workdir)
    return workdir, layers


def _exec_program(config: dict, workdir: str) -> None:
    """In the forked child: limits, no privileges, fresh env, then become `python -I program.py`."""
    try:
        for signum in (signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        _set_rlimits(config)
        _drop_capabilities()
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        env = {**config["env"], "HOME": workdir, "TMPDIR": workdir}
        os.execve(config["python"], [config["python"], "-I", PROGRAM_NAME], env)
    except BaseException as exc:
        os.write(2, f"sandbox: cannot start the program: {exc!r}\n".encode())
    finally:
        os._exit(127)


def _wait_for(pid: int, memory_bytes: int) -> int:
    """Reap children (as PID 1 or subreaper we also get the orphans) until the program ends: its exit code.

    RLIMIT_AS bounds each process, not their sum, nor memory in files that live in RAM: every MEMORY_CHECK_S
    we add up the resident memory of all our descendants and the memfd files they hold open, and stop them
    all (-SIGKILL) when that exceeds the limit."""
    while True:
        with contextlib.suppress(ChildProcessError):
            while (reaped := os.waitpid(-1, os.WNOHANG))[0]:
                if reaped[0] == pid:
                    return os.waitstatus_to_exitcode(reaped[1])
        used = _descendant_memory(_process_table(), os.getpid())
        if used > memory_bytes:
            os.write(
                2, f"sandbox: processes used {used >> 20} MiB together, limit {memory_bytes >> 20}\n".encode()
            )
            return -signal.SIGKILL
        signal.sigtimedwait({signal.SIGCHLD}, MEMORY_CHECK_S)


def _end(status_fd: int, returncode: int | None) -> None:
    """Kill every process we started (also from the SIGTERM handler), report and exit."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    _kill_descendants()
    if returncode is not None:
        _report(status_fd, returncode=returncode)
    os._exit(0)


def _report(status_fd: int, **message: object) -> None:
    with contextlib.suppress(OSError):
        os.write(status_fd, (json.dumps(message) + "\n").encode())


def _set_rlimits(config: dict) -> None:
    cpu = config["cpu_s"]
    limits = {
        resource.RLIMIT_CPU: (cpu, cpu + 1),  # SIGXCPU at the soft limit, SIGKILL at the hard one
        resource.RLIMIT_AS: (config["memory_bytes"],) * 2,
        resource.RLIMIT_FSIZE: (MAX_FILE_BYTES,) * 2,
        resource.RLIMIT_NPROC: (config["nproc"],) * 2,
        resource.RLIMIT_NOFILE: (MAX_OPEN_FILES,) * 2,
        resource.RLIMIT_CORE: (0, 0),
    }
    for which, (soft, hard) in limits.items():
        _old_soft, old_hard = resource.getrlimit(which)
        if old_hard != resource.RLIM_INFINITY:  # we may only lower a hard limit
            soft, hard = min(soft, old_hard), min(hard, old_hard)
        resource.setrlimit(which, (soft, hard))


def _kill_descendants() -> None:
    """SIGKILL our children and reap them; their orphans come to us (PID 1 / subreaper): repeat."""
    if os.getpid() == 1:  # init of our own PID namespace: -1 is every other process in it, all at once
        with contextlib.suppress(ProcessLookupError):
            os.kill(-1, signal.SIGKILL)
    for _round in range(10_000):
        table = _process_table()
        children = [pid for pid, (ppid, _rss) in table.items() if ppid == os.getpid()]
        if not children:
            return
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _process_table() -> dict[int, tuple[int, int]]:
    """{pid: (parent pid, resident bytes)} of every process visible in /proc."""
    page = os.sysconf("SC_PAGE_SIZE")
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as file:
                    fields = file.read().rsplit(b")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
                table[int(name)] = (int(fields[1]), int(fields[21]) * page)
            except (OSError, IndexError, ValueError):
                continue
    return table


def _descendant_memory(table: dict[int, tuple[int, int]], root: int) -> int:
    """Resident bytes of all descendants of `root` (pages shared after fork count in each process), plus the
    memfd files they have open (each file once; one also mapped counts twice)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _rss) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, memfds = 0, list(children.get(root, [])), set()
    while todo:
        pid = todo.pop()
        total += table[pid][1] + _memfd_bytes(pid, memfds)
        todo += children.get(pid, [])
    return total


def _memfd_bytes(pid: int, seen: set[tuple[int, int]]) -> int:
    """Bytes in RAM of the memfd files (memfd_create) open in `pid` and not yet in `seen`: RLIMIT_FSIZE caps
    each at MAX_FILE_BYTES, but RLIMIT_AS does not count them, and a process may hold MAX_OPEN_FILES."""
    total = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(entry.path).startswith("/memfd:"):
                    info = os.stat(entry.path)
                    if (info.st_dev, info.st_ino) not in seen:
                        seen.add((info.st_dev, info.st_ino))
                        total += info.st_blocks * 512
    return total


# Thin wrappers over Linux system calls that the stdlib does not offer.


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result == -1:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _prctl(option: int, value: int) -> None:
    _check(_libc().prctl(option, ctypes.c_ulong(value), 0, 0, 0), f"prctl({option})")


def _make_readonly(path: str) -> None:
    """mount_setattr(2) with AT_RECURSIVE: every mount under `path` read-only, in one call (Linux >= 5.12)."""
    attr = ctypes.create_string_buffer(struct.pack("QQQQ", MOUNT_ATTR_RDONLY, 0, 0, 0), 32)
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    args = (ctypes.c_long(AT_FDCWD), ctypes.c_char_p(path.encode()), ctypes.c_long(AT_RECURSIVE))
    _check(libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), *args, attr, ctypes.c_long(32)), "mount_setattr")


def _mount_tmpfs(path: str, options: str) -> None:
    _mount(b"tmpfs", path, b"tmpfs", MS_NOSUID | MS_NODEV, options)


def _mount(source: bytes, target: str, fstype: bytes | None, flags: int, options: str | None = None) -> None:
    data = options.encode() if options else None
    result = _libc().mount(source, target.encode(), fstype, ctypes.c_ulong(flags), data)
    _check(result, f"mount {source.decode()} on {target}")


def _bind_readonly(folder_fd: int, path: str) -> None:
    """Bind the folder of an O_PATH descriptor (opened before its path was hidden) back at `path`, read-only."""
    os.makedirs(path, mode=0o755, exist_ok=True)
    _mount(f"/proc/self/fd/{folder_fd}".encode(), path, None, MS_BIND | MS_REC)
    _make_readonly(path)


def _make_dev() -> bool:
    """Put a read-only tmpfs on /dev holding only DEV_NODES (bind mounts of the host's) and DEV_LINKS: the
    host's terminals, console, disks and kernel log are out of sight. Built aside, in our private /tmp, then
    moved over /dev in one step. Then a private /dev/shm, in any case. False when the new /dev failed."""
    staging = "/tmp/.loralab-dev"
    try:
        os.mkdir(staging)
        _mount(b"tmpfs", staging, b"tmpfs", MS_NOSUID, "size=64k,mode=755")
        for name in DEV_NODES:
            if os.path.exists(f"/dev/{name}"):
                open(os.path.join(staging, name), "w").close()
                _mount(f"/dev/{name}".encode(), os.path.join(staging, name), None, MS_BIND)
        for name, target in DEV_LINKS.items():
            os.symlink(target, os.path.join(staging, name))
        os.mkdir(os.path.join(staging, "shm"))
        _mount(staging.encode(), "/dev", None, MS_MOVE)
        os.rmdir(staging)
        _make_readonly("/dev")
        made = True
    except OSError:
        made = False
    if os.path.isdir("/dev/shm"):
        _mount_tmpfs("/dev/shm", DEV_SHM)
    return made


def _forbid_user_namespaces() -> bool:
    """max_user_namespaces = 0 in our user namespace (its own copy of the setting): a program that could make
    one would have every capability in it (mounts of unbounded tmpfs, say). False where it cannot be set."""
    try:
        with open("/proc/sys/user/max_user_namespaces", "w") as file:
            file.write("0")
    except OSError:
        return False
    return True


def _cap_pids() -> bool:
    """Lower pid_max of our PID namespace. Only Linux >= 6.14 has one per namespace: on older kernels the file
    is the machine's, so we leave it alone."""
    try:
        major, minor = (int(part) for part in os.uname().release.split(".")[:2])
    except ValueError:
        return False
    if (major, minor) < (6, 14) or os.getpid() != 1:  # only as init of our own PID namespace
        return False
    try:
        with open("/proc/sys/kernel/pid_max", "w") as file:
            file.write(str(PID_NS_MAX))
    except OSError:
        return False
    return True


def _drop_capabilities() -> None:
    """Empty the bounding and ambient sets, then all current ones: after exec the program has none, even as
    uid 0. Without CAP_SETPCAP (no user namespace, not root) there is nothing to drop."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as file:
            last = int(file.read())
    except (OSError, ValueError):
        last = 63
    libc = _libc()
    for cap in range(last + 1):
        libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0)  # fails harmlessly without CAP_SETPCAP
    libc.prctl(PR_CAP_AMBIENT, ctypes.c_ulong(PR_CAP_AMBIENT_CLEAR_ALL), 0, 0, 0)
    header = ctypes.create_string_buffer(struct.pack("Ii", LINUX_CAPABILITY_VERSION_3, 0), 8)
    data = ctypes.create_string_buffer(24)  # effective, permitted, inheritable (x2 words): all zero
    _check(libc.capset(header, data), "capset")


if __name__ == "__main__":
    _launch(json.loads(sys.argv[1]))
