"""Example adabench plug-in: a generator, a metric and a prompt suite from outside adabench.

Nothing here is imported by adabench until a user names it (``--models drifting-texture``):
the entry points in ``pyproject.toml`` point at the classes by import path.
"""

__version__ = "0.1.0"
