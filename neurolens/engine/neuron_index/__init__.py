"""Corpus neuron dashboards ("neurolens index"): stream text through a language model and keep,
per neuron, its top activating (document, position) pairs, a histogram and its firing density,
in a folder keyed by a digest of every weight. See /work/notes/index_api.md for the contract."""

from neurolens.engine.neuron_index.build import DEFAULT_SITES, build_index
from neurolens.engine.neuron_index.digest import weights_digest
from neurolens.engine.neuron_index.index import (Dashboard, Example, NeuronIndex, data_dir,
                                                 find_index, user_index_dir)

__all__ = ["DEFAULT_SITES", "Dashboard", "Example", "NeuronIndex", "build_index", "data_dir",
           "find_index", "user_index_dir", "weights_digest"]
