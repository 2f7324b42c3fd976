"""The embedding-initialisation stage. Its flow starts in `flow.py` (`run`); its recipe section is `config.py`.

`methods.py` is the contract every method follows (inputs -> rows) and the registry; each
method is a file beside it (`basic.py`, `focus.py`, `wechsel.py`, `clp.py`, `omp.py`, `ofa.py`).
This file imports nothing.
"""
