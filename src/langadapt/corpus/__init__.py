"""The corpus stage. Its flow starts in `flow.py` (`run`); its recipe section is `config.py`.

Parts beside the flow: readers, language and script identification (`lid.py`, `script.py`),
quality filters and their derived thresholds, deduplication, PII scrubbing and the datatrove
blocks and executors that run them. This file imports nothing, so `corpus.config` loads alone.
"""
