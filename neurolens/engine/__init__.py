"""Models, sites, hooks, capture, edits, runs, compare, export. No Qt here, ever."""

from neurolens.engine.hooks import CancelToken
from neurolens.engine.loading import load

__all__ = ["load", "CancelToken"]
