"""The `train` section of a recipe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from langadapt.config import ParallelConfig, opt, req

if TYPE_CHECKING:
    pass


# train methods that cannot train OFA's factorised embeddings (train.factorised_embeddings), and why
NOT_FACTORISED = {
    "qlora": "its 4-bit base is reloaded at full precision to merge the adapter, which has no factors; use lora",
}


@dataclass(frozen=True, kw_only=True)
class PhaseConfig:
    name: str = opt("", "label of the phase (its folder: train/phases/<n>-<name>/); default: the method")
    method: str = req("train method of this phase (see `langadapt list train-methods`)")
    max_steps: int = req("optimizer steps in this phase")
    lr: float = opt(0.0, "peak learning rate of this phase (0: train.lr)")
    warmup_steps: int = opt(-1, "linear warmup steps of this phase (-1: train.warmup_steps, at most the phase's steps)")
    embeddings: str = opt("", "which embedding rows train in this phase: new, all, none ('': train.embeddings)")
    objective: str = opt(
        "",
        "the objective of this phase ('': train.objective), of the same kind (masked or causal) as train.objective: "
        "e.g. tlm then mlm, or meco then clm (MeCo's cool-down on plain text)",
    )


MIXING_METHODS = ("temperature", "unimax", "weights")


@dataclass(frozen=True, kw_only=True)
class MixingConfig:
    """How training draws among several sources of one role (a corpus.target or corpus.replay list).

    train.replay_ratio splits each batch between target and replay first; the mixing divides each
    side among its sources. A role with one source draws only from it.
    """

    method: str = opt(
        "temperature",
        "temperature: XLM-R's sampling, p_i proportional to (tokens_i / total)^alpha (times the source's weight); "
        "unimax: UniMax (Chung et al. 2023), the side's token budget for the whole schedule shared uniformly "
        "(weighted by the sources' weights) with each source capped at unimax_epochs epochs and what a capped "
        "source leaves redistributed over the others; weights: p_i = weight_i / sum of weights, the sizes ignored",
    )
    alpha: float = opt(
        0.3,
        "temperature: the exponent on each source's share of tokens; 1 samples by size, 0 uniformly; 0.3 is "
        "XLM-R's (Conneau et al. 2020), mBERT's smoothing used 0.7",
    )
    unimax_epochs: float = opt(
        4.0,
        "unimax: at most this many epochs of any source over the schedule (UniMax's N); 4: Muennighoff et al. "
        "2023 found up to about 4 epochs of repeated data worth nearly as much as new data. When every source is "
        "capped and the budget is still not used up, the rest is shared by size (the caps are then exceeded, "
        "which the summary's epochs and warning show)",
    )
    warn_epochs: float = opt(
        20.0,
        "warn (in the log, train/summary.json and the report) when a source is planned or seen for more than this "
        "many epochs; 20: the top of the 15-20 repetitions of a scarce target corpus that mixture training was "
        "found to tolerate in 'Scaling Laws for Mixture Pretraining Under Data Constraints' (arXiv 2605.12715)",
    )


@dataclass(frozen=True, kw_only=True)
class PilotConfig:
    """The pilot runs of `train.replay_ratio: auto`: each from the same initialised model, one replay ratio each."""

    ratios: tuple[float, ...] = opt(
        (0.0, 0.1, 0.25, 0.5),
        "the replay ratios the pilots train at (at least 2, each in [0, 1)); the choice stays within their range",
    )
    steps: int = opt(
        0,
        "optimizer steps of each pilot (0: a tenth of the schedule's steps, at least 8); its held-out curves are "
        "measured 4 times (every steps / 4 steps)",
    )


@dataclass(frozen=True, kw_only=True)
class ScratchConfig:
    """The from-scratch model (train.method: scratch, or eval.reference: scratch beside the adapted model).

    The recipe is Goldfish's (Chang et al. 2024, "Goldfish: Monolingual Language Models for 350
    Languages", which follows their "When Is Multilinguality a Curse?"; its training scripts,
    training_code/prepare_training_scripts.py): 10 epochs, peak learning rate 1e-4, linear warmup
    over the first 10% of the steps, AdamW with weight decay 0.01, sequences of 512 tokens, and a
    size and batch chosen by the corpus's size in byte-premium-scaled MB (`train/scratch.py`'s SIZES).
    """

    vocabulary: str = opt(
        "target",
        "target: a tokenizer of the base's family trained on the target's cleaned training text in the "
        "scratch-tokenizer stage (scratch-tokenizer/, as tokenizer.method replace trains one), of vocab_size tokens; "
        "bytes: a vocabulary of the 256 UTF-8 byte values plus the base's special tokens (MonoByte, Abdaoui et "
        "al. 2022): no tokenizer to train, about 4 times the tokens per text",
    )
    vocab_size: int = opt(
        0,
        "vocabulary target: tokens in the scratch tokenizer (0: Goldfish's 50,000, capped at what the tokenizer "
        "trainer finds in the corpus)",
    )
    byte_premium: float = opt(
        0.0,
        "UTF-8 bytes the target language needs for the content of one English byte (Arnett et al. 2024, 'A Bit "
        "of a Problem'; Goldfish's model cards give it per language). The corpus's cleaned training bytes divided "
        "by it are the English-equivalent MB that choose the size. 0: computed from parallel text: "
        "tokenizer.parity_target and parity_reference when the recipe names them (the reference must be English), "
        "else the bundled English translation of a bundled target corpus (builtin:bible-nya: builtin:bible-eng); "
        "a recipe with neither must give it",
    )
    layers: int = opt(0, "transformer layers; 0: from the size table (give layers and hidden together, or neither)")
    hidden: int = opt(
        0,
        "hidden size, a multiple of 64 (attention heads of 64 dimensions, as Goldfish's); 0: from the size table. "
        "The feed-forward width keeps the base's ratio to the hidden size, rounded to a multiple of 64",
    )
    epochs: float = opt(10.0, "passes over the target's training tokens (Goldfish: 10)")
    lr: float = opt(1e-4, "peak learning rate (Goldfish: 1e-4)")
    warmup_ratio: float = opt(0.1, "linear warmup over this fraction of the steps (Goldfish: 0.1)")
    weight_decay: float = opt(0.01, "AdamW weight decay (Goldfish: 0.01)")
    seq_len: int = opt(
        512,
        "tokens per training sequence (Goldfish: 512); capped at the base config's max_position_embeddings minus 2",
    )
    batch_size: int = opt(0, "sequences per optimizer step; 0: from the size table (Goldfish: 4, 8, 32 or 64)")
    max_steps: int = opt(
        0,
        "stop after at most this many optimizer steps (0: the steps epochs need); a cap below that departs from "
        "Goldfish, and the report gives the tokens the model saw and the epochs they make",
    )


SCRATCH_VOCABULARIES = ("target", "bytes")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    method: str = opt(
        "lora",
        "lora: LoRA on the transformer + trainable new-token rows; full: all weights; scratch: no adaptation: a "
        "fresh model of the base's family sized by the corpus (train.scratch) is this run's model (see `langadapt "
        "list train-methods`)",
    )
    objective: str = opt(
        "auto",
        "training objective (see `langadapt list objectives`); auto: mlm for an encoder, clm for a decoder, decided "
        "from the base model's config (when a hub model's config is not cached, at the first stage after corpus); "
        "the run's recipe.yaml records what auto became",
    )
    lora_rank: int = opt(16, "LoRA rank")
    lora_alpha: int = opt(32, "LoRA scaling numerator (scale = alpha / rank)")
    lora_dropout: float = opt(0.0, "dropout on the LoRA path")
    lora_targets: tuple[str, ...] = opt(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        "module names that receive LoRA; names absent from the model are an error",
    )
    embeddings: str = opt(
        "new",
        "embedding rows that train beside the method: new (the rows of added tokens), all (the whole input "
        "embedding matrix and an output projection, tied or not: MAFT-style, cheap after tokenizer.method trim), none",
    )
    dropout: float = opt(
        -1.0,
        "dropout probability of the base model's own layers while training (hidden and attention): -1: the "
        "model's own (0.1 for XLM-R and BERT); 0: off, which also saves drawing the random masks (about 15% of "
        "an encoder's step on a CPU). The saved model's config keeps the model's own rates",
    )
    factorised_embeddings: bool = opt(
        False,
        "init.method ofa: train the embeddings as OFA does, in factorised form: a token's row is its coordinates "
        "(init.ofa_rank of them) times primitives shared by all tokens, and those train instead of the vocabulary "
        "x hidden matrix: rank x (vocabulary + hidden) parameters, 87% fewer for a 250k x 768 matrix at rank 100. "
        "A tied head reads the same factors, an untied one is factorised likewise; every row starts at its "
        "rank-k approximation; the final model is folded back to full size (a plain transformers folder). Every "
        "train method but qlora; train.embeddings all trains both factors, new the new tokens' coordinates "
        "(new-rows likewise); one process or data parallel (train.sharding: none)",
    )
    replay_ratio: float | str = opt(
        0.25,
        "fraction of training sequences drawn from the replay side (the source language); auto: chosen from short "
        "pilot runs (train.pilots): the smallest replay ratio whose fitted source-language drift at the full "
        "schedule stays within train.forgetting_tolerance",
    )
    forgetting_tolerance: float = opt(
        0.05,
        "replay_ratio auto: how far the replay language's held-out bits per byte (mlm: pseudo bits per byte) may "
        "rise over the whole schedule, as predicted by the fit of the pilots' curves (absolute, in bits per byte)",
    )
    pilots: PilotConfig = opt(
        PilotConfig(), "replay_ratio auto: the short runs whose held-out curves the replay ratio is chosen from"
    )
    mixing: MixingConfig = opt(
        MixingConfig(),
        "how sequences are drawn among several target or replay sources (corpus.target / corpus.replay given as "
        "lists); the epochs seen of every source are recorded either way",
    )
    seq_len: int = opt(256, "tokens per training sequence (documents are packed)")
    batch_size: int = opt(8, "sequences per optimizer step")
    max_steps: int = opt(40, "optimizer steps")
    lr: float = opt(1e-3, "peak learning rate")
    embedding_lr: float = opt(0.0, "learning rate for new embedding rows (0: same as lr)")
    warmup_steps: int = opt(4, "linear warmup steps")
    min_lr_ratio: float = opt(0.1, "cosine decay floor as a fraction of the peak learning rate")
    weight_decay: float = opt(0.0, "AdamW weight decay (never applied to embedding rows)")
    grad_clip: float = opt(1.0, "gradient norm clipping (0: off)")
    save_every: int = opt(10, "write a resumable checkpoint every this many steps (0: only at the end)")
    keep_checkpoints: int = opt(2, "how many recent checkpoints to keep")
    threads: int = opt(0, "CPU threads for torch (0: torch's default)")
    # -- devices, precision and throughput ---------------------------------------------------------
    device: str = opt(
        "auto", "where training runs: auto (a CUDA or Apple GPU when present, else the CPU), cpu, cuda, cuda:N, mps"
    )
    precision: str = opt(
        "auto",
        "what the forward pass computes in: auto: the frozen weights' type when model.dtype holds them in bf16 or "
        "fp16 (a GPU's default), else bf16 autocast where the device computes bf16 natively, else fp32; fp32; bf16; "
        "fp16 (GPU, loss scaling). Trained weights stay float32 (train.low_precision_master_weights)",
    )
    low_precision_master_weights: bool = opt(
        False,
        "let the optimizer step the trained weights in model.dtype (bfloat16) instead of float32 master copies: "
        "saves 2 of the 4 bytes per trained weight and halves AdamW's state, for a full fine-tuning that does not "
        "fit otherwise. It risks the training itself: an update smaller than half a bf16 step (1/512 to 1/256 of "
        "the weight's size) rounds away, so with small learning rates or late in the schedule many weights stop moving. "
        "Off: every trainable weight is float32 whatever model.dtype says; bfloat16 only (fp16 "
        "gradients cannot be unscaled by the loss scaler)",
    )
    micro_batch_size: int = opt(
        0,
        "sequences per forward/backward pass; the step accumulates gradients over the batch "
        "(0: on a CPU, passes of about 512 tokens in fp32 or 1,024 in bf16, which bound peak memory at no cost in speed; "
        "on a GPU, the whole batch)",
    )
    tokens_per_step: int = opt(
        0, "tokens per optimizer step; sets the batch to tokens_per_step / seq_len sequences (0: batch_size)"
    )
    packed_attention: str = opt(
        "document",
        "document: position ids restart at each packed document and attention stays inside it (decoders, and "
        "encoders of the types in models/encoder.py's PACKED_ENCODERS: BERT, RoBERTa, XLM-R, ...); "
        "row: a packed row is one sequence (attention crosses documents)",
    )
    gradient_checkpointing: bool = opt(
        False, "recompute activations in the backward pass: less memory, ~30% more compute"
    )
    compile: bool = opt(False, "torch.compile the model (slow first steps; pays off on long runs)")
    peak_tflops: float = opt(
        0.0,
        "the device's peak TFLOP/s that MFU (model FLOPs utilisation, in the step log, metrics.jsonl and the "
        "summary) is measured against: its dense (no sparsity) figure at the run's precision. 0: looked up for "
        "known GPUs (train/flops.py's GPU_PEAKS; an unknown GPU gets no MFU), measured on a CPU (a short matmul "
        "benchmark at the run's precision and thread count, and the MFU says so)",
    )
    sharding: str = opt(
        "none",
        "with several processes (accelerate launch / torchrun): none: data parallel (DDP), each process holds the "
        "whole model; full: FSDP, weights, gradients and optimizer state split over all processes (for models whose "
        "training state does not fit one GPU); hybrid: split within a node, replicated across nodes (less traffic "
        "between nodes); zero1, zero2, zero3: DeepSpeed ZeRO, splitting the optimizer state (1), and the gradients "
        "(2), and the weights (3) (pip install 'langadapt[deepspeed]'). An accelerate FSDP config (FULL_SHARD, "
        "HYBRID_SHARD) or DeepSpeed config (its ZeRO stage) sets it too; one process: no effect",
    )
    eval_every: int = opt(
        0,
        "every this many steps, bits per byte of a fixed held-out sample per trained language (mlm: pseudo bits per "
        "byte, the eval stage's encoder metric, which costs one forward copy per token: keep eval_tokens small) (0: off)",
    )
    eval_tokens: int = opt(8192, "tokens of whole held-out documents in that sample, per language")
    early_stopping_patience: int = opt(
        0,
        "stop when the target's held-out (mlm: pseudo) bits per byte has not improved in this many evaluations "
        "(0: never); the stop's checkpoint ends the training (or its phase)",
    )
    log_to: tuple[str, ...] = opt(
        (), "also send each step's metrics to: tensorboard, wandb (offline unless logged in); metrics.jsonl always"
    )
    # -- masked-LM objective (encoders) and adapters ------------------------------------------------
    mlm_probability: float = opt(0.15, "mlm: fraction of each sequence's tokens chosen for prediction")
    mlm_mask_ratio: float = opt(0.8, "mlm: of the chosen tokens, the fraction replaced by the mask token")
    mlm_random_ratio: float = opt(
        0.1, "mlm: of the chosen tokens, the fraction replaced by a random token (rest: kept)"
    )
    mlm_whole_word: bool = opt(
        True,
        "mlm: choose whole words, as the tokenizer's own pre-tokenizer splits them (punctuation and digits "
        "included; <unk> inside a word belongs to it), filling mlm_probability of each row",
    )
    adapter_reduction_factor: int = opt(
        16, "seq-bn, seq-bn-inv, double-seq-bn: bottleneck size = hidden size / this factor"
    )
    adapter_inv_reduction_factor: int = opt(2, "seq-bn-inv: reduction factor of the invertible embedding adapter")
    train_head: bool = opt(
        True,
        "encoders: the masked-LM head's own weights (transform, bias) train beside adapter and LoRA methods; "
        "its vocabulary projection is tied to the embeddings",
    )
    scratch: ScratchConfig = opt(
        ScratchConfig(),
        "the from-scratch model of train.method scratch and eval.reference scratch: Goldfish's size table and "
        "training recipe (see each key)",
    )
    # -- parallel data and the pair objectives (tlm, translation-clm) ---------------------------------
    parallel: ParallelConfig | None = opt(
        None, "aligned sentence pairs for the pair objectives (tlm, translation-clm); see train.parallel.*"
    )
    parallel_ratio: float = opt(
        0.5,
        "tlm, translation-clm: the share of the target language's rows that are translation pairs, drawn per row "
        "as a function of the step; the rest are monolingual target text under mlm (clm), as XLM mixes TLM with MLM. "
        "Replay rows stay monolingual",
    )
    pair_direction: str = opt(
        "both",
        "tlm, translation-clm: both: each pair shows either side first, drawn per pair and epoch (translation both "
        "ways); forward: train.parallel's first side always first",
    )
    pair_separator: str = opt(
        "\n",
        "translation-clm: the text between a pair's two sides, encoded on its own: a pair reads "
        "<eos>first<pair_separator>second (newlines inside a side become spaces). Encoders put their sep token there",
    )
    translation_loss_on: str = opt(
        "target",
        "translation-clm: target: the loss on the side after the separator (the translation) and its end; both: on "
        "both sides. Monolingual rows train on every token as clm does",
    )
    # -- code-switching (codeswitch, codeswitch-restore) ---------------------------------------------
    codeswitch_dictionary: str = opt(
        "",
        "codeswitch, codeswitch-restore: the bilingual dictionary: a TSV file of word pairs (word<TAB>translation, "
        "either language first: the side the target text uses is detected), a dictd index (.index beside its "
        ".dict.dz, as Debian's freedict packages install them), or init: the word pairs WECHSEL aligned its "
        "spaces with (init.method: wechsel)",
    )
    codeswitch_probability: float = opt(
        0.3,
        "codeswitch, codeswitch-restore: the probability that a target word the dictionary holds is replaced by one "
        "of its translations (drawn per word, per document and epoch); words it lacks never change",
    )
    codeswitch_ratio: float = opt(
        0.5,
        "codeswitch, codeswitch-restore: the share of the target language's rows drawn from code-switched text "
        "(codeswitch) or (switched, original) pairs (codeswitch-restore); the rest are plain target text",
    )
    # -- metadata conditioning (meco) ---------------------------------------------------------------
    meco_template: str = opt(
        "URL: {domain}\n\n",
        "meco: the prefix each target document is trained after ({domain}: its URL's host without www., or the "
        "name of its corpus source when it has no URL), never a prediction target; the default is the paper's",
    )
    # -- linguistic entity masking (lem) ------------------------------------------------------------
    lem_lexicon: str = opt(
        "",
        "lem: a TSV file of the target language's words and tags (word<TAB>tag; a word alone on its line is an "
        "entity); the words tagged with one of train.lem_tags are the ones masked",
    )
    lem_tagger: str = opt(
        "",
        "lem: a spaCy pipeline (package name or folder, pip install spacy) for the target language; it tags the "
        "training text once, and the words it tags with train.lem_tags (NE: inside a named entity) are masked",
    )
    lem_tags: tuple[str, ...] = opt(
        ("NOUN", "VERB", "PROPN", "NE"), "lem: the tags whose words are masked (Universal Dependencies POS, NE)"
    )
    lem_probability: float = opt(
        0.5, "lem: the fraction of the tagged words' tokens in each row chosen for prediction (whole words)"
    )
    langsamp: bool = opt(
        False,
        "LangSAMP (Liu et al. 2024): a language embedding (target, replay, parallel languages) and a script "
        "embedding (each token's writing system) added to the transformer's output before the LM head, in every "
        "phase, trained from zero at the embedding learning rate; removed before the final model is saved, which "
        "keeps the base's shape. Any objective; a ForMaskedLM or ForCausalLM model; a decoder's loss then runs "
        "unfused (full logits)",
    )
    phases: tuple[PhaseConfig, ...] = opt(
        (),
        "a schedule of phases run one after the other, each with its own method, steps and learning rate "
        "(e.g. new rows and head first, then adapters); empty: one phase from train.method / max_steps / lr",
    )


AUTO_RATIO = "auto"


def pilot_steps(tr: TrainConfig) -> int:
    """Steps of each pilot: train.pilots.steps, or a tenth of the schedule (at least 8)."""
    if tr.pilots.steps:
        return tr.pilots.steps
    total = sum(p.max_steps for p in tr.phases) if tr.phases else tr.max_steps
    return max(8, total // 10)


def effective_batch_size(tr: TrainConfig) -> int:
    """Sequences per optimizer step: from tokens_per_step when given, else batch_size."""
    return -(-tr.tokens_per_step // tr.seq_len) if tr.tokens_per_step else tr.batch_size


def objective_settings(tr: TrainConfig) -> list[tuple[str, str]]:
    """(recipe key, objective) of every phase: each phase's own, else train.objective."""
    if not tr.phases:
        return [("train.objective", tr.objective)]
    return [
        (f"train.phases[{i}].objective" if ph.objective else "train.objective", ph.objective or tr.objective)
        for i, ph in enumerate(tr.phases)
    ]
