"""Spiking neural networks with learnable synaptic delays (the third model family)."""
