"""Token ids in, text out, piece by piece, as generation goes.

Decoding each new token on its own is wrong for most tokenizers: a byte-level BPE token can
hold half of a UTF-8 character, WordPiece puts spaces between words but glues `##` pieces,
SentencePiece drops the space of the first piece. So the stream decodes a short window of
recent tokens twice, with and without the newest, and emits the difference; while that
ends in U+FFFD (a character still missing bytes) it waits, up to 4 tokens (a UTF-8
character has at most 4 bytes), after which the bytes really are invalid and go out as
U+FFFD rather than stall the stream.

Stop strings: text that could be the start of a stop string is held back until it is
clearly not one; when one appears, the stream ends just before it.
"""

from __future__ import annotations

from collections.abc import Sequence

from lmforge.tokenizers import Tokenizer

INCOMPLETE = "\ufffd"
MAX_HELD_TOKENS = 4


class TextStream:
    def __init__(self, tokenizer: Tokenizer, stop_strings: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stop_strings = [s for s in stop_strings if s]
        self.ids: list[int] = []
        self.start = 0  # first token of the decoding window
        self.read = 0  # tokens whose text has been taken in
        self.pending = ""  # taken in, not yet emitted (could begin a stop string)
        self.stopped = False  # a stop string was found
        self.text = ""  # everything emitted

    def push(self, token_id: int) -> str:
        """Take one generated token; return the text that can be shown now."""
        if self.stopped:
            return ""
        self.ids.append(token_id)
        decode = self.tokenizer.decode
        before = decode(self.ids[self.start : self.read])
        after = decode(self.ids[self.start :])
        waiting = len(self.ids) - self.read
        if after.endswith(INCOMPLETE) and waiting < MAX_HELD_TOKENS:
            return ""
        # Keep a token of context so the next window decodes as it would in the sequence.
        new = after[len(before) :] if after.startswith(before) else after
        self.start, self.read = max(self.read - 1, 0), len(self.ids)
        return self._emit(new, final=False)

    def finish(self) -> str:
        """The text still held back, at the end of generation."""
        if self.stopped:
            return ""
        rest = ""
        if self.read < len(self.ids):
            before = self.tokenizer.decode(self.ids[self.start : self.read])
            after = self.tokenizer.decode(self.ids[self.start :])
            rest = after[len(before) :] if after.startswith(before) else after
            self.read = len(self.ids)
        return self._emit(rest, final=True)

    def _emit(self, new: str, final: bool) -> str:
        text = self.pending + new
        cut = min((i for i in (text.find(s) for s in self.stop_strings) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            out, self.pending = text[:cut], ""
        elif final:
            out, self.pending = text, ""
        else:
            hold = max((_overlap(text, s) for s in self.stop_strings), default=0)
            out, self.pending = text[: len(text) - hold], text[len(text) - hold :]
        self.text += out
        return out


def _overlap(text: str, stop: str) -> int:
    """Length of the longest end of `text` that is a beginning of `stop`."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0
