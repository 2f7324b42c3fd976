"""The `init` section of a recipe, and its checks (every problem reported at validation)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from langadapt.config import SourceConfig, opt

if TYPE_CHECKING:
    pass

VECTOR_METHODS = ("focus", "wechsel", "ofa")  # always need locally trained fastText vectors
TRANSLIT_MODES = ("", "min", "mean", "max")


@dataclass(frozen=True, kw_only=True)
class InitConfig:
    method: str = opt("fvt", "how rows for new tokens are initialised (see `langadapt list init-methods`)")
    neighbours: int = opt(10, "wechsel/clp/ofa: how many most similar old tokens a new row may combine")
    focus_top_k: int = opt(
        0,
        "focus: 0 takes sparsemax over the similarities to every overlapping token, as the paper does; k > 0 is a "
        "variant that keeps only the k most similar before sparsemax, so a row combines at most k tokens (cheaper "
        "with very many overlapping tokens; langadapt's default before it followed the paper was 10)",
    )
    temperature: float = opt(0.1, "wechsel/ofa: softmax temperature over cosine similarities")
    omp_atoms: int = opt(8, "omp: how many anchor tokens Orthogonal Matching Pursuit may combine per new token")
    ofa_rank: int = opt(100, "ofa: rank of the factorised embeddings (at most the model's hidden size)")
    helper_model: str = opt(
        "",
        "clp (required) and omp (optional donor space): a small model already trained on the target language, "
        "as a hub id or local folder; its vocabulary should cover the new tokens",
    )
    dictionary: str = opt(
        "",
        "wechsel: bilingual dictionary between the replay (source) and target language: a dictd file from Debian's "
        "dict-freedict-* packages (/usr/share/dictd/freedict-xxx-yyy.index) or a TSV of word pairs; the direction "
        "is detected from the corpus",
    )
    parallel_source: SourceConfig | None = opt(
        None, "wechsel: source-language side of parallel text; documents pair with the target side by id"
    )
    parallel_target: SourceConfig | None = opt(
        None, "wechsel: target-language side of parallel text; a dictionary is induced with the eflomal word aligner"
    )
    vector_dim: int = opt(100, "focus/wechsel/omp/ofa: size of the locally trained fastText vectors")
    vector_epochs: int = opt(5, "focus/wechsel/omp/ofa: fastText training epochs (vectors are cached in the run dir)")
    compare: tuple[str, ...] = opt(
        (),
        "other init methods to score beside init.method before any training: each initialises a fresh copy of the "
        "base, and all are scored on held-out target text (init_report.json 'comparison', shown in the report); "
        "only init.method's model is kept",
    )
    compare_chars: int = opt(4000, "init.compare: characters of held-out target text each method is scored on")
    device: str = opt(
        "auto",
        "where the heavy tensor work runs: the similarity searches of focus, wechsel, clp and omp, and init.compare's "
        "scoring (in eval.precision): auto (a CUDA GPU when present, else the CPU), cpu, cuda, cuda:N; the rows "
        "match the CPU's to float64 rounding (a tie between neighbours may break the other way)",
    )
    translit_mode: str = opt(
        "",
        "tokens listed in tokenizer/token_sources.json (transliteration merge): combine their source rows by "
        "min, mean or max; empty: the file's init_hint, else mean",
    )
