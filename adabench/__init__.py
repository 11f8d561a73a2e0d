"""adabench: a benchmark and evaluation suite for streaming video diffusion."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("adabench")
except _metadata.PackageNotFoundError:      # running from a source tree that is not installed
    __version__ = "0.0.0+source"
