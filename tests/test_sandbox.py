"""loralab.evaluation.sandbox.supervisor: benign programs give exact results; hostile ones are contained, and the sandbox still works.

Most tests run twice: with the namespaces this machine offers, and in the rlimits-only fallback (forced, and
accepted with isolation="rlimits-only"), which must still contain what it claims to. Tests that need namespaces
are skipped, with the reason, without them; with LORALAB_TEST_REQUIRE_NAMESPACES=1 they fail instead (as
tests/test_sandbox_venvs.py runs this file from virtual environments under /tmp).
"""

import ast
import functools
import json
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

from loralab.evaluation.sandbox import launcher, machine
from loralab.evaluation.sandbox import supervisor as sandbox
from loralab.evaluation.sandbox.supervisor import MAX_OUTPUT_BYTES, run_code

NAMESPACES = "namespaces"
FALLBACK = "rlimits-only"


@pytest.fixture(params=[NAMESPACES, FALLBACK])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with namespaces (skipped where there are none) and with the fallback forced, its risk
    accepted by the tests' run_code."""
    if request.param == NAMESPACES:
        _require_namespaces()
    else:
        monkeypatch.setattr(sandbox, "_probe", lambda: FORCED_FALLBACK)
        monkeypatch.setitem(globals(), "run_code", functools.partial(sandbox.run_code, isolation=FALLBACK))
    return request.param


FORCED_FALLBACK = sandbox.Isolation(False, "rlimits only (forced by test)", reason="forced by test")


def _require_namespaces() -> None:
    if not sandbox._probe().namespaces:
        message = f"needs user namespaces; this machine has: {sandbox.isolation()}"
        if os.environ.get("LORALAB_TEST_REQUIRE_NAMESPACES") == "1":
            pytest.fail(message)
        pytest.skip(message)


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
        assert "user+pid+net+ipc+mount namespaces via unshare" in description
        assert "NO namespaces" not in description


def test_falls_back_when_namespaces_fail(monkeypatch):
    monkeypatch.setattr(sandbox, "UNSHARE_FLAGS", (*sandbox.UNSHARE_FLAGS, "--no-such-option"))
    fallback = sandbox._detect()
    assert not fallback.namespaces
    assert "NO namespaces" in fallback.description and "sandbox did not start" in fallback.description
    assert any(item.startswith("file protection") for item in fallback.missing)


def print_isolation(capsys: pytest.CaptureFixture, exit_code: int = 0) -> list[str]:
    from loralab.cli import main

    assert main(["sandbox"]) == exit_code
    return capsys.readouterr().out.splitlines()


def test_cli_prints_each_layer_and_each_missing_protection(capsys):
    active, missing = sandbox.isolation_layers()
    lines = print_isolation(capsys)
    assert lines[1:] == [f"  active:  {layer}" for layer in active] + [
        f"  missing: {item}" for item in missing or ["nothing"]
    ]
    assert any("rlimits" in line for line in lines)


def test_cli_says_what_the_fallback_lacks(monkeypatch, capsys):
    monkeypatch.setattr(sandbox, "UNSHARE_FLAGS", (*sandbox.UNSHARE_FLAGS, "--no-such-option"))
    fallback = sandbox._detect()
    monkeypatch.setattr(sandbox, "_probe", lambda: fallback)
    lines = print_isolation(capsys, exit_code=1)
    assert any(line.startswith("  missing: namespaces (") for line in lines), lines
    assert any(line.startswith("  missing: file protection") for line in lines), lines
    assert not any("namespaces via unshare" in line for line in lines)
    assert lines[-2] == f"code evaluation refuses to run here. To get the namespaces: {fallback.how_to_fix}"
    assert "code_eval_isolation" in lines[-1] and "rlimits-only" in lines[-1]


def test_refuses_to_run_anything_without_namespaces(monkeypatch, tmp_path):
    """The default demands namespaces: where they fail, nothing runs, and the one-line error says what is
    missing, why, how to get it and how to accept the risk; isolation="rlimits-only" runs the program."""
    monkeypatch.setattr(sandbox, "UNSHARE_FLAGS", (*sandbox.UNSHARE_FLAGS, "--no-such-option"))
    fallback = sandbox._detect()
    monkeypatch.setattr(sandbox, "_probe", lambda: fallback)
    marker = tmp_path / "ran"
    source = f"open({str(marker)!r}, 'w').close()"
    with pytest.raises(sandbox.SandboxUnavailable) as refused:
        run_code(source)
    message = str(refused.value)
    assert "\n" not in message and not marker.exists()
    assert "namespaces cannot be set up here (sandbox did not start" in message, message
    assert f"To get them: {fallback.how_to_fix}." in message
    assert message.endswith('run_code(..., isolation="rlimits-only")')
    assert run_code(source, isolation=FALLBACK).status == "ok" and marker.exists()  # unprotected: it could
    with pytest.raises(ValueError, match="isolation must be one of namespaces, rlimits-only"):
        run_code("pass", isolation="none")


def test_says_which_setting_forbids_namespaces(monkeypatch, tmp_path):
    setting, container = tmp_path / "max_user_namespaces", tmp_path / ".dockerenv"
    setting.write_text("0\n")
    monkeypatch.setattr(machine, "USERNS_SETTINGS", {str(setting): ("0", "raise the setting")})
    monkeypatch.setattr(machine, "CONTAINER_MARKERS", (str(container),))
    assert machine._how_to_get_namespaces() == "raise the setting"
    container.touch()
    assert machine._how_to_get_namespaces() == f"raise the setting; {machine.CONTAINER_FIX}"
    setting.write_text("15000\n")
    assert machine._how_to_get_namespaces() == machine.CONTAINER_FIX
    container.unlink()
    assert "user.max_user_namespaces > 0" in machine._how_to_get_namespaces()
    monkeypatch.setenv("PATH", str(tmp_path))  # no `unshare`
    assert machine._how_to_get_namespaces().startswith("install util-linux")


def test_python_directly_in_a_hidden_folder_is_refused(monkeypatch):
    monkeypatch.setattr(sys, "prefix", "/tmp")
    with pytest.raises(sandbox.SandboxError, match="Python lives directly in /tmp"):
        sandbox._interpreter()


def test_launcher_imports_only_the_standard_library():
    """launcher.py runs as `python -I -S launcher.py CONFIG` from wherever Python lives: nothing else is there."""
    tree = ast.parse(Path(launcher.__file__).read_text())
    imports = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = {alias.name for node in imports if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module or "" for node in imports if isinstance(node, ast.ImportFrom)}
    assert not any(isinstance(node, ast.ImportFrom) and node.level for node in imports)
    assert {name.split(".")[0] for name in names} <= sys.stdlib_module_names, names


def test_code_eval_logs_the_isolation_when_it_starts(capsys):
    from loralab.evaluation.code_eval import execute

    assert execute([["assert 1 + 1 == 2"]], progress=False)["pass@1"] == 1.0
    assert f"loralab: sandbox: {sandbox.isolation()}\n" in capsys.readouterr().err


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


def precious_file(victim_dir):
    """A file outside the sandbox for a program to attack, and the state it must keep."""
    target = victim_dir / "precious.txt"
    target.write_text("precious data\n")
    return target, victim_state(target)


def victim_state(target):
    """The victim folder's listing and the file's contents, mode and mtime."""
    info = target.stat()
    return sorted(os.listdir(target.parent)), target.read_text(), info.st_mode, info.st_mtime_ns


def test_cannot_change_files_outside_its_directory(victim_dir):
    _require_namespaces()
    target, before = precious_file(victim_dir)
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
    assert victim_state(target) == before
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


# ----------------------------------------------------------------------------------------------------------
# Hostile programs that attack the sandbox itself: its limits, its output bound, its work directory.

RAISE_LIMITS = """
import resource
for name in ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_NPROC", "RLIMIT_NOFILE"):
    which = getattr(resource, name)
    _soft, hard = resource.getrlimit(which)
    resource.setrlimit(which, (hard, hard))  # soft up to hard: allowed
    try:
        resource.setrlimit(which, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        print("RAISED", name)
    except (OSError, ValueError):
        pass
print("limits done", flush=True)
"""

MISBEHAVIOURS = {
    "cpu": "while True:\n    pass\n",
    "memory": "chunks = [bytearray(50 * 2**20) for _ in range(8)]\nprint('ALLOCATED')\n",
    "file": "with open('big.bin', 'wb') as file:\n    for _ in range(32):\n        file.write(bytes(2**20))\n"
    "print('WRITTEN')\n",
}


@pytest.mark.parametrize("misbehaviour", MISBEHAVIOURS)
def test_raising_its_own_limits_gains_nothing(mode, misbehaviour):
    result = run_code(RAISE_LIMITS + MISBEHAVIOURS[misbehaviour], timeout_s=1.0, memory_mb=256)
    assert "limits done" in result.stdout and "RAISED" not in result.stdout, result
    expected = {
        "cpu": ("timeout",),
        "memory": ("error", "killed"),  # MemoryError at RLIMIT_AS, or the launcher's total
        "file": ("error",),
    }[misbehaviour]
    assert result.status in expected, result
    assert "ALLOCATED" not in result.stdout and "WRITTEN" not in result.stdout
    if misbehaviour == "file":
        assert "File too large" in result.stderr
    assert result.duration_s < 3


LAUNCHER_ATTACKS = {
    "kill": "os.kill(os.getppid(), signal.SIGKILL)",
    "stop": "os.kill(os.getppid(), signal.SIGSTOP)",
    "cripple": "resource.prlimit(os.getppid(), resource.RLIMIT_NOFILE, (3, 3))",
}


@pytest.mark.parametrize("attack", LAUNCHER_ATTACKS)
def test_attacking_the_launcher_does_not_escape_the_deadline(mode, attack):
    """The program kills, stops or cripples (prlimit) the launcher, tries to ptrace it, then runs on."""
    result = run_code(
        program(
            """
        import ctypes, os, resource, signal, time
        print(os.getcwd(), flush=True)
        libc = ctypes.CDLL(None, use_errno=True)
        print("ptrace", libc.ptrace(16, os.getppid(), 0, 0), flush=True)  # PTRACE_ATTACH
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        try:
            {attack}
        except OSError as exc:
            print("refused:", exc, flush=True)
        while True:
            pass
        """.replace("{attack}", LAUNCHER_ATTACKS[attack])
        ),
        timeout_s=0.5,
    )
    assert result.status in ("timeout", "killed"), result
    assert "ptrace -1" in result.stdout
    assert result.duration_s < 0.5 + sandbox.STOP_GRACE_S + 1.0  # a stopped launcher needs the SIGKILL
    assert processes_in(result.stdout.splitlines()[0]) == []
    assert_still_works()


def test_cannot_change_kernel_settings_or_nest_namespaces():
    """Writes only the value it read (harmless if it got through) to sysctls and /proc files."""
    _require_namespaces()
    result = run_code(
        program("""
        import ctypes, os
        for path in ("/proc/sys/kernel/pid_max", "/proc/sys/user/max_user_namespaces",
                     "/proc/self/oom_score_adj", "/proc/1/oom_score_adj"):
            try:
                value = open(path).read()
                with open(path, "w") as file:
                    file.write(value)
                print("WROTE", path)
            except OSError as exc:
                print("blocked:", path, exc)
        libc = ctypes.CDLL(None, use_errno=True)
        for name, flag in [("user", 0x10000000), ("mount", 0x20000), ("pid", 0x20000000), ("net", 0x40000000)]:
            if libc.unshare(flag) == 0:
                print("UNSHARED", name)
            else:
                print("blocked:", name, os.strerror(ctypes.get_errno()))
        """)
    )
    assert result.status == "ok", result
    assert "WROTE" not in result.stdout and "UNSHARED" not in result.stdout, result.stdout
    assert result.stdout.count("blocked:") == 8


CALLER = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from loralab.evaluation.sandbox import supervisor as sandbox
if sys.argv[2] == "rlimits-only":
    sandbox._probe = lambda: sandbox.Isolation(False, "forced")
program = sys.stdin.read().replace("CALLER_PID", str(os.getpid()))
result = sandbox.run_code(program, timeout_s=5.0, isolation=sys.argv[2])
print(json.dumps({"status": result.status, "truncated": result.truncated, "stdout": result.stdout,
                  "stderr": result.stderr}))
"""

WRITE_EVERYWHERE = """
import os
def opener(path):
    return lambda: os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
vectors = {
    "fd1": lambda: 1, "fd2": lambda: 2, "dup1": lambda: os.dup(1), "dup2": lambda: os.dup(2),
    **{path: opener(path) for path in ("/proc/self/fd/1", "/proc/self/fd/2", "/dev/stdout", "/dev/stderr",
                                       "/dev/tty", f"/proc/{os.getppid()}/fd/1", f"/proc/{os.getppid()}/fd/2")},
}
if REACH_CALLER:
    vectors.update({path: opener(path) for path in ("/proc/CALLER_PID/fd/1", "/proc/CALLER_PID/fd/2")})
for fd in range(3, 1024):  # anything inherited besides 0, 1, 2
    try:
        os.fstat(fd)
        vectors[f"inherited{fd}"] = lambda fd=fd: fd
    except OSError:
        pass
for name, get in vectors.items():
    try:
        os.write(get(), f"[LEAK {name}]".encode() * 100)
    except OSError as exc:
        print("blocked", name, exc.errno, flush=True)
while True:
    os.write(1, b"y" * 2**20)
"""


def test_output_reaches_the_caller_only_through_the_bounded_pipes(mode):
    """A caller process runs a program that writes megabytes by every route to any stdout or stderr: the
    caller's own stdout and stderr get nothing, the result keeps at most MAX_OUTPUT_BYTES of each."""
    source = WRITE_EVERYWHERE.replace("REACH_CALLER", str(mode == NAMESPACES))  # fallback: caller reachable
    caller = subprocess.run(
        [sys.executable, "-c", CALLER, str(Path(sandbox.__file__).parents[3]), mode],
        input=source,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert caller.stderr == "" and caller.stdout.count("\n") == 1, caller.stderr[-2000:]
    result = json.loads(caller.stdout)
    assert (result["status"], result["truncated"]) == ("killed", True), result
    assert len(result["stdout"]) <= MAX_OUTPUT_BYTES and len(result["stderr"]) <= MAX_OUTPUT_BYTES
    assert "inherited" not in result["stdout"] + result["stderr"]
    if mode == NAMESPACES:  # the launcher's fds (not dumpable) and the caller's (another PID namespace)
        assert result["stdout"].count("blocked /proc/") == 4, result["stdout"][:2000]


def test_inherits_only_stdin_stdout_stderr(mode):
    result = run_code(
        program("""
        import os
        print("stdin", os.read(0, 100))
        found = []
        for fd in range(3, 1024):
            try:
                os.fstat(fd)
                found.append(fd)
            except OSError:
                pass
        print("open", found)
        """)
    )
    assert result.stdout == "stdin b''\nopen []\n", result


DEVICES = {"null", "zero", "full", "random", "urandom", "tty", "shm", "fd", "stdin", "stdout", "stderr"}


def test_sees_no_terminals_or_devices_but_the_harmless_ones():
    """The host's /dev holds the user's terminals (and, for root, the console and the kernel log): a program
    must not open them, not even our own pty. It only opens, never writes, so a failure harms nothing."""
    _require_namespaces()
    master, slave = os.openpty()
    try:
        result = run_code(
            program(
                """
            import os
            print(sorted(os.listdir("/dev")))
            for path in [{pty}, "/dev/console", "/dev/kmsg", "/dev/tty0", "/dev/tty1", "/dev/loop0", "/dev/ptmx"]:
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK))
                    print("OPENED", path)
                except OSError as exc:
                    print("blocked:", path, exc.strerror)
            with open("/dev/null", "w") as null, open("/dev/urandom", "rb") as urandom:
                print("works", null.write("x"), len(urandom.read(4)))
            """,
                pty=os.ttyname(slave),
            )
        )
    finally:
        os.close(master)
        os.close(slave)
    assert result.status == "ok", result
    listing, *attempts, works = result.stdout.splitlines()
    assert set(eval(listing)) <= DEVICES, listing
    assert not [line for line in attempts if "OPENED" in line], attempts
    assert works == "works 1 4"


def test_links_cannot_reach_outside_its_directory(victim_dir):
    """Symlinks (also via /proc/<pid>/root) and hard links to a file outside: writing through them fails."""
    _require_namespaces()
    target, before = precious_file(victim_dir)
    result = run_code(
        program(
            """
        import os
        target, directory, test_pid = {target}, {directory}, {test_pid}
        links = {{"link": target, "dirlink": directory, "root1": f"/proc/1/root{{target}}",
                  "rootparent": f"/proc/{{os.getppid()}}/root{{target}}", "roottest": f"/proc/{{test_pid}}/root{{target}}",
                  "rootself": f"/proc/self/root{{target}}"}}
        for name, destination in links.items():
            os.symlink(destination, name)
        try:
            os.link(target, "hard")
            print("LINKED")
        except OSError as exc:
            print("blocked: link", exc.strerror)
        for path in ["link", "dirlink/precious.txt", "dirlink/new.txt", "root1", "rootparent", "roottest",
                     "rootself"]:
            try:
                with open(path, "a") as file:
                    file.write("changed")
                print("WROTE", path)
            except OSError as exc:
                print("blocked:", path, exc.strerror)
        """,
            target=str(target),
            directory=str(victim_dir),
            test_pid=os.getpid(),
        )
    )
    assert result.status == "ok", result
    assert "WROTE" not in result.stdout and "LINKED" not in result.stdout, result.stdout
    assert result.stdout.count("blocked:") == 8
    assert victim_state(target) == before


CLEANUP_TRICKS = {
    # links in the work dir to the victim, under a directory it then locks (mode 000)
    "links": """
os.symlink(victim, "dirlink")
os.symlink(victim + "/precious.txt", "filelink")
os.makedirs("locked/deeper")
os.symlink(victim, "locked/deeper/dirlink")
os.chmod("locked/deeper", 0)
os.chmod("locked", 0)
os.chmod(".", 0)
""",
    # the work dir moved away (and locked) and replaced by a symlink to the victim
    "swap": """
os.chdir("/")
os.rename(workdir, workdir + ".moved")
os.chmod(workdir + ".moved", 0)
os.symlink(victim, workdir)
""",
}


@pytest.mark.parametrize("trick", CLEANUP_TRICKS)
def test_cleanup_does_not_follow_links_out_of_its_directory(mode, trick, tmp_path):
    """The supervisor deletes the work directory; a program that plants links or replaces the directory with
    a symlink must not make it change or delete anything outside, nor leave the work directory behind."""
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "precious.txt").write_text("precious data\n")
    victim.chmod(0o755)
    (victim / "sub").chmod(0o750)

    def state() -> list:
        return sorted((str(p), p.stat().st_mode, p.stat().st_mtime_ns) for p in [victim, *victim.rglob("*")])

    before = state()
    source = "import os\nworkdir = os.getcwd()\nprint(workdir, flush=True)\n"
    source += f"victim = {str(victim)!r}\n" + CLEANUP_TRICKS[trick]
    result = run_code(source + "print('done')\n")
    assert result.status == "ok" and result.stdout.endswith("done\n"), result
    workdir = result.stdout.splitlines()[0]
    assert state() == before
    assert (victim / "precious.txt").read_text() == "precious data\n"
    assert not os.path.lexists(workdir) and not os.path.lexists(workdir + ".moved")
    assert_still_works()


def test_memory_in_memfd_files_counts(mode):
    """memfd files hold RAM that RLIMIT_AS does not see (RLIMIT_FSIZE caps each file, not their number)."""
    result = run_code(
        program("""
        import os, time
        files = []
        for i in range(10):
            files.append(os.memfd_create(f"block{{i}}"))
            for _ in range(15):
                os.write(files[-1], b"x" * 2**20)
        print("HELD", flush=True)
        time.sleep(2)
        """),
        timeout_s=10.0,
        memory_mb=100,
    )
    assert (result.status, result.returncode) == ("killed", -9), result
    assert "together" in result.stderr
    assert result.duration_s < 5


def test_shared_memory_does_not_outlive_the_run():
    """A SysV shared memory segment is not freed when its creator exits: it must die with the IPC namespace."""
    _require_namespaces()
    key = 0x10A0000 + os.getpid() % 0xFFFF
    result = run_code(
        program(
            """
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        print("shmget", libc.shmget({key}, 2**20, 0o1000 | 0o600) >= 0)  # IPC_CREAT
        """,
            key=key,
        )
    )
    assert result.stdout == "shmget True\n", result
    keys = [line.split()[0] for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]]
    assert str(key) not in keys
