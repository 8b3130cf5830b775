"""Token shards: one flat numpy memmap per split plus a small JSON header.

`<split>.bin` holds the token ids of every document, each preceded by the end-of-text token,
as uint16 when the vocabulary fits in 16 bits and uint32 otherwise. `<split>.json` records
dtype, token count, text bytes and documents, so readers need no guessing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lmforge.errors import LmforgeError
from lmforge.fileio import atomic_path, write_json


@dataclass
class ShardInfo:
    dtype: str
    tokens: int
    text_bytes: int
    documents: int
    vocab_size: int


def dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def write_split(
    directory: str | Path,
    split: str,
    token_arrays: Iterable[tuple[np.ndarray, int]],
    vocab_size: int,
    separator: int | None,
) -> ShardInfo:
    """Write (ids, text_bytes) pairs, one per document, as `<split>.bin` and `<split>.json`."""
    directory = Path(directory)
    dtype = dtype_for(vocab_size)
    tokens = text_bytes = documents = 0
    with atomic_path(directory / f"{split}.bin") as tmp, open(tmp, "wb") as f:
        for ids, n_bytes in token_arrays:
            if separator is not None:
                ids = np.concatenate([[separator], ids])
            f.write(np.asarray(ids, dtype=dtype).tobytes())
            tokens += len(ids)
            text_bytes += n_bytes
            documents += 1
    info = ShardInfo(dtype.name, tokens, text_bytes, documents, vocab_size)
    write_json(directory / f"{split}.json", asdict(info))
    return info


def open_split(directory: str | Path, split: str) -> tuple[np.memmap, ShardInfo]:
    directory = Path(directory)
    try:
        info = ShardInfo(**json.loads((directory / f"{split}.json").read_text("utf-8")))
        tokens = np.memmap(directory / f"{split}.bin", dtype=info.dtype, mode="r")
    except (OSError, ValueError, TypeError) as e:
        raise LmforgeError(
            f"token shard '{split}' in {directory} is missing or corrupt ({e}); rebuild the run"
        ) from None
    if len(tokens) != info.tokens:
        raise LmforgeError(
            f"{directory / split}.bin holds {len(tokens)} tokens, its header says {info.tokens}; "
            "it is truncated: rebuild the shards"
        )
    return tokens, info


# -- encoding documents, on every core for large corpora

_worker_tokenizer = None


def _init_worker(tokenizer) -> None:
    global _worker_tokenizer
    _worker_tokenizer = tokenizer


def _encode_one(text: str) -> tuple[np.ndarray, int]:
    return _worker_tokenizer.encode_array(text), len(text.encode("utf-8"))


def encode_documents(
    tokenizer,
    texts: list[str],
    progress: str | None = None,
    workers: int | None = None,
    parallel_from: int = 2**22,
) -> Iterator[tuple[np.ndarray, int]]:
    """(ids, text bytes) per document, in order. Corpora of `parallel_from` characters or more
    are encoded by a pool of processes (one per core; starting one costs more than encoding a
    small corpus); each document stays whole, so results equal a serial run."""
    import os

    from tqdm import tqdm

    total = sum(len(t) for t in texts)
    workers = workers or os.cpu_count() or 1
    serial = workers == 1 or total < parallel_from or len(texts) < 2
    bar = tqdm(
        total=len(texts),
        desc=progress,
        unit="doc",
        disable=progress is None or serial,
        leave=False,
    )
    if serial:
        for text in texts:
            yield tokenizer.encode_array(text), len(text.encode("utf-8"))
            bar.update(1)
        bar.close()
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(tokenizer,)) as pool:
        for result in pool.map(_encode_one, texts, chunksize=max(1, len(texts) // (8 * workers))):
            yield result
            bar.update(1)
    bar.close()
