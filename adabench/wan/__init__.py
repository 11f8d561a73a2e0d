"""The Wan2.1 causal streaming family (Self-Forcing, CausVid, LongLive, ...) under adabench's cache policies.

The DiT (:mod:`adabench.wan.model`) is pure torch and keeps Wan's original parameter names;
the VAE and the text encoder come from diffusers and transformers (the optional extra
``adabench[wan]``), imported only when a Wan generator is built. See docs/real-models.md.
"""
