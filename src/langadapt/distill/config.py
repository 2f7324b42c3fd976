"""The `distill` section of a recipe: the student's shape and how it is trained against its teacher."""

from __future__ import annotations

from dataclasses import dataclass

from langadapt.config import opt

HIDDEN_LOSSES = ("mse", "cosine")


@dataclass(frozen=True, kw_only=True)
class DistillConfig:
    enabled: bool = opt(
        False,
        "run the distill stage in `langadapt run` (after eval, before report); `langadapt distill RUN --to DIR` "
        "runs it on a finished run whatever this says",
    )
    layers_every: int = opt(
        3,
        "the student keeps every k-th layer of the teacher, counted so that the top layer is always kept: "
        "layers k-1, 2k-1, ..., L-1 (0-based) of L; e.g. k=3 keeps 10 of 30. Ignored when distill.layers is set",
    )
    layers: tuple[int, ...] = opt(
        (),
        "explicit 0-based teacher layers the student keeps, in increasing order (e.g. [0, 4, 8, 11]); "
        "empty: every layers_every-th layer",
    )
    vocab_size: int = opt(
        0,
        "cap on the student's vocabulary: the teacher's tokenizer trimmed (the tokenizer stage's trim method) "
        "to the special tokens, the single characters and byte pieces, and the tokens the target and replay "
        "training text use at least vocab_min_count times, most used first; 0: no cap (every used token)",
    )
    vocab_min_count: int = opt(1, "a token joins the student's vocabulary when the training text uses it this often")
    max_steps: int = opt(100, "optimizer steps of distillation (sequences per step, length and replay mix: train's)")
    lr: float = opt(1e-3, "peak learning rate (linear warmup, cosine decay to train.min_lr_ratio)")
    warmup_steps: int = opt(10, "linear warmup steps")
    save_every: int = opt(10, "write a resumable checkpoint every this many steps (0: only at the end)")
    temperature: float = opt(
        2.0,
        "softmax temperature T of the logit KL divergence KL(teacher_T || student_T), multiplied by T^2 "
        "(Hinton et al., 2015) so its gradients keep their scale. The teacher's logits are restricted to "
        "the student's tokens and renormalised over them before the softmax",
    )
    kl_weight: float = opt(1.0, "weight of the logit KL divergence (per predicted token)")
    hidden_weight: float = opt(
        1.0,
        "weight of hidden-state matching: each student layer's output against the output of the teacher "
        "layer it was copied from (0: off)",
    )
    hidden_loss: str = opt(
        "mse",
        "mse: mean squared difference over the hidden coordinates, divided by the mean square of the "
        "teacher's state (so it is scale-free across layers); cosine: 1 - cosine similarity; per token, "
        "averaged over the mapped layers",
    )
    attention_weight: float = opt(
        1.0,
        "encoders: weight of MiniLM's attention transfer, KL(teacher || student) of the self-attention "
        "distributions of the student's top layer and its teacher layer, per query token, averaged over heads "
        "(0: off; decoders: not used). Needs attentions the model returns (eager attention, which the "
        "stage selects)",
    )
    speed_tokens: int = opt(
        2048, "tokens of held-out text in the inference speed measurement (forward passes, teacher and student)"
    )
