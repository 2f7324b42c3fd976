"""The training stage. Its flow starts in `flow.py` (`run`); its recipe section is `config.py`.

The loop is `loop.py`, phases `phases.py`, data `data.py`, objectives `objectives.py` and
`mlm.py`, train methods `methods.py` and `adapters.py`, the engines for several processes
`distributed.py` (DDP, FSDP2) and `zero.py` (DeepSpeed). This file imports nothing.
"""
