"""The report stage. Its flow starts in `flow.py` (`run`); its recipe section is `config.py`.

Sections and plots are parts beside it (`summary.py`, `corpus_section.py`, `tokenizer_section.py`,
`blocks.py`). This file imports nothing.
"""
