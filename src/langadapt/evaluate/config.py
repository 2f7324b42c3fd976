"""The `eval` section of a recipe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from langadapt.config import SourceConfig, opt, req

if TYPE_CHECKING:
    pass


@dataclass(frozen=True, kw_only=True)
class TaskConfig:
    kind: str = req("what is measured (see `langadapt list tasks`): classify, tag, retrieval, alignment, lm-eval")
    name: str = opt("", "the task's label in results and the report (default: the kind)")
    data: str = opt(
        "",
        "builtin:NAME (bible-topic, bible-bitext, ner-fixture), a file, folder or glob of .csv/.jsonl/.conll files "
        "named <language>.<split>.<ext> (or rows with language and split fields), or hf:NAME for a hub data set",
    )
    languages: tuple[str, ...] = opt((), "languages to test on (default: the corpus's target and replay languages)")
    transfer: str = opt(
        "both",
        "in-language (train and test in each language), cross-lingual (train on source_language, test on the others) or both",
    )
    source_language: str = opt(
        "", "training language for cross-lingual transfer and pivot for retrieval (default: replay)"
    )
    protocol: str = opt(
        "probe",
        "probe: logistic regression on frozen representations (cheap); finetune: the whole model with a linear head",
    )
    pooling: str = opt("mean", "sentence representation: mean over tokens, or the last token (decoders)")
    layer: str = opt("middle", "hidden layer read by probes and retrieval: middle, last, or an index (0 = embeddings)")
    seeds: int = opt(3, "runs with different seeds; results are mean and standard deviation over them")
    max_train_per_label: int = opt(0, "cap on training examples per label and language (0: all); the rest is counted")
    max_test_per_label: int = opt(0, "cap on test examples per label and language (0: all); the rest is counted")
    max_pairs: int = opt(0, "retrieval/alignment: at most this many aligned pairs per language (0: all)")
    epochs: int = opt(3, "finetune: passes over the training set")
    lr: float = opt(2e-5, "finetune: AdamW learning rate (the head, and LoRA weights on a large model, use 10x)")
    full_finetune_max_parameters: int = opt(
        1_000_000_000,
        "finetune: a model with more parameters than this trains LoRA (rank 16 on every linear layer, peft) with the "
        "head instead of a full copy of the model with full AdamW (which needs four times the model's fp32 size "
        "beside it); the result's extra.finetune says which ran; 0: always LoRA",
    )
    batch_size: int = opt(16, "finetune: examples per step; also the encoding batch size")
    text_field: str = opt("text", "csv/jsonl/hf: field holding the text (classify, retrieval)")
    label_field: str = opt("label", "csv/jsonl/hf: field holding the label (classify) or the tags (tag, hf)")
    tokens_field: str = opt("tokens", "hf: field holding the words (tag)")
    subsets: tuple[str, ...] = opt(
        (), "hf: language=configuration pairs, e.g. nya=nya_Latn (one configuration per language)"
    )
    harness_tasks: tuple[str, ...] = opt((), "lm-eval: lm-evaluation-harness task names (needs langadapt[harness])")
    harness_include: str = opt("", "lm-eval: a folder of local task definitions (YAML) to register first")
    harness_limit: int = opt(0, "lm-eval: at most this many documents per harness task (0: all)")


@dataclass(frozen=True, kw_only=True)
class SamplesConfig:
    count: int = opt(
        3,
        "held-out documents per language (target and replay held-out sets) whose opening every model continues, "
        "side by side in the report; documents spread evenly over the evaluated set, the same in every run "
        "(0: no samples). Encoders (masked LMs) continue no text and get none",
    )
    max_new_tokens: int = opt(
        40,
        "tokens each model generates per prompt: greedy (argmax, no sampling or penalties, none of the model's "
        "generation defaults), fewer when it generates an end-of-text token (the document separator, eos)",
    )
    prompt_chars: int = opt(
        100,
        "characters of a document's opening given as the prompt, cut at the last space (in scripts without "
        "spaces, after the last punctuation mark) in the second half of this limit; after the document separator",
    )


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    max_chars: int = opt(
        30_000, "evaluate at most this many characters per set (whole documents; the rest is counted as skipped)"
    )
    context_length: int = opt(512, "tokens per evaluation window; longer documents are scored with a sliding window")
    stride: int = opt(
        256, "new tokens scored per window after the first (the rest is context; a decoder's window keeps at least one)"
    )
    extra_sets: tuple[SourceConfig, ...] = opt(
        (), "additional evaluation-only sets, e.g. out-of-domain text in the source language"
    )
    tasks: tuple[TaskConfig, ...] = opt(
        (), "downstream tasks, retrieval and alignment, run on every model and language (see `langadapt list tasks`)"
    )
    device: str = opt(
        "auto", "where evaluation runs: auto (a CUDA or Apple GPU when present, else the CPU), cpu, cuda, cuda:N, mps"
    )
    precision: str = opt(
        "auto",
        "compute precision of scoring and tasks: auto (bf16 autocast on a GPU that computes bf16 natively; fp32 on a "
        "CPU, even one with bf16 instructions, so CPU figures stay comparable with fp32 ones), fp32, or bf16 (autocast "
        "over the weights as loaded; on a CPU only where it has AVX-512 BF16 or AMX); the log-likelihoods are summed in "
        "fp32 whatever it says",
    )
    reference: str = opt(
        "",
        "scratch: also train a model from scratch on the same cleaned target text (Goldfish's recipe, sized by "
        "the corpus; train.scratch) in the run's reference stage (reference/), and evaluate it beside base and "
        "adapted on the same held-out text and tasks: the report says whether adapting beat it; '': none",
    )
    compare: tuple[str, ...] = opt(
        (), "more models to evaluate beside base and adapted: HF folders or hub ids (`langadapt eval --model`)"
    )
    samples: SamplesConfig = opt(
        SamplesConfig(),
        "generation samples: the opening of a few held-out documents continued greedily by every model, with the "
        "text that follows it, in eval/results.json and the report",
    )


REFERENCES = ("", "scratch")
TRANSFERS = ("in-language", "cross-lingual", "both")
PROTOCOLS = ("probe", "finetune")
