"""The instruction graft: (instruct - base) added to the adapted model, aware of its vocabulary.

Continued pretraining of a base model leaves it unable to chat; the instruction residual
restores that (Huang et al. 2023, "Chat Vector"; Jindal et al. 2024, "Balancing Continuous
Pre-Training and Instruction Fine-Tuning"): grafted = adapted + (instruct - base), where
`base` is the model the run started from and `instruct` its instruction-tuned sibling. A
merge tool does that tensor by tensor and cuts an extended embedding back to the base's
rows; here the vocabulary matrices (the embeddings, and the head when it is untied) are
handled row by row, through token strings (a trimmed vocabulary renumbers ids):

- a row whose token the base and the instruct vocabularies hold gets the residual of that
  token's rows;
- a row of a new token (one the base vocabulary lacks) keeps its trained value;
- a row of a chat-template token (a special token the instruct chat template writes, such
  as `<|im_start|>`) is the instruct model's row; such a token the adapted vocabulary lacks
  is added to it;
- every other weight gets the residual whole.

The adapted model is the run's `train/final/`, where the train stage merged LoRA (peft or
AdapterHub) into the weights. The chat template, the generation config (its token ids
mapped through the token strings) and the end-of-sequence token come from the instruct
model. When the run started from an instruct model the adapted model already carries the
residual: the graft measures that from the weights (`model-init/` against base and
instruct) and refuses unless told to add it twice.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.config import ModelConfig
from langadapt.errors import ConfigError, InputError, LangAdaptError, ModelLoadError
from langadapt.models.loading import ADAPTER_NAME, MODELS, is_encoder, load_config, load_model, load_tokenizer
from langadapt.models.loading import resolve_base as resolve_model
from langadapt.rundir import RunDir, read_json

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from langadapt.recipe import Recipe

log = logging.getLogger(__name__)
# config fields that fix the shapes and meaning of the weights; compared before any weight loads
ARCH_FIELDS = (
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "tie_word_embeddings",
)
_INSTRUCT_NAME = re.compile(r"instruct|chat|(^|[-_./])it($|[-_.])", re.IGNORECASE)
ALLOW_DOUBLE = "--allow-double-residual"


@dataclass(frozen=True)
class GraftSpec:
    """What to graft: the instruct model and the base it was tuned from (folders, hub ids or builtin:NAME)."""

    instruct: str
    base: str
    allow_double_residual: bool = False  # graft even when the run started from an instruct model


@dataclass
class Origin:
    """Whether the run started from the base or from the instruct model, and the evidence."""

    from_instruct: bool
    evidence: str


@dataclass
class MatrixRows:
    """What happened to the rows of one vocabulary matrix."""

    name: str
    residual: int = 0  # old-token rows that got instruct - base
    new_kept: int = 0  # new-token rows that kept their trained values
    chat_from_instruct: int = 0  # chat-template token rows copied from the instruct model
    old_without_instruct_row: int = 0  # old tokens the instruct vocabulary lacks: kept as trained
    untokened_kept: int = 0  # rows no token uses (padding to a multiple): kept


@dataclass
class GraftReport:
    """What the graft did, for the model card and the log."""

    instruct: str
    base: str
    origin: Origin
    shared_tensors: int = 0
    shared_parameters: int = 0
    tied_head: bool = True
    matrices: list[MatrixRows] = field(default_factory=list)
    chat_tokens: list[str] = field(default_factory=list)
    added_tokens: list[str] = field(default_factory=list)
    eos_change: tuple[str, str] | None = None
    generation_config: str = ""


@dataclass
class Graft:
    """Everything loaded and checked; `apply` changes `adapted` and `tok` in place."""

    spec: GraftSpec
    adapted: "PreTrainedModel"
    tok: "PreTrainedTokenizerBase"
    base: dict[str, "torch.Tensor"]
    instruct: dict[str, "torch.Tensor"]
    base_tok: "PreTrainedTokenizerBase"
    instruct_tok: "PreTrainedTokenizerBase"
    instruct_dir: str
    vocab_names: tuple[str, ...]  # the vocabulary matrices: embeddings, and the head when untied
    dtype: str  # what the adapted model is saved in
    origin: Origin


# -- loading and checking (before any work) ---------------------------------------------------


def prepare(rd: RunDir, recipe: "Recipe", final: Path, spec: GraftSpec) -> Graft:
    """Load the three models and check they fit together; every mismatch is one ConfigError."""
    import torch

    if _bottleneck(final):
        raise InputError(
            f"{rd.root} trained bottleneck adapters ({recipe.train.method}), which cannot be merged into the "
            "weights, so there are no weights to add the instruction residual to",
            hint="graft a run trained with lora, full or embeddings methods",
        )
    adapted_cfg = load_config(str(final))
    if is_encoder(adapted_cfg):
        raise InputError(f"{rd.root} adapted an encoder; the instruction graft is for causal language models")
    paths = {"--base": _resolve(spec.base, "--base"), "--instruct": _resolve(spec.instruct, "--instruct")}
    configs = {flag: _config(path, flag) for flag, path in paths.items()}
    problems = [p for flag, cfg in configs.items() for p in _config_mismatches(adapted_cfg, cfg, flag, spec)]
    base_tok, instruct_tok = load_tokenizer(paths["--base"]), load_tokenizer(paths["--instruct"])
    problems += _vocab_mismatches(rd, base_tok, instruct_tok, spec)
    if problems:  # configs and tokenizers: found before any weight is read
        raise ConfigError(problems, source="graft")
    cpu = torch.device("cpu")
    adapted = load_model(str(final), "float32", device=cpu, attn_implementation="eager")
    base = load_model(paths["--base"], "float32", device=cpu, attn_implementation="eager")
    instruct = load_model(paths["--instruct"], "float32", device=cpu, attn_implementation="eager")
    vocab_names = _vocab_names(adapted)
    base_sd, instruct_sd = _params(base), _params(instruct)
    problems = _shape_mismatches(adapted, base_sd, "--base", spec.base, vocab_names)
    problems += _shape_mismatches(adapted, instruct_sd, "--instruct", spec.instruct, vocab_names)
    if problems:
        raise ConfigError(problems, source="graft")
    residual_norm = _distance(base_sd, instruct_sd, vocab_names)
    if residual_norm == 0:
        raise ConfigError(
            [f"--base {spec.base} and --instruct {spec.instruct} have the same weights: the residual is zero"],
            source="graft",
        )
    origin = _origin(rd, recipe, base_sd, instruct_sd, vocab_names, residual_norm)
    graft = Graft(
        spec=spec,
        adapted=adapted,
        tok=load_tokenizer(str(final)),
        base=base_sd,
        instruct=instruct_sd,
        base_tok=base_tok,
        instruct_tok=instruct_tok,
        instruct_dir=paths["--instruct"],
        vocab_names=vocab_names,
        dtype=_saved_dtype(final),
        origin=origin,
    )
    if origin.from_instruct and not spec.allow_double_residual:
        raise InputError(_double_message(recipe, graft), hint=_double_hint())
    return graft


def _bottleneck(final: Path) -> bool:
    return (final / "adapters" / ADAPTER_NAME / "adapter_config.json").is_file()


def _resolve(name: str, flag: str) -> str:
    """A folder or hub id `from_pretrained` can load (builtin:NAME and GGUF imports as for model.base)."""
    if not name.strip():
        raise InputError(f"{flag}: give a local model folder, a hub id or builtin:NAME")
    try:
        return resolve_model(ModelConfig(base=name))
    except LangAdaptError as e:
        raise ModelLoadError(f"{flag} {name}: {e.message}", hint=_load_hint(flag)) from None


def _config(path: str, flag: str) -> Any:
    try:
        return load_config(path)
    except ModelLoadError as e:
        raise ModelLoadError(f"{flag}: {e.message}", hint=_load_hint(flag)) from None


def _load_hint(flag: str) -> str:
    return f"point {flag} at a local model folder (config.json, weights, tokenizer), or be online for a hub id"


def _config_mismatches(adapted: Any, other: Any, flag: str, spec: GraftSpec) -> list[str]:
    """What in `other`'s config differs from the adapted model's (the run's base, apart from its vocabulary)."""
    name = spec.base if flag == "--base" else spec.instruct
    out = []
    for key in ARCH_FIELDS:
        mine, theirs = getattr(adapted, key, None), getattr(other, key, None)
        if mine is not None and theirs is not None and mine != theirs:
            out.append(f"{flag} {name}: config {key} is {theirs!r}, the run's model has {mine!r}")
    return out


def _params(model: "PreTrainedModel") -> dict[str, "torch.Tensor"]:
    return {n: p.detach() for n, p in model.named_parameters()}


def _vocab_names(model: "PreTrainedModel") -> tuple[str, ...]:
    """Parameter names of the vocabulary matrices: the input embeddings, and the head when it is not tied."""
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    names = [n for n, p in model.named_parameters() if p is emb]
    if head is not None and head.weight is not emb:
        names += [n for n, p in model.named_parameters() if p is head.weight]
    return tuple(names)


def _shape_mismatches(
    adapted: "PreTrainedModel", other: dict[str, "torch.Tensor"], flag: str, name: str, vocab: tuple[str, ...]
) -> list[str]:
    """Every tensor whose name or shape differs; vocabulary matrices must agree on their width only."""
    mine = _params(adapted)
    out = [
        f"{flag} {name}: has no tensor {n} (shape {tuple(t.shape)} in the run's model)"
        for n, t in mine.items()
        if n not in other
    ]
    out += [
        f"{flag} {name}: has a tensor {n} {tuple(other[n].shape)} the run's model lacks" for n in other if n not in mine
    ]
    for n, t in mine.items():
        if n not in other:
            continue
        a, b = tuple(t.shape), tuple(other[n].shape)
        if n in vocab:
            if a[1:] != b[1:]:
                out.append(f"{flag} {name}: {n} has shape {b}, the run's model {a} (rows may differ, widths may not)")
        elif a != b:
            out.append(f"{flag} {name}: {n} has shape {b}, the run's model {a}")
    return out


def _vocab_mismatches(
    rd: RunDir, base_tok: "PreTrainedTokenizerBase", instruct_tok: "PreTrainedTokenizerBase", spec: GraftSpec
) -> list[str]:
    """The base tokenizer must be the run's base tokenizer: old and new tokens are told apart by it."""
    out = []
    metrics_file = rd.path("tokenizer") / "metrics.json"
    metrics = read_json(metrics_file) if metrics_file.is_file() else {}
    expected = metrics.get("base_vocab_size")
    if expected is not None and len(base_tok) != expected:
        out.append(
            f"--base {spec.base}: its tokenizer has {len(base_tok)} tokens, the run's base tokenizer had {expected}; "
            "old and new rows are told apart by the base vocabulary, so it must be the run's"
        )
    base_vocab, instruct_vocab = base_tok.get_vocab(), instruct_tok.get_vocab()
    shared = sum(1 for t in base_vocab if t in instruct_vocab)
    if shared < len(base_vocab) / 2:
        out.append(
            f"--instruct {spec.instruct}: its tokenizer shares {shared} of the base tokenizer's {len(base_vocab)} "
            "tokens; an instruct model tuned from --base keeps its vocabulary"
        )
    if not instruct_tok.chat_template:
        out.append(f"--instruct {spec.instruct}: its tokenizer has no chat template; is it an instruct model?")
    return out


def _saved_dtype(final: Path) -> str:
    config = read_json(final / "config.json")
    dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
    return str(dtype)


# -- where the run started ----------------------------------------------------------------------


def _distance(a: dict[str, "torch.Tensor"], b: dict[str, "torch.Tensor"], vocab: tuple[str, ...]) -> float:
    """Frobenius distance over the shared (non-vocabulary) tensors, accumulated in float64."""
    total = 0.0
    for n, t in a.items():
        if n not in vocab and n in b:
            total += float((t.double() - b[n].double()).pow(2).sum())
    return math.sqrt(total)


def _init_distances(
    rd: RunDir, base: dict[str, "torch.Tensor"], instruct: dict[str, "torch.Tensor"], vocab: tuple[str, ...]
) -> tuple[int, float, float]:
    """(tensors compared, distance to base, distance to instruct) of `model-init/`, the run's base with its
    new rows before training; read one tensor at a time, so no fourth copy of the model is held."""
    from safetensors import safe_open

    n, to_base, to_instruct = 0, 0.0, 0.0
    for f in sorted(rd.path("init").glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():
                if name in vocab or name not in base:
                    continue
                t = st.get_tensor(name).double()
                n += 1
                to_base += float((t - base[name].double()).pow(2).sum())
                to_instruct += float((t - instruct[name].double()).pow(2).sum())
    return n, math.sqrt(to_base), math.sqrt(to_instruct)


def _origin(
    rd: RunDir,
    recipe: "Recipe",
    base: dict[str, "torch.Tensor"],
    instruct: dict[str, "torch.Tensor"],
    vocab: tuple[str, ...],
    residual_norm: float,
) -> Origin:
    """Started from the instruct model when `model-init/`'s weights are nearer to it than to the base.

    Measured on every shared tensor, relative to the residual's size: a run from the base
    gives 0 against the base and 1 against the instruct model. A quantised import (a GGUF
    base) adds an error q to both, unrelated to the residual, so the distances become q and
    about sqrt(1 + q^2): the nearer one is still the one the run started from. Without
    `model-init/`, the base model's name decides (instruct, chat, -it).
    """
    n, to_base, to_instruct = _init_distances(rd, base, instruct, vocab) if rd.path("init").is_dir() else (0, 0, 0)
    if n:
        to_base, to_instruct = to_base / residual_norm, to_instruct / residual_norm
        return Origin(
            from_instruct=to_instruct < to_base,
            evidence=f"the run's starting weights (model-init/, {n} shared tensors) are at {to_base:.3f} "
            f"from --base and {to_instruct:.3f} from --instruct, in units of the residual's size",
        )
    names_seen = [recipe.model.base, recipe.model.gguf_file]
    if recipe.model.base.startswith("builtin:") and recipe.model.base[len("builtin:") :] in MODELS:
        names_seen.append(MODELS.get(recipe.model.base[len("builtin:") :]).file)
    instruct_name = next((n for n in names_seen if n and _INSTRUCT_NAME.search(n)), "")
    return Origin(
        from_instruct=bool(instruct_name),
        evidence=(f"the run's base is named {instruct_name}" if instruct_name else "the run's base name says base")
        + " (model-init/ is gone, so the weights could not be compared)",
    )


def _double_message(recipe: "Recipe", g: Graft) -> str:
    shared = [p for n, p in _params(g.adapted).items() if n not in g.vocab_names]
    chat = chat_tokens(g.instruct_tok)
    base_vocab, instruct_vocab = g.base_tok.get_vocab(), g.instruct_tok.get_vocab()
    mine = [t for t in g.tok.get_vocab() if t not in chat]
    old = sum(1 for t in mine if t in base_vocab and t in instruct_vocab)
    new = sum(1 for t in mine if t not in base_vocab)
    return (
        f"the run started from an instruct model: {g.origin.evidence}. The recipe continued pretraining of that "
        f"instruct model (model.base: {recipe.model.base}), so the adapted model already carries the instruction "
        f"residual (partly worn away by training). The graft would add (instruct - base) a second time to "
        f"{len(shared)} shared tensors ({sum(p.numel() for p in shared) / 1e6:.2f}M parameters) and to the rows "
        f"of {old} old tokens, keep the rows of {new} new tokens, copy the rows of {len(chat)} chat-template "
        f"tokens ({', '.join(chat)}) from --instruct, and take its chat template and generation config"
    )


def _double_hint() -> str:
    return (
        "for a chat model in the new language, run the recipe from the base model (model.base) and graft that run; "
        f"pass {ALLOW_DOUBLE} to add the residual twice anyway"
    )


# -- the arithmetic -------------------------------------------------------------------------------


def chat_tokens(tok: "PreTrainedTokenizerBase") -> list[str]:
    """The special tokens the tokenizer's chat template writes, in vocabulary order."""
    template = tok.chat_template
    text = "\n".join(template.values()) if isinstance(template, dict) else (template or "")
    specials = set(tok.all_special_tokens) | {t.content for t in tok.added_tokens_decoder.values() if t.special}
    vocab = tok.get_vocab()
    return sorted((t for t in specials if t and t in text and t in vocab), key=vocab.__getitem__)


def apply(g: Graft) -> GraftReport:
    """adapted + (instruct - base) on shared tensors and old rows; chat rows from instruct; new rows kept."""
    import torch

    report = GraftReport(
        g.spec.instruct,
        g.spec.base,
        g.origin,
        tied_head=len(g.vocab_names) == 1,
        chat_tokens=chat_tokens(g.instruct_tok),
    )
    report.added_tokens = [t for t in report.chat_tokens if t not in g.tok.get_vocab()]
    if report.added_tokens:  # the chat template needs them; their rows come from the instruct model below
        g.tok.add_special_tokens(
            {"additional_special_tokens": report.added_tokens}, replace_additional_special_tokens=False
        )
        rows = g.adapted.get_input_embeddings().weight.shape[0]
        if len(g.tok) > rows:
            g.adapted.resize_token_embeddings(len(g.tok), mean_resizing=False)
        g.vocab_names = _vocab_names(g.adapted)
    params = _params(g.adapted)
    with torch.no_grad():
        for name, p in params.items():
            if name in g.vocab_names:
                report.matrices.append(_graft_rows(g, name, p, set(report.chat_tokens)))
            else:
                p.copy_(p + (g.instruct[name] - g.base[name]))
                report.shared_tensors += 1
                report.shared_parameters += p.numel()
    g.tok.chat_template = g.instruct_tok.chat_template
    eos = g.instruct_tok.eos_token
    if eos and eos != g.tok.eos_token and eos in g.tok.get_vocab():
        report.eos_change = (str(g.tok.eos_token), eos)
        g.tok.eos_token = eos
        g.adapted.config.eos_token_id = g.tok.convert_tokens_to_ids(eos)
    report.generation_config = _generation_config(g)
    log.info(
        "graft: residual on %d shared tensors; %s",
        report.shared_tensors,
        "; ".join(
            f"{m.name}: {m.residual} old rows, {m.new_kept} new kept, {m.chat_from_instruct} chat"
            for m in report.matrices
        ),
    )
    return report


def _graft_rows(g: Graft, name: str, p: "torch.Tensor", chat: set[str]) -> MatrixRows:
    """One vocabulary matrix, row by row through the token strings."""
    import torch

    rows = MatrixRows(name)
    base_vocab, instruct_vocab = g.base_tok.get_vocab(), g.instruct_tok.get_vocab()
    base_m, instruct_m = g.base[name], g.instruct[name]
    mine, old_b, old_i, chat_mine, chat_i = [], [], [], [], []
    used = set()
    for token, i in g.tok.get_vocab().items():
        if i >= p.shape[0]:
            continue
        used.add(i)
        if token in chat:
            chat_mine.append(i)
            chat_i.append(instruct_vocab[token])
            continue
        b, j = base_vocab.get(token), instruct_vocab.get(token)
        if b is None or b >= base_m.shape[0]:
            rows.new_kept += 1
        elif j is None or j >= instruct_m.shape[0]:
            rows.old_without_instruct_row += 1
        else:
            mine.append(i)
            old_b.append(b)
            old_i.append(j)
    rows.untokened_kept = p.shape[0] - len(used)
    if mine:
        idx = torch.tensor(mine)
        p[idx] = p[idx] + (instruct_m[torch.tensor(old_i)] - base_m[torch.tensor(old_b)])
    if chat_mine:
        p[torch.tensor(chat_mine)] = instruct_m[torch.tensor(chat_i)]
    rows.residual, rows.chat_from_instruct = len(mine), len(chat_mine)
    return rows


def _generation_config(g: Graft) -> str:
    """The instruct model's generation config, its token ids mapped to the grafted vocabulary's."""
    from transformers import GenerationConfig

    try:
        gen = GenerationConfig.from_pretrained(g.instruct_dir)
    except OSError:
        return "none (the instruct model has none)"
    vocab, dropped = g.tok.get_vocab(), []
    for key in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"):
        ids = getattr(gen, key, None)
        if ids is None:
            continue
        many = isinstance(ids, list)
        mapped = []
        for i in ids if many else [ids]:
            token = g.instruct_tok.convert_ids_to_tokens(int(i))
            if token in vocab:
                mapped.append(vocab[token])
            else:
                dropped.append(f"{key} {token}")
        setattr(gen, key, mapped if many else (mapped[0] if mapped else None))
    g.adapted.generation_config = gen
    return "from --instruct, token ids mapped by token string" + (
        f" (not in the grafted vocabulary, dropped: {', '.join(dropped)})" if dropped else ""
    )


def save(g: Graft, out: Path) -> None:
    """The grafted model in the adapted model's dtype, with its tokenizer and generation config."""
    import torch

    g.adapted.to(getattr(torch, g.dtype))
    g.adapted.save_pretrained(out)
    g.tok.save_pretrained(out)


# -- the model card -------------------------------------------------------------------------------


def card_section(r: GraftReport, run_name: str) -> list[str]:
    """The model card's account of the graft: what got the residual, which rows kept or replaced."""
    lines = [
        "## Instruction graft",
        "",
        f'The instruction residual (`{r.instruct}` minus `{r.base}`; Huang et al. 2023, "Chat Vector"; '
        "Jindal et al. 2024) was added to the adapted model, aware of its vocabulary:",
        "",
        f"- {r.shared_tensors} shared tensors ({r.shared_parameters / 1e6:.2f}M parameters) got the residual whole",
    ]
    for m in r.matrices:
        what = "embeddings and tied head" if r.tied_head else ("head" if "head" in m.name else "embeddings")
        lines.append(
            f"- `{m.name}` ({what}): {m.residual} rows of old tokens got the residual; {m.new_kept} rows of new "
            f"tokens kept their trained values; {m.chat_from_instruct} chat-template token rows were replaced by "
            "the instruct model's"
            + (
                f"; {m.old_without_instruct_row} old tokens the instruct vocabulary lacks kept theirs"
                if m.old_without_instruct_row
                else ""
            )
            + (f"; {m.untokened_kept} rows no token uses kept theirs" if m.untokened_kept else "")
        )
    if r.chat_tokens:
        lines.append(f"- chat-template tokens: {', '.join(f'`{t}`' for t in r.chat_tokens)}")
    if r.added_tokens:
        lines.append(
            f"- added to the vocabulary (the chat template writes them): {', '.join(f'`{t}`' for t in r.added_tokens)}"
        )
    lines.append("- chat template: from the instruct model; generation config: " + r.generation_config)
    if r.eos_change:
        lines.append(f"- end-of-sequence token: `{r.eos_change[0]}` -> `{r.eos_change[1]}` (the instruct model's)")
    lines.append(f"- where the run started: {r.origin.evidence}")
    if r.origin.from_instruct:
        lines.append(
            "- **the run started from an instruct model, and the residual was added anyway "
            f"({ALLOW_DOUBLE}): this model carries it twice**"
        )
    lines += [
        "",
        "```bash",
        f"langadapt graft runs/{run_name} --instruct {r.instruct} --base {r.base}"
        + (f" {ALLOW_DOUBLE}" if r.origin.from_instruct else ""),
        "```",
        "",
    ]
    return lines


def report_json(r: GraftReport) -> str:
    """The report as JSON (`langadapt_graft.json` beside the model)."""
    from dataclasses import asdict

    return json.dumps(asdict(r), indent=2, ensure_ascii=False)
