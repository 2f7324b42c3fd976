"""The evaluation stage. Its flow starts in `flow.py` (`run`); its recipe section is `config.py`.

Scores themselves (bits per byte, pseudo bits per byte) are mechanics in `langadapt.scoring`;
downstream tasks are parts in `tasks/`; `embed.py` turns a model into sentence vectors.
This file imports nothing.
"""
