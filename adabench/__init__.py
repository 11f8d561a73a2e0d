"""adabench."""
