"""`loralab sandbox`: the isolation that untrusted code (code_eval's pass@k) gets on this machine."""

from __future__ import annotations

import argparse

from loralab.errors import UserError


def add_sandbox_parser(commands: argparse._SubParsersAction) -> None:
    """Register `loralab sandbox` on the CLI's subcommands."""
    commands.add_parser(
        "sandbox",
        help="which isolation runs untrusted code here, and what is missing",
        description="Print, one per line, the isolation layers that the sandbox (code_eval pass@k) uses "
        "on this machine and the protections it lacks here (tried once: a tiny program in the sandbox). Exit "
        "code 0 when the namespaces that code evaluation requires work here, 1 (with how to get them) when not.",
    )


def cmd_sandbox(args: argparse.Namespace, overrides: list[str]) -> int:
    """Print each active layer and each missing protection on its own line; 1 without the namespaces."""
    # Imported here: this module is part of `loralab --help`, which must not load code_eval's dependencies.
    from loralab.evaluation.code_eval import OPT_IN
    from loralab.evaluation.sandbox.supervisor import isolation_layers, probe

    if overrides:
        raise UserError(f"loralab sandbox takes no overrides, got {' '.join(overrides)}")
    active, missing = isolation_layers()
    print("loralab sandbox on this machine:")
    for layer in active:
        print(f"  active:  {layer}")
    for item in missing or ["nothing"]:
        print(f"  missing: {item}")
    found = probe()
    if found.namespaces:
        return 0
    print(f"code evaluation refuses to run here. To get the namespaces: {found.how_to_fix}")
    print(f"To run generated code anyway with rlimits only (it can read and write your files): {OPT_IN}")
    return 1
