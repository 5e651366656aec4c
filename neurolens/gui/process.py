"""Process settings the GUI needs, applied before torch is imported (no Qt, no torch here)."""

from __future__ import annotations

import os


def configure() -> None:
    """Make OpenMP worker threads sleep instead of spin between parallel regions.

    By default torch's OpenMP threads busy-wait after every parallel region; on a machine with
    few cores that spinning takes the core the GUI thread needs, and the event loop stalled for
    55-95 ms while a model streamed on 2 cores (26-36 ms with passive waiting, same refresh rate;
    ``neurolens bench --only gui``). Only effective before torch is first imported; a value the
    user set is kept."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
