"""neurolens: neuron-level interpretability and editing of neural networks."""

__version__ = "0.1.0"

from neurolens.errors import InputError, LoadError, NeurolensError, SpecError  # noqa: E402
from neurolens.spec.edits import (  # noqa: E402
    Adjust, EditSet, Gate, MaskWeights, Prune, Scale, Set, TopK)


def load(name_or_path=None, **kwargs):
    """Load a model (default: the shipped demo LM). See :func:`neurolens.engine.loading.load`."""
    from neurolens.engine.loading import load as _load
    return _load(name_or_path, **kwargs)


__all__ = ["__version__", "load", "EditSet", "Prune", "Scale", "Set", "Adjust", "Gate", "TopK",
           "MaskWeights",
           "NeurolensError",
           "InputError", "LoadError", "SpecError"]
