"""What isolation this machine gives run_code, in words: the layers in force and the protections missing (the
text of isolation() and of `loralab sandbox`) and, where the namespaces fail, what would give them here.
supervisor.py finds out with a test run (_detect) and builds its answer with with_namespaces or
without_namespaces."""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import NamedTuple


class Isolation(NamedTuple):
    """What _probe found: whether the namespaces work here, the text of isolation(), the layers in force and
    the protections missing on this machine; without namespaces, why not and what would give them."""

    namespaces: bool
    description: str
    active: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    reason: str = ""
    how_to_fix: str = ""


# What the launcher gives the program in every case (launcher._exec_program).
COMMON_LAYERS = ("rlimits (CPU, memory, file size, processes, open files)", "no capabilities", "scrubbed env")


def with_namespaces(layers: list[str]) -> Isolation:
    """The namespaces work: they, the layers the launcher reported from the test run, and what it lacks."""
    return _isolation(
        True,
        ["user+pid+net+ipc+mount namespaces via unshare", *layers, *COMMON_LAYERS],
        _missing_in_namespaces(layers, os.getuid() == 0),
    )


def without_namespaces(reason: str) -> Isolation:
    """The namespaces failed (`reason`): rlimits only, what that lacks, and how to get the namespaces."""
    missing = [
        f"namespaces ({reason})",
        "file protection: the program can read and write the user's files",
        "network isolation",
        "process isolation: it can signal, trace and write to the user's other processes and terminals",
    ]
    if os.getuid() == 0:
        missing += ["root: RLIMIT_NPROC not enforced; /proc/sys and root-owned files writable"]
    fallback = _isolation(False, [*COMMON_LAYERS, "new session + subreaper"], missing)
    return fallback._replace(reason=reason, how_to_fix=_how_to_get_namespaces())


# Settings that, where they exist, forbid ordinary users to create user namespaces; value -> the fix.
USERNS_SETTINGS = {
    "/proc/sys/kernel/unprivileged_userns_clone": ("0", "sudo sysctl -w kernel.unprivileged_userns_clone=1"),
    "/proc/sys/user/max_user_namespaces": ("0", "sudo sysctl -w user.max_user_namespaces=15000"),
    "/proc/sys/kernel/apparmor_restrict_unprivileged_userns": (
        "1",
        "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (Ubuntu 23.10+; or an AppArmor profile "
        "that allows user namespaces for this Python)",
    ),
}
CONTAINER_MARKERS = ("/.dockerenv", "/run/.containerenv")  # files Docker and Podman put in their containers
CONTAINER_FIX = (
    "in Docker or Podman, start the container with --security-opt seccomp=unconfined --security-opt "
    "apparmor=unconfined (their default profiles block user namespaces), or run loralab outside it"
)


def _how_to_get_namespaces() -> str:
    """What would let this machine create the namespaces: the settings found forbidding them, else the usual
    suspects."""
    if not shutil.which("unshare"):
        return "install util-linux, which provides `unshare` (e.g. apt install util-linux)"
    fixes = []
    for path, (forbidding, fix) in USERNS_SETTINGS.items():
        with contextlib.suppress(OSError), open(path) as file:
            if file.read().strip() == forbidding:
                fixes.append(fix)
    if any(os.path.exists(marker) for marker in CONTAINER_MARKERS):
        fixes.append(CONTAINER_FIX)
    if fixes:
        return "; ".join(fixes)
    return (
        "Linux 5.12 or newer that lets ordinary users create user namespaces (sysctl user.max_user_namespaces "
        "> 0; kernel.unprivileged_userns_clone = 1 and kernel.apparmor_restrict_unprivileged_userns = 0 where "
        f"they exist); {CONTAINER_FIX}"
    )


def _missing_in_namespaces(layers: list[str], root: bool) -> list[str]:
    """What the launcher could not set up here, from the layers it reported."""
    missing = []
    if root and not any("pid_max" in layer for layer in layers):
        missing.append("process count cap (root ignores RLIMIT_NPROC; pid_max needs Linux >= 6.14)")
    if not any(layer.startswith("/dev with only") for layer in layers):
        missing.append("private /dev: the host's terminals and devices are visible")
    if "no nested user namespaces" not in layers:
        missing.append("nested user namespaces allowed (the program gets capabilities in its own)")
    return missing


def _isolation(namespaces: bool, active: list[str], missing: list[str]) -> Isolation:
    """The Isolation with its one-line description: the missing protections first, as NO ...; then the layers."""
    description = "; ".join([*(f"NO {item}" for item in missing), *active])
    return Isolation(namespaces, description, tuple(active), tuple(missing))
