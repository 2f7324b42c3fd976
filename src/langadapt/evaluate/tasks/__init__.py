"""Downstream tasks: `base.py` holds the contract and the registry, one file per task kind beside it.

This file imports nothing; `langadapt.catalog` loads the kinds so that they register.
"""
