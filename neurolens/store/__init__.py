"""Where captured activations live. numpy only; thread-safe."""

from neurolens.store.capture_store import CaptureStore
from neurolens.store.shards import SafetensorsStreamWriter
from neurolens.store.stats import RunningStats

__all__ = ["CaptureStore", "RunningStats", "SafetensorsStreamWriter"]
