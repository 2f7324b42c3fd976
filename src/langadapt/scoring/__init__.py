"""Mechanics for scoring a model on text, used by the init comparison and the eval stage:
bits per byte for decoders (`bpb.py`), pseudo bits per byte for encoders (`pppl.py`).

This file imports nothing.
"""
