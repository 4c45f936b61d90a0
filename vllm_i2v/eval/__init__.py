"""Evaluation: batched, resumable prediction over (video, question) rows, answer normalization and scores."""

from .answers import exact_match, normalize_answer
from .predict import predict

__all__ = ["exact_match", "normalize_answer", "predict"]
