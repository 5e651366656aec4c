"""Pure data: sites, neuron references, edit sets, sessions. Imports neither torch nor Qt."""
