"""OMP transplantation (mergekit's tokensurgeon; Goddard & Fernandes Neto, 2025), training-free.

Each new token is approximated in a donor space as a sparse linear combination of a few
anchor tokens (tokens the donor and the base vocabulary share) by Orthogonal Matching
Pursuit; the same coefficients, applied to the anchors' rows in the base model, give its
row. The donor space is the helper model's embeddings when the recipe names one
(init.helper_model), otherwise the fastText token vectors trained on the target corpus.
Coefficients are least-squares fits, so they may be negative and need not sum to one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from langadapt.init.methods import (
    INIT_METHODS,
    InitInputs,
    InitRows,
    Mixture,
    mixture_rows,
    pieces_mixture,
    replace_rows,
)

if TYPE_CHECKING:
    import torch


def omp(
    queries: "torch.Tensor", atoms: "torch.Tensor", k: int, device: "torch.device | None" = None
) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Batched Orthogonal Matching Pursuit: (atom positions (n, k), coefficients (n, k)), on the CPU.

    Each step picks the atom most correlated with the residual (atoms compared by
    direction), then refits all chosen coefficients by least squares. Runs on `device`
    (default: where the tensors are); least squares by SVD (gelsd) on a CPU, by QR (gels,
    the one CUDA has) on a GPU, which agree while the chosen atoms are independent.
    """
    import torch

    atoms = atoms.to(device or atoms.device)
    driver = "gelsd" if atoms.device.type == "cpu" else None
    k = min(k, atoms.shape[0])
    unit = torch.nn.functional.normalize(atoms, dim=1)
    all_idx, all_coef = [], []
    for start in range(0, queries.shape[0], 512):
        q = queries[start : start + 512].to(atoms.device)
        residual = q.clone()
        chosen = torch.zeros(q.shape[0], 0, dtype=torch.long, device=atoms.device)
        coef = torch.zeros(q.shape[0], 0, dtype=q.dtype, device=atoms.device)
        for _ in range(k):
            corr = (residual @ unit.T).abs()
            corr.scatter_(1, chosen, -1.0)
            chosen = torch.cat([chosen, corr.argmax(1, keepdim=True)], 1)
            basis = atoms[chosen].transpose(1, 2)  # (b, d, t)
            coef = torch.linalg.lstsq(basis, q.unsqueeze(-1), driver=driver).solution.squeeze(-1)
            residual = q - (basis @ coef.unsqueeze(-1)).squeeze(-1)
        all_idx.append(chosen.cpu())
        all_coef.append(coef.cpu())
    if not all_idx:
        return torch.zeros(0, k, dtype=torch.long), torch.zeros(0, k, dtype=queries.dtype)
    return torch.cat(all_idx), torch.cat(all_coef)


def omp_mixture(x: InitInputs) -> Mixture:
    from langadapt.init.focus import new_token_space, query_vectors, token_anchors

    ctx = x.need_context("omp")
    if ctx.config.helper_model:
        from langadapt.init.clp import helper_anchors, helper_queries

        anchors = helper_anchors(ctx)
        queries, usable = helper_queries(ctx, x.tokens)
    else:
        space = new_token_space(ctx)
        anchors = token_anchors(ctx, space)
        queries, usable = query_vectors(space, x.tokens)
    rows = usable.nonzero().flatten()
    pos, coef = omp(queries[rows], anchors.vectors, ctx.config.omp_atoms, ctx.device)
    ids = [anchors.old_ids[p] for p in pos]
    return replace_rows(pieces_mixture(x.pieces), rows.tolist(), ids, list(coef), "omp")


@INIT_METHODS.register(
    "omp",
    help="Orthogonal Matching Pursuit over shared anchor tokens in a donor space (helper model, else fastText on the "
    "target corpus), coefficients applied in the base space (tokensurgeon, Goddard & Fernandes Neto 2025)",
)
def init_omp(x: InitInputs) -> InitRows:
    return mixture_rows(x, x.mixture or omp_mixture(x))
