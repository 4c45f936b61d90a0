"""Evaluation: tasks (benchmark layouts), batched resumable prediction, judges (LLM and judge-free), scores and
reports."""

from .answers import exact_match, extract_choice, normalize_answer, token_f1
from .predict import predict, read_jsonl

__all__ = ["exact_match", "extract_choice", "normalize_answer", "predict", "read_jsonl", "token_f1"]
