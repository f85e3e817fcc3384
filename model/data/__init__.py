"""Data: speech and handwriting loaders, normalisation, splits and batching.

    from model.data import load_speech_corpus, load_handwriting_corpus, make_loader
    corpus = load_speech_corpus("data/speech-demo")          # Corpus: train/valid/test, stats
    for x, mask in make_loader(corpus.train, batch_size=32, seed=0):
        ...

Demo corpora are built by `python -m model.prepare` (see model/demo/).
"""

from .batching import Batch, PadCollate, SequenceDataset, make_loader, pad_batch
from .corpus import SPLITS, Corpus, find_files, split_items
from .errors import DataError
from .handwriting import (
    check_offsets,
    load_handwriting_corpus,
    load_handwriting_file,
    offsets_to_strokes,
    parse_iam_xml,
    parse_json,
    read_handwriting,
    strokes_to_offsets,
)
from .normalise import NormStats, fit_handwriting_stats, fit_speech_stats
from .speech import chunk_audio, frames_from_audio, load_audio, load_speech_corpus, load_speech_file, resample

__all__ = [
    "SPLITS",
    "Batch",
    "Corpus",
    "DataError",
    "NormStats",
    "PadCollate",
    "SequenceDataset",
    "check_offsets",
    "chunk_audio",
    "find_files",
    "fit_handwriting_stats",
    "fit_speech_stats",
    "frames_from_audio",
    "load_audio",
    "load_handwriting_corpus",
    "load_handwriting_file",
    "load_speech_corpus",
    "load_speech_file",
    "make_loader",
    "offsets_to_strokes",
    "pad_batch",
    "parse_iam_xml",
    "parse_json",
    "read_handwriting",
    "resample",
    "split_items",
    "strokes_to_offsets",
]
