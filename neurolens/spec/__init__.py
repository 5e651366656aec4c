"""Pure data: sites, neuron references, edit sets, sessions. Imports neither torch nor Qt."""

# every op's data class registers in ``edits.OPS`` when its module loads: the spiking-network
# ops live in their own module, loaded here so an edit file naming them reads before any
# spiking network is loaded
from neurolens.spec import snn_edits as _snn_edits  # noqa: F401
from neurolens.spec import head_edits as _head_edits  # noqa: F401
