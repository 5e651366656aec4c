"""Exceptions shared by every layer. Pure Python: no torch, no Qt."""


class NeurolensError(Exception):
    """Base class. The CLI prints ``str(err)`` as one line and exits non-zero."""

    exit_code = 1


class InputError(NeurolensError):
    """Bad user input: a file, a field, a site, a neuron index. CLI exit code 2."""

    exit_code = 2


class LoadError(InputError):
    """A model could not be loaded (missing, corrupt, unsupported, or refused for safety)."""


class SpecError(InputError):
    """An edit spec or session file is invalid. The message names the bad field."""


class Cancelled(NeurolensError):
    """A run was cancelled by the user."""
