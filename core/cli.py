"""Shared command-line plumbing: one-line errors and exit codes for every entry script."""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Callable, Optional

from cxr_jetson.core.errors import InputWarning, ToolkitError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def run_cli(main: Callable[[], Optional[int]], program: str) -> None:
    """Call ``main`` and exit with its status; user errors become one line on stderr, no traceback.

    Set CXR_DEBUG=1 to see the traceback of a user error too. Input warnings (a fallback the input
    needed) are one line each too.
    """
    original = warnings.showwarning

    def one_line(message, category, filename, lineno, file=None, line=None):  # noqa: ARG001 (warnings' signature)
        if issubclass(category, InputWarning):
            print(f"{program}: warning: {message}", file=sys.stderr, flush=True)
        else:
            original(message, category, filename, lineno, file, line)

    warnings.showwarning = one_line
    try:
        status = main()
    except ToolkitError as err:
        if os.environ.get("CXR_DEBUG"):
            raise
        print(f"{program}: error: {err}", file=sys.stderr)
        status = EXIT_USAGE
    except KeyboardInterrupt:
        print(f"\n{program}: interrupted", file=sys.stderr)
        status = EXIT_INTERRUPTED
    sys.exit(status or 0)


def add_bool_flag(parser: argparse.ArgumentParser, name: str, default: bool, help: str) -> None:
    """``--name`` / ``--no-name`` (argparse.BooleanOptionalAction needs Python 3.9; JetPack 5 has 3.8)."""
    dest = name.replace("-", "_")
    # The value's default lives on the parser, set before the flags: with default=SUPPRESS on the
    # flags themselves, argparse's help formatter prints no misleading "(default: True)" on each.
    parser.set_defaults(**{dest: default})
    group = parser.add_mutually_exclusive_group()
    group.add_argument(f"--{name}", dest=dest, action="store_true", default=argparse.SUPPRESS,
                       help=f"{help} (default: {'on' if default else 'off'})")
    group.add_argument(f"--no-{name}", dest=dest, action="store_false", default=argparse.SUPPRESS,
                       help=f"turn --{name} off")
