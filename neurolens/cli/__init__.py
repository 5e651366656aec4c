"""The neurolens command line (DESIGN.md section 5): one module per command under
:mod:`neurolens.cli.commands`, the parser in :mod:`neurolens.cli.parser`.

Errors print one line to stderr (exit 2 for bad input) and no traceback unless ``--debug``.
Building the parser imports neither torch nor Qt: the commands import the engine (and the GUI)
inside their functions.
"""

from __future__ import annotations

import sys

from neurolens.cli.commands.fit import fit_parser
from neurolens.cli.common import read_prompts
from neurolens.cli.parser import build_parser
from neurolens.errors import NeurolensError

__all__ = ["main", "build_parser", "read_prompts", "fit_parser"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = build_parser()
    if not argv:
        argv = ["gui"] if "gui" in ap._subparsers._group_actions[0].choices else ["--help"]
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:  # argparse: exit 2 on bad usage, 0 on --help
        return int(e.code or 0)
    if not getattr(args, "command", None):
        ap.print_help()
        return 0
    debug = getattr(args, "debug", False)
    try:
        return int(args.func(args) or 0)
    except NeurolensError as e:
        if debug:
            raise
        print(f"neurolens: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("neurolens: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - one clear line, traceback with --debug
        if debug:
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"neurolens: error: {type(e).__name__}: {first} (run with --debug for details)",
              file=sys.stderr)
        return 1
