"""Shipped data (installed as the package neurolens._resources): demo models, prompt sets, icons."""
