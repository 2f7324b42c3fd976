"""Stage distill: the adapted model (the teacher) distilled into a small language-specific student.

BiStil (Ansell et al., 2023): the student keeps a trimmed vocabulary of the target and
replay languages and every k-th layer of the teacher, and trains on the corpus to match
the teacher's output distribution, hidden states and (encoders, MiniLM-style) attention.
"""
