"""The model families neurolens knows, by the ``kind`` a loaded model reports. Pure data."""

#: every family; an op or a method registered without ``kinds`` applies to all
ALL_KINDS = ("lm", "diffusion", "snn")
#: what the messages call one model of each family (plural: add "s")
KIND_WORDS = {"lm": "language model", "diffusion": "diffusion pipeline", "snn": "spiking network"}
