"""Datasets: the field's JSON layouts, row checks, and the training dataset."""

from .dataset import VideoChatDataset, usable_samples
from .formats import FORMATS, DataError, Sample, load_samples, read_records, to_records
from .validate import check_length, check_sample

__all__ = [
    "FORMATS",
    "DataError",
    "Sample",
    "VideoChatDataset",
    "check_length",
    "check_sample",
    "load_samples",
    "read_records",
    "to_records",
    "usable_samples",
]
