"""The ``neurolens`` argument parser: the top-level flags, then each command's own sub-parser
(added by its module, in the order ``neurolens --help`` lists them)."""

from __future__ import annotations

import argparse

from neurolens import __version__
from neurolens.cli.commands import (attribute, bench, capture, compare, export, fit, gui, index,
                                    info, reproduce, run)
from neurolens.cli.commands import eval as eval_

#: the command modules; each has ``add_parser(sub)``
COMMANDS = (info, capture, run, compare, export, reproduce, fit, attribute, index, bench, gui,
            eval_)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="neurolens", description="Neuron-level interpretability "
                                 "and editing of neural networks. No command: open the GUI.")
    ap.add_argument("--version", action="version", version=f"neurolens {__version__}")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return ap
