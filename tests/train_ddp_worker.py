"""One training process for tests/test_train_distributed.py (run directly or under torchrun).

python train_ddp_worker.py SPEC.json
SPEC: model dir, texts, recipe dict, out dir; optional new_ids (rows of new tokens that train),
heldout (texts evaluated every train.eval_every steps) and die_after (exit hard right after the
checkpoint of that step, on every process). Rank 0 writes
summary.json and final.safetensors (the trained weights of the model the loop hands back);
every rank logs to log-rank<N>.txt.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path


def main() -> None:
    import torch

    from langadapt.models.loading import doc_separator_id, load_model, load_tokenizer
    from langadapt.recipe import Recipe
    from langadapt.train import loop
    from langadapt.train.data import TokenStream
    from langadapt.train.distributed import loads_on_meta, meta_model
    from langadapt.train.methods import TRAIN_METHODS
    from langadapt.train.mlm import MaskingPlan, masked_lm
    from langadapt.train.processes import launched_rank

    spec = json.loads(Path(sys.argv[1]).read_text())
    torch.manual_seed(0)
    torch.set_num_threads(1)
    recipe = Recipe.from_dict(spec["recipe"])
    tok = load_tokenizer(spec["model"])
    new_ids = spec.get("new_ids", [])
    # as the train stage loads it: under FSDP, processes > 0 build the model on the meta device (rank 0's weights
    # reach them when it is sharded), so the comparisons with one process below also check that
    on_meta = loads_on_meta(recipe.train.sharding)
    base = meta_model(spec["model"], "float32") if on_meta else load_model(spec["model"])
    model = TRAIN_METHODS.get(recipe.train.method)(base, recipe.train, new_ids)
    objective = None  # the registry's (clm); mlm binds its masking plan
    if recipe.train.objective == "mlm":
        objective = masked_lm(MaskingPlan.from_tokenizer(tok, recipe.train, launched_rank()))
    streams = {"nya": TokenStream(spec["texts"], tok, doc_separator_id(tok), recipe.train.seq_len, recipe.seed)}
    streams["nya"].heldout = spec.get("heldout", [])
    die_after = spec.get("die_after", 0)
    if die_after:
        real_save = loop.save_checkpoint

        def save_then_die(out, step, *args, **kwargs):  # type: ignore[no-untyped-def]
            real_save(out, step, *args, **kwargs)
            if step == die_after:
                os._exit(3)  # a hard kill once the checkpoint is on disk: no clean-up

        loop.save_checkpoint = save_then_die
    Path(spec["out"]).mkdir(parents=True, exist_ok=True)
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(filename=Path(spec["out"], f"log-rank{rank}.txt"), level=logging.INFO)
    summary = loop.train_loop(model, streams, "nya", None, recipe, Path(spec["out"]), objective=objective)
    if int(os.environ.get("RANK", "0")) == 0:
        from safetensors.torch import save_file

        trained = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(trained, Path(spec["out"], "final.safetensors"))  # what the caller gets back after training
        Path(spec["out"], "summary.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
