"""Command-line interface: ``physgrad solve | grad | verify | train | fit | predict | netlist | download | sweep``.

The only place with argparse: each command is one module of this package with ``register(sub)``
(adds its parser) and ``run(args) -> int``. ``python -m physgrad`` is the same as ``physgrad``.

Exit codes: 0 success; 1 not solved (infeasible, not converged, a failed certificate or check);
2 bad input (a file that cannot be read or is not a netlist, a netlist error naming file:line, an
ill-posed circuit, bad arguments). Output cut short by a closed pipe (``physgrad solve x.cir | head``)
ends quietly with 141 (128 + SIGPIPE, what a shell reports for a process killed by SIGPIPE).
``physgrad train``, ``fit`` and ``sweep`` interrupted by SIGINT / SIGTERM save their checkpoint (or
results) and exit with 130 / 143 (128 + signal); a second Ctrl-C aborts at once (130). A corrupted
run folder on ``--resume``, a foreign non-empty ``--out`` and a run folder locked by another process
are bad input (2); see :mod:`physgrad.runs`.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Optional, Sequence

from physgrad.types import NotSolvedError, PhysgradError

EXIT_OK, EXIT_NOT_SOLVED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_BROKEN_PIPE = 141
EXIT_INTERRUPTED = 130  # 128 + SIGINT
COMMANDS = ("solve", "grad", "verify", "train", "fit", "predict", "netlist", "download", "sweep")
"""The commands, each a module of this package (imported when its parser is built)."""


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The ``physgrad`` parser with one subcommand per module of :data:`COMMANDS` (with ``only``, that
    command's alone: a command then imports only what it needs, e.g. ``solve`` not the layered
    package)."""
    from physgrad import __version__

    parser = argparse.ArgumentParser(prog="physgrad", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"physgrad {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in (only,) if only in COMMANDS else COMMANDS:
        importlib.import_module(f"physgrad.cli.{name}").register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, map errors to exit codes."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except PhysgradError as exc:
        print(f"physgrad: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NotSolvedError as exc:
        print(f"physgrad: not solved: {exc}", file=sys.stderr)
        return EXIT_NOT_SOLVED
    except KeyboardInterrupt:
        print("\nphysgrad: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _silence_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null so that Python's flush at exit stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (captured)
        pass
