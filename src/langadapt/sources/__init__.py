"""Mechanics for where text comes from: one configured source read (`reading.py`), user files
and hub data sets (`formats.py`), bundled offline corpora (`bundled.py`), as `Doc`s and
`Record`s (`records.py`). This file imports nothing.
"""
