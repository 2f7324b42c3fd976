"""The tokenizer stage. Its flow starts in `flow.py` (`run`); its recipe section is `config.py`.

Each method (extend, replace, trim, translit, keep) is a part registered in `methods.py`;
family-specific editing lives in `bpe.py`, `unigram.py`, `wordpiece.py`; `state.py` reads a
tokenizer's family and `metrics.py` measures fertility and parity. This file imports nothing.
"""
