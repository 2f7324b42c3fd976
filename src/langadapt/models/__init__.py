"""Mechanics for models, shared by every stage: finding and loading a base (`loading.py`),
importing bundled weights (`importers.py`), masked-LM helpers for encoders (`encoder.py`).

This file imports nothing.
"""
