"""Token shards on disk and the loaders that read training windows from them."""

from lmforge.data.loader import ExampleSampler, WindowSampler, eval_windows
from lmforge.data.shards import ShardInfo, encode_documents, open_split, write_split

__all__ = [
    "ExampleSampler",
    "ShardInfo",
    "WindowSampler",
    "encode_documents",
    "eval_windows",
    "open_split",
    "write_split",
]
