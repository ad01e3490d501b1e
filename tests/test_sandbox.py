"""loralab.sandbox: benign programs give exact results; hostile ones are contained, and the sandbox still works.

Most tests run twice: with the namespaces this machine offers, and in the rlimits-only fallback (forced), which
must still contain what it claims to. Tests that need namespaces are skipped, with the reason, without them.
"""

import os
import resource
import select
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from loralab import sandbox
from loralab.sandbox import MAX_OUTPUT_BYTES, run_code

NAMESPACES = "namespaces"
FALLBACK = "rlimits-only"


@pytest.fixture(params=[NAMESPACES, FALLBACK])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with namespaces (skipped where there are none) and with the fallback forced."""
    if request.param == NAMESPACES:
        _require_namespaces()
    else:
        monkeypatch.setattr(
            sandbox, "_probe", lambda: sandbox.Isolation(False, "rlimits only (forced by test)")
        )
    return request.param


def _require_namespaces() -> None:
    if not sandbox._probe().namespaces:
        pytest.skip(f"needs user namespaces; this machine has: {sandbox.isolation()}")


@pytest.fixture
def listener():
    """A TCP server on 127.0.0.1 that the sandboxed program tries to reach."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server
    server.close()


def got_connection(server: socket.socket) -> bool:
    readable, _, _ = select.select([server], [], [], 0.2)
    return bool(readable)


def program(source: str, **values: object) -> str:
    """Dedent `source` and fill in {name} placeholders with repr(value)."""
    return textwrap.dedent(source).format(**{name: repr(value) for name, value in values.items()})


def assert_still_works() -> None:
    result = run_code("print(6 * 7)")
    assert (result.status, result.stdout, result.returncode) == ("ok", "42\n", 0), result


def processes_in(directory: str) -> list[int]:
    """PIDs of live processes whose working directory is `directory` (the sandbox's)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.readlink(f"/proc/{name}/cwd") == directory:
                    found.append(int(name))
            except OSError:
                continue
    return found


def test_isolation_is_described_once():
    description = sandbox.isolation()
    assert description and description is sandbox.isolation()
    if sandbox._probe().namespaces:
        assert description.startswith("user+pid+net+mount namespaces")


def test_falls_back_when_namespaces_fail(monkeypatch):
    monkeypatch.setattr(sandbox, "UNSHARE_FLAGS", (*sandbox.UNSHARE_FLAGS, "--no-such-option"))
    fallback = sandbox._detect()
    assert not fallback.namespaces
    assert "NO namespaces" in fallback.description and "sandbox did not start" in fallback.description


def test_prints_and_exits_ok(mode):
    result = run_code(
        program("""
        print("hello")
        print(sum(range(10)))
        """)
    )
    assert result.status == "ok", result
    assert (result.stdout, result.stderr, result.returncode, result.truncated) == (
        "hello\n45\n",
        "",
        0,
        False,
    )
    assert 0 < result.duration_s < 5


def test_failing_assert_is_an_error(mode):
    result = run_code("def add(a, b):\n    return a - b\n\nassert add(2, 2) == 4, 'add is wrong'\n")
    assert (result.status, result.returncode) == ("error", 1), result
    assert "AssertionError: add is wrong" in result.stderr


@pytest.mark.parametrize(
    "source", ["while True:\n    pass\n", "import time\ntime.sleep(60)\n"], ids=["busy", "sleep"]
)
def test_infinite_loop_times_out(mode, source):
    result = run_code(source, timeout_s=0.5)
    assert (result.status, result.returncode) == ("timeout", None), result
    assert 0.5 <= result.duration_s < 1.5
    assert_still_works()


def test_memory_bomb_is_stopped(mode):
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = run_code(
        program("""
        chunks = []
        while True:
            chunks.append(bytearray(50 * 2**20))
        """),
        timeout_s=10.0,
        memory_mb=256,
    )
    assert result.status in ("error", "killed"), result
    if result.status == "error":
        assert "MemoryError" in result.stderr
    assert result.duration_s < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 50_000  # KiB: parent unaffected
    assert_still_works()


def test_memory_spread_over_processes_is_stopped(mode):
    """Each process stays under RLIMIT_AS, but together they exceed the limit: the launcher stops them."""
    result = run_code(
        program("""
        import os, time
        for _ in range(8):
            if os.fork() == 0:
                block = bytearray(os.urandom(1024)) * (80 * 1024)  # 80 MiB, really in memory
                time.sleep(30)
                os._exit(0)
        time.sleep(30)
        """),
        timeout_s=10.0,
        memory_mb=200,
    )
    assert (result.status, result.returncode) == ("killed", -9), result
    assert "together" in result.stderr
    assert result.duration_s < 5
    assert_still_works()


def test_fork_bomb_is_contained(mode):
    if os.getuid() == 0 and (mode == FALLBACK or "pid_max" not in sandbox.isolation()):
        pytest.skip(
            "as root, only a per-namespace pid_max (Linux >= 6.14) limits processes; RLIMIT_NPROC does not"
        )
    result = run_code(
        program("""
        import os
        print(os.getcwd(), flush=True)
        while True:
            try:
                os.fork()
            except OSError:
                pass
        """),
        timeout_s=1.5,
    )
    assert result.status in ("timeout", "killed"), result
    assert result.duration_s < 5
    workdir = result.stdout.splitlines()[0]
    assert processes_in(workdir) == []
    assert (
        subprocess.run([sys.executable, "-c", "print('forked')"], capture_output=True, text=True).stdout
        == "forked\n"
    )
    assert_still_works()


@pytest.fixture(params=["tmp", "home"])
def victim_dir(request: pytest.FixtureRequest, tmp_path: Path):
    """A real directory with a file: under /tmp (hidden by the private /tmp) and under $HOME (read-only)."""
    if request.param == "tmp":
        yield tmp_path
        return
    try:
        directory = Path(tempfile.mkdtemp(prefix=".loralab-sandbox-test-", dir=Path.home()))
    except OSError as exc:
        pytest.skip(f"cannot create a directory in the home directory: {exc}")
    yield directory
    for child in directory.iterdir():
        child.unlink()
    directory.rmdir()


def test_cannot_change_files_outside_its_directory(victim_dir):
    _require_namespaces()
    target = victim_dir / "precious.txt"
    target.write_text("precious data\n")
    before = sorted(os.listdir(victim_dir)), target.stat().st_mode, target.stat().st_mtime_ns
    result = run_code(
        program(
            """
        import ctypes, os, shutil, struct
        target, directory = {target}, {directory}
        attempts = [
            lambda: os.remove(target),
            lambda: open(target, "w").write("overwritten"),
            lambda: open(target, "a").write("appended"),
            lambda: os.chmod(target, 0o777),
            lambda: os.rename(target, target + ".moved"),
            lambda: open(os.path.join(directory, "new.txt"), "w").write("new"),
            lambda: shutil.rmtree(directory),
        ]
        for attempt in attempts:
            try:
                attempt()
                print("SUCCEEDED")
            except OSError as exc:
                print("blocked:", exc)
        # as root of its user namespace, try to make the filesystem writable again
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        attr = ctypes.create_string_buffer(struct.pack("QQQQ", 0, 1, 0, 0), 32)  # clear MOUNT_ATTR_RDONLY
        print("mount_setattr", libc.syscall(442, -100, b"/", 0, attr, 32))
        print("remount", libc.mount(None, b"/", None, ctypes.c_ulong(32 | 4096), None))  # MS_REMOUNT|MS_BIND
        try:
            open(target, "w").write("overwritten")
            print("SUCCEEDED")
        except OSError as exc:
            print("blocked:", exc)
        """,
            target=str(target),
            directory=str(victim_dir),
        )
    )
    assert result.status == "ok", result
    assert "SUCCEEDED" not in result.stdout
    assert "mount_setattr -1" in result.stdout and "remount -1" in result.stdout
    assert target.read_text() == "precious data\n"
    assert (sorted(os.listdir(victim_dir)), target.stat().st_mode, target.stat().st_mtime_ns) == before
    assert_still_works()


def test_no_network_even_to_localhost(listener):
    _require_namespaces()
    port = listener.getsockname()[1]
    result = run_code(
        program(
            """
        import socket
        for family, address in [(socket.AF_INET, ("127.0.0.1", {port})), (socket.AF_INET6, ("::1", {port}))]:
            try:
                socket.socket(family).connect(address)
                print("CONNECTED")
            except OSError as exc:
                print("blocked:", exc)
        """,
            port=port,
        )
    )
    assert result.status == "ok", result
    assert "CONNECTED" not in result.stdout and result.stdout.count("blocked") == 2
    assert not got_connection(listener)
    assert_still_works()


def test_parent_environment_is_not_visible(mode, monkeypatch):
    secret = "loralab-secret-7c1e9f"
    monkeypatch.setenv("LORALAB_TEST_SECRET", secret)
    result = run_code(
        program(
            """
        import os
        print(dict(os.environ))
        for path in ["/proc/self/environ", f"/proc/{{os.getppid()}}/environ", "/proc/1/environ",
                     f"/proc/{test_pid}/environ"]:
            try:
                print(path, open(path, "rb").read())
            except OSError as exc:
                print(path, "unreadable:", exc)
        print("HOME", os.environ["HOME"] == os.getcwd() == os.environ["TMPDIR"])
        """,
            test_pid=os.getpid(),
        )
    )
    assert result.status == "ok", result
    assert secret not in result.stdout + result.stderr
    assert "HOME True" in result.stdout
    assert "LORALAB_TEST_SECRET" not in result.stdout


def test_cannot_kill_its_parent_or_the_caller():
    _require_namespaces()
    test_pid = os.getpid()
    result = run_code(
        program(
            """
        import os, signal, time
        test_pid = {test_pid}
        print("parent", os.getppid())
        for pid in (os.getppid(), test_pid):
            try:
                os.kill(pid, signal.SIGKILL)
                print("sent", pid)
            except OSError as exc:
                print("refused", pid, exc)
        helper = os.fork()
        if helper == 0:
            time.sleep(30)
            os._exit(0)
        # kill(-1) signals every process we may signal: only run when the caller is invisible to us
        if os.getppid() == 1 and not os.path.exists(f"/proc/{{test_pid}}"):
            os.kill(-1, signal.SIGKILL)
            print("killed all:", os.waitpid(helper, 0)[1] == signal.SIGKILL)
        print("visible", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
        """,
            test_pid=test_pid,
        )
    )
    assert result.status == "ok", result
    assert "parent 1\n" in result.stdout and f"refused {test_pid}" in result.stdout
    assert "killed all: True" in result.stdout
    assert os.getpid() == test_pid  # we are still here
    assert_still_works()


def test_huge_output_is_truncated_promptly(mode):
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = run_code(
        program("""
        import sys
        chunk = "x" * 65536
        print("start", file=sys.stderr, flush=True)
        while True:
            sys.stdout.write(chunk)
        """),
        timeout_s=30.0,
    )
    assert (result.status, result.truncated) == ("killed", True), result
    assert result.stdout == "x" * MAX_OUTPUT_BYTES
    assert result.stderr == "start\n"
    assert result.duration_s < 3
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 50_000  # KiB
    assert_still_works()


def test_big_file_is_stopped(mode):
    result = run_code(
        program("""
        with open("big.bin", "wb") as file:
            for _ in range(200):
                file.write(bytes(2**20))
        """)
    )
    assert (result.status, result.returncode) == ("error", 1), result
    assert "File too large" in result.stderr  # RLIMIT_FSIZE
    assert_still_works()


def test_many_files_only_fill_the_private_tmpfs():
    _require_namespaces()
    result = run_code(
        program("""
        for i in range(10):
            with open(f"file{{i}}.bin", "wb") as file:
                file.write(bytes(15 * 2**20))
        """)
    )
    assert (result.status, result.returncode) == ("error", 1), result
    assert "No space left on device" in result.stderr  # the size of the private /tmp
    assert_still_works()


def test_double_forked_daemon_is_killed_when_the_run_ends(mode, tmp_path, listener):
    port = listener.getsockname()[1]
    marker = tmp_path / "daemon-was-here"
    result = run_code(
        program(
            """
        import os, socket, time
        print(os.getcwd(), flush=True)
        main = os.getpid()
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                while os.path.exists(f"/proc/{{main}}"):  # act only once the program has ended
                    time.sleep(0.02)
                time.sleep(0.3)
                for action in (lambda: open({marker}, "w").write("alive"),
                               lambda: socket.create_connection(("127.0.0.1", {port}), timeout=1)):
                    try:
                        action()
                    except OSError:
                        pass
            os._exit(0)
        os.wait()
        print("parent exits")
        """,
            marker=str(marker),
            port=port,
        )
    )
    assert result.status == "ok", result
    workdir = result.stdout.splitlines()[0]
    assert processes_in(workdir) == []
    time.sleep(1.5)  # a live daemon would act 0.3 s after the program ended
    assert not marker.exists()
    assert not got_connection(listener)


def test_work_directory_is_fresh_and_removed(mode):
    result = run_code(
        program("""
        import os
        print(os.getcwd())
        print(sorted(os.listdir(".")))
        os.makedirs("sub/deeper")
        open("sub/deeper/file.txt", "w").write("data")
        os.symlink("/etc", "sub/link")
        os.chmod("sub/deeper", 0)
        os.chmod("sub", 0o500)
        """)
    )
    assert result.status == "ok", result
    workdir, listing = result.stdout.splitlines()
    assert os.path.basename(workdir).startswith("loralab-sandbox-")
    assert listing == "['program.py']"
    assert not os.path.exists(workdir)
    assert os.path.isdir("/etc")


def test_two_threads_run_concurrently(mode):
    source = "import time\ntime.sleep(0.5)\nprint({n} * 2)\n"
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda n: run_code(source.format(n=n)), [20, 21]))
    assert [(r.status, r.stdout) for r in results] == [("ok", "40\n"), ("ok", "42\n")], results


def test_stays_usable_after_a_run_is_interrupted_from_another_thread(mode):
    """A timeout in one thread does not disturb a benign run in another."""
    results: dict[str, sandbox.ExecResult] = {}
    slow = threading.Thread(
        target=lambda: results.setdefault("slow", run_code("while True: pass", timeout_s=0.5))
    )
    slow.start()
    results["fast"] = run_code("print('fast')")
    slow.join()
    assert results["fast"].stdout == "fast\n" and results["slow"].status == "timeout"
