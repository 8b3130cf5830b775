"""Token shards on disk and the loaders that read training windows from them."""

from lmforge.data.loader import WindowSampler, eval_windows
from lmforge.data.shards import ShardInfo, encode_documents, open_split, write_split

__all__ = [
    "ShardInfo",
    "WindowSampler",
    "encode_documents",
    "eval_windows",
    "open_split",
    "write_split",
]
