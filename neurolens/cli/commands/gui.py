"""``neurolens gui`` (also ``neurolens`` alone): the desktop app."""

from __future__ import annotations

from neurolens.cli.args import debug_arg
from neurolens.errors import InputError


def add_parser(sub) -> None:
    p = sub.add_parser("gui", help="open the desktop app (default command)")
    p.add_argument("-m", "--model", default=None, help="model folder or hub id")
    p.add_argument("--screenshot", help="load, run, save the window as PNG, exit")
    p.add_argument("--prompt", help="prompt to run")
    p.add_argument("--timeout", type=float, default=300.0, help="screenshot mode time limit (s)")
    p.add_argument("--tab", choices=["neurons", "attention"], default="neurons",
                   help="screenshot mode: the centre tab to show")
    debug_arg(p)
    p.set_defaults(func=cmd_gui)


def cmd_gui(args) -> int:
    from neurolens.gui.process import configure
    configure()   # before torch loads (see its docstring)
    try:
        from neurolens.gui.app import run_gui
    except ImportError as e:
        raise InputError(f"the GUI needs PySide6 and pyqtgraph ({e})") from None
    return run_gui(args.model, screenshot=args.screenshot, prompt=args.prompt,
                   timeout=args.timeout, tab=args.tab)
