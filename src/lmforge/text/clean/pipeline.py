"""The cleaning pipeline: a recipe (YAML) names steps and their settings; documents stream
through them in chunks, the per-document steps in a process pool, the steps with corpus-wide
state (exact dedup, repeated spans, near-dup clustering) in the main process.

Near-duplicate removal needs the whole corpus before it can keep one document per cluster:
the documents reaching it are spilled to a temporary JSONL file beside the output while their
signatures are indexed (only signatures stay in memory), then read back and filtered.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path

import yaml

from lmforge.errors import LmforgeError
from lmforge.fileio import check_new_directory, staged_directory
from lmforge.text.clean import filters, minhash
from lmforge.text.clean.decontaminate import Decontaminator
from lmforge.text.clean.dedup import ExactDedup, SpanDedup
from lmforge.text.clean.normalize import normalize
from lmforge.text.clean.pii import redact
from lmforge.text.clean.reader import MAX_DOC_BYTES, iter_documents

EXAMPLES = 3  # removed documents shown per rule in the report
EXAMPLE_CHARS = 300
CHUNK = 512  # documents read before each round trip to the pool


# ---------------------------------------------------------------- steps


class Step:
    """One step. `apply(text) -> (text or None, rule or None, counts)`; `local` steps hold
    no state across documents and run in worker processes."""

    local = True

    def __init__(self, name: str, **settings):
        self.name = name
        self.settings = settings

    def apply(self, text: str):
        raise NotImplementedError


class Normalize(Step):
    def __init__(self, name, form="NFC", mojibake=True, collapse_whitespace=True):
        super().__init__(name)
        self.kw = dict(form=form, mojibake=mojibake, collapse_whitespace=collapse_whitespace)
        normalize("", **self.kw)  # validates the form

    def apply(self, text):
        out = normalize(text, **self.kw)
        return (out, None, {}) if out.strip() else (None, "empty", {})


class GopherQuality(Step):
    def __init__(self, name, **thresholds):
        super().__init__(name)
        self.rule = filters.GopherQuality(**thresholds)

    def apply(self, text):
        rule = self.rule(text)
        return (None, rule, {}) if rule else (text, None, {})


class GopherRepetition(GopherQuality):
    def __init__(self, name, **thresholds):
        Step.__init__(self, name)
        self.rule = filters.GopherRepetition(**thresholds)


class C4(Step):
    def __init__(self, name, **settings):
        super().__init__(name)
        self.rule = filters.C4Filter(**settings)

    def apply(self, text):
        out, rule, lines = self.rule(text)
        return (None if rule else out), rule, dict(lines)


class Language(Step):
    def __init__(self, name, keep=("en",), min_score=0.65):
        super().__init__(name)
        self.keep = set(keep or ())
        self.min_score = float(min_score)

    def apply(self, text):
        from lmforge.text.clean.language import identify

        lang, score = identify(text)
        counts = {f"language_{lang}": 1}
        if self.keep and lang not in self.keep:
            return None, "language_not_kept", counts
        if score < self.min_score:
            return None, "language_low_score", counts
        return text, None, counts


class PII(Step):
    def __init__(self, name, kinds=None):
        super().__init__(name)
        self.kinds = set(kinds) if kinds else None

    def apply(self, text):
        out, counts = redact(text, self.kinds)
        return out, None, {f"pii_{k}": n for k, n in counts.items()}


class Decontaminate(Step):
    def __init__(self, name, eval=(), n=13, min_matches=1, text_field="text"):  # noqa: A002
        super().__init__(name)
        texts = (d["text"] for d in iter_documents(list(eval), text_field)) if eval else ()
        self.dec = Decontaminator(texts, n=n, min_matches=min_matches)

    def apply(self, text):
        return (
            (None, "decontaminate_ngram_overlap", {})
            if self.dec.is_contaminated(text)
            else (
                text,
                None,
                {},
            )
        )


class ExactDedupStep(Step):
    local = False

    def __init__(self, name):
        super().__init__(name)
        self.dedup = ExactDedup()

    def apply(self, text):
        return (None, "exact_duplicate", {}) if self.dedup.is_duplicate(text) else (text, None, {})


class SpanDedupStep(Step):
    local = False

    def __init__(self, name, unit="line", min_chars=64):
        super().__init__(name)
        self.dedup = SpanDedup(unit, min_chars)

    def apply(self, text):
        out, removed = self.dedup(text)
        counts = {f"repeated_{self.dedup.sep == chr(10) and 'line' or 'paragraph'}s": removed}
        if not out.strip():
            return None, "only_repeated_spans", counts
        return out, None, counts


class NearDedup(Step):
    """Settings: threshold (0.8), num_perm (128), ngram (5), unit (word|char), bands and rows
    (default: chosen from threshold, see minhash.default_bands), seed."""

    local = False

    def __init__(self, name, threshold=0.8, num_perm=128, ngram=5, unit="word", bands=None,
                 rows=None, seed=1):  # fmt: skip
        super().__init__(name)
        if bands is None or rows is None:
            bands, rows = minhash.default_bands(threshold, num_perm)
        self.shingler = minhash.Shingler(ngram, unit)
        self.hasher = minhash.MinHasher(num_perm, seed)
        self.params = dict(threshold=threshold, num_perm=num_perm, bands=bands, rows=rows)
        self.index = minhash.LSHIndex(num_perm, bands, rows, threshold)

    def signatures(self, texts: list[str]):
        return self.hasher.signatures([self.shingler.hashes(t) for t in texts])


STEPS = {
    "normalize": Normalize,
    "exact_dedup": ExactDedupStep,
    "span_dedup": SpanDedupStep,
    "gopher_quality": GopherQuality,
    "gopher_repetition": GopherRepetition,
    "c4": C4,
    "language": Language,
    "pii": PII,
    "decontaminate": Decontaminate,
    "near_dedup": NearDedup,
}


def build_step(spec: tuple[str, dict]) -> Step:
    name, settings = spec
    if name not in STEPS:
        raise LmforgeError(f"unknown cleaning step '{name}'; steps are: {', '.join(STEPS)}")
    try:
        return STEPS[name](name, **settings)
    except TypeError as e:
        raise LmforgeError(f"step '{name}': {e}; see docs/data.md for its settings") from None


# ---------------------------------------------------------------- recipes


def recipe_names() -> list[str]:
    folder = resources.files("lmforge") / "configs" / "data"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_recipe(source: str | dict) -> tuple[str, list[tuple[str, dict]]]:
    """(name, [(step, settings)]) from a recipe name, a YAML path, or a mapping with `steps`."""
    if isinstance(source, dict):
        data, name = source, source.get("name", "inline")
    else:
        path = Path(source)
        if path.suffix in (".yaml", ".yml") or path.exists():
            if not path.is_file():
                raise LmforgeError(f"recipe file not found: {source}")
            text, name = path.read_text("utf-8"), path.stem
        elif source in recipe_names():
            text = (resources.files("lmforge") / "configs" / "data" / f"{source}.yaml").read_text(
                "utf-8"
            )
            name = source
        else:
            raise LmforgeError(
                f"unknown recipe '{source}'; give a YAML file or one of: "
                f"{', '.join(recipe_names())}"
            )
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise LmforgeError(f"recipe {source} is not valid YAML: {e}") from None
    steps = data.get("steps") if isinstance(data, dict) else None
    if not isinstance(steps, list) or not steps:
        raise LmforgeError(f"recipe {name}: give a non-empty list under 'steps:'")
    out = []
    for item in steps:
        if isinstance(item, str):
            item = {item: {}}
        if not isinstance(item, dict) or len(item) != 1:
            raise LmforgeError(f"recipe {name}: each step is a name or 'name: {{settings}}'")
        ((step, settings),) = item.items()
        if settings is not None and not isinstance(settings, dict):
            raise LmforgeError(f"recipe {name}: settings of '{step}' must be a mapping")
        out.append((step, dict(settings or {})))
    for spec in out:
        if spec[0] not in STEPS:
            build_step(spec)  # raises with the list of steps
    return name, out


# ---------------------------------------------------------------- statistics


def _new_stats(name: str) -> dict:
    return {
        "step": name,
        "docs_in": 0,
        "docs_out": 0,
        "bytes_in": 0,
        "bytes_out": 0,
        "removed": Counter(),
        "counts": Counter(),
        "examples": {},
    }


def _merge(into: dict, other: dict) -> None:
    for key in ("docs_in", "docs_out", "bytes_in", "bytes_out"):
        into[key] += other[key]
    into["removed"].update(other["removed"])
    into["counts"].update(other["counts"])
    for rule, shown in other["examples"].items():
        mine = into["examples"].setdefault(rule, [])
        mine.extend(shown[: EXAMPLES - len(mine)])


def _run_steps(steps: list[Step], stats: list[dict], docs: list[dict]) -> list[dict]:
    """Run docs through steps in order, recording what each did."""
    for step, st in zip(steps, stats):
        kept = []
        for doc in docs:
            size = len(doc["text"].encode("utf-8"))
            st["docs_in"] += 1
            st["bytes_in"] += size
            text, rule, counts = step.apply(doc["text"])
            st["counts"].update(counts)
            if text is None:
                st["removed"][rule] += 1
                shown = st["examples"].setdefault(rule, [])
                if len(shown) < EXAMPLES:
                    shown.append({"source": doc["source"], "text": doc["text"][:EXAMPLE_CHARS]})
                continue
            doc["text"] = text
            st["docs_out"] += 1
            st["bytes_out"] += len(text.encode("utf-8"))
            kept.append(doc)
        docs = kept
    return docs


# ---------------------------------------------------------------- workers

_WORKER_STEPS: list[Step] = []


def _init_worker(specs, steps=None):
    """A worker builds its own copy of the steps that run there."""
    global _WORKER_STEPS
    _WORKER_STEPS = steps or [
        build_step(s) if STEPS[s[0]].local or s[0] == "near_dedup" else None for s in specs
    ]


def _work(task):
    kind, indices, docs = task
    if kind == "signatures":
        step = _WORKER_STEPS[indices[0]]
        return step.signatures([d["text"] for d in docs])
    steps = [_WORKER_STEPS[i] for i in indices]
    stats = [_new_stats(s.name) for s in steps]
    return _run_steps(steps, stats, docs), stats


class _Runner:
    """Runs groups of local steps on a chunk, in this process or spread over a pool."""

    def __init__(self, specs, steps, workers: int):
        self.steps = steps
        self.pool = None
        if workers > 1:
            import multiprocessing as mp

            self.pool = mp.get_context("spawn").Pool(workers, _init_worker, (specs,))
            self.workers = workers
        else:
            _init_worker(specs, steps)

    def _split(self, docs):
        if self.pool is None:
            return [docs]
        n = max(1, -(-len(docs) // (self.workers * 2)))
        return [docs[i : i + n] for i in range(0, len(docs), n)]

    def _map(self, tasks):
        return self.pool.map(_work, tasks) if self.pool else [_work(t) for t in tasks]

    def local(self, indices, docs, stats):
        out = []
        for kept, part_stats in self._map([("steps", indices, p) for p in self._split(docs)]):
            out.extend(kept)
            for i, st in zip(indices, part_stats):
                _merge(stats[i], st)
        return out

    def signatures(self, index, docs):
        import numpy as np

        parts = self._map([("signatures", [index], p) for p in self._split(docs)])
        return np.concatenate(parts) if parts else None

    def close(self):
        if self.pool is not None:
            self.pool.close()
            self.pool.join()


# ---------------------------------------------------------------- the run


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _segment(runner, steps, stats, first, last, docs):
    """Steps first..last-1 (none of them near_dedup) over one chunk."""
    i = first
    while i < last and docs:
        if steps[i].local:
            j = i
            while j < last and steps[j].local:
                j += 1
            docs = runner.local(list(range(i, j)), docs, stats)
            i = j
        else:
            docs = _run_steps([steps[i]], [stats[i]], docs)
            i += 1
    return docs


def clean(
    inputs: list[str],
    recipe: str | dict,
    output: str | os.PathLike,
    workers: int | None = None,
    text_field: str = "text",
    invalid_utf8: str = "error",
    max_doc_bytes: int = MAX_DOC_BYTES,
    shard_docs: int = 100_000,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Clean `inputs` with `recipe` into OUTPUT/shard-00000.jsonl ... plus report.json,
    report.html and report.png; returns the report."""
    from lmforge.text.clean.report import write_report

    name, specs = load_recipe(recipe)
    check_new_directory(output, overwrite)
    steps = [build_step(s) for s in specs]
    stats = [_new_stats(s.name) for s in steps]
    workers = workers or os.cpu_count() or 1
    start = time.perf_counter()
    totals = {"docs_in": 0, "bytes_in": 0, "docs_out": 0, "bytes_out": 0, "shards": 0}

    def source():
        bar = None
        if progress:  # shown after half a second: bad input prints its one error line alone
            from tqdm import tqdm

            bar = tqdm(unit=" docs", desc="clean", mininterval=0.5, delay=0.5, dynamic_ncols=True)
        try:
            for doc in iter_documents(inputs, text_field, invalid_utf8, max_doc_bytes):
                totals["docs_in"] += 1
                totals["bytes_in"] += len(doc["text"].encode("utf-8"))
                if bar is not None:
                    bar.update()
                yield doc
        finally:
            if bar is not None:
                bar.close()

    runner = _Runner(specs, steps, workers if len(specs) else 1)
    try:
        with staged_directory(output) as out:
            chunks = _chain(runner, steps, stats, _chunks(source(), CHUNK), out)
            _write_shards(chunks, out, shard_docs, totals)
            for spill in out.glob(".spill*"):
                spill.unlink()
            seconds = time.perf_counter() - start
            report = _report(name, specs, steps, stats, totals, seconds, inputs)
            if totals["docs_in"] == 0:
                raise LmforgeError(
                    f"the input {', '.join(inputs)} holds no documents; give non-empty files"
                )
            write_report(report, out)
    finally:
        runner.close()
    return report


def _chain(runner, steps, stats, chunks: Iterable[list], spill_dir: Path) -> Iterable[list]:
    """The chunks out of every step; each near_dedup spills to spill_dir."""
    cuts = [i for i, s in enumerate(steps) if isinstance(s, NearDedup)]
    bounds = [0, *cuts, len(steps)]
    for n, (a, b) in enumerate(zip(bounds, bounds[1:])):
        lo = a + 1 if n > 0 else a  # steps[a] is the near_dedup of this segment
        if n > 0:
            chunks = _near_dedup(runner, steps, stats, a, chunks, spill_dir / f".spill{n}")
        chunks = _segments(runner, steps, stats, lo, b, chunks)
    return chunks


def clean_texts(
    texts: list[str], recipe: str | dict, workers: int = 1, sources: list[str] | None = None
) -> tuple[list[str], dict]:
    """Clean documents held in memory (a pretraining run's training split): the kept texts,
    in order, and the report (not written)."""
    import tempfile

    name, specs = load_recipe(recipe)
    steps = [build_step(s) for s in specs]
    stats = [_new_stats(s.name) for s in steps]
    sources = sources or [f"doc{i}" for i in range(len(texts))]
    docs = [{"text": t, "source": src} for t, src in zip(texts, sources)]
    start = time.perf_counter()
    runner = _Runner(specs, steps, workers)
    try:
        with tempfile.TemporaryDirectory(prefix="lmforge-clean-") as tmp:
            kept = [d["text"] for c in _chain(runner, steps, stats, _chunks(docs, CHUNK), Path(tmp))
                    for d in c]  # fmt: skip
    finally:
        runner.close()
    totals = {
        "docs_in": len(texts),
        "bytes_in": sum(len(t.encode("utf-8")) for t in texts),
        "docs_out": len(kept),
        "bytes_out": sum(len(t.encode("utf-8")) for t in kept),
        "shards": 0,
    }
    report = _report(name, specs, steps, stats, totals, time.perf_counter() - start, ["(memory)"])
    return kept, report


def _segments(runner, steps, stats, first, last, chunks) -> Iterator[list]:
    for docs in chunks:
        yield _segment(runner, steps, stats, first, last, docs)


def _near_dedup(runner, steps, stats, k, chunks, spill: Path) -> Iterator[list]:
    step, st = steps[k], stats[k]
    with open(spill, "w", encoding="utf-8") as f:
        for docs in chunks:
            if docs:
                step.index.add(runner.signatures(k, docs))
                for doc in docs:
                    f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    st["counts"]["candidates_checked"] = step.index.candidates_checked
    with open(spill, encoding="utf-8") as f:
        g = 0
        for docs in _chunks((json.loads(line) for line in f), CHUNK):
            kept = []
            for doc in docs:
                size = len(doc["text"].encode("utf-8"))
                st["docs_in"] += 1
                st["bytes_in"] += size
                if step.index.is_duplicate(g):
                    st["removed"]["near_duplicate"] += 1
                    shown = st["examples"].setdefault("near_duplicate", [])
                    if len(shown) < EXAMPLES:
                        shown.append(
                            {"source": doc["source"], "text": doc["text"][:EXAMPLE_CHARS],
                             "duplicate_of_index": step.index.duplicate_of(g)}
                        )  # fmt: skip
                else:
                    st["docs_out"] += 1
                    st["bytes_out"] += size
                    kept.append(doc)
                g += 1
            yield kept
    spill.unlink()


def _write_shards(chunks, out: Path, shard_docs: int, totals: dict) -> None:
    f, in_shard = None, 0
    try:
        for docs in chunks:
            for doc in docs:
                if f is None or in_shard == shard_docs:
                    if f is not None:
                        f.close()
                    shard = out / f"shard-{totals['shards']:05d}.jsonl"
                    f = open(shard, "w", encoding="utf-8")  # noqa: SIM115
                    totals["shards"] += 1
                    in_shard = 0
                f.write(
                    json.dumps({"text": doc["text"], "source": doc["source"]}, ensure_ascii=False)
                )
                f.write("\n")
                in_shard += 1
                totals["docs_out"] += 1
                totals["bytes_out"] += len(doc["text"].encode("utf-8"))
    finally:
        if f is not None:
            f.close()


def _report(name, specs, steps, stats, totals, seconds, inputs) -> dict:
    out_steps = []
    for spec, step, st in zip(specs, steps, stats):
        entry = {**st, "settings": spec[1]}
        entry["removed"] = dict(st["removed"].most_common())
        entry["counts"] = dict(sorted(st["counts"].items()))
        if isinstance(step, NearDedup):
            entry["settings"] = {**spec[1], **step.params}
        out_steps.append(entry)
    return {
        "recipe": name,
        "inputs": list(inputs),
        "docs_in": totals["docs_in"],
        "bytes_in": totals["bytes_in"],
        "docs_out": totals["docs_out"],
        "bytes_out": totals["bytes_out"],
        "shards": totals["shards"],
        "seconds": round(seconds, 3),
        "docs_per_s": round(totals["docs_in"] / max(seconds, 1e-9), 1),
        "mb_per_s": round(totals["bytes_in"] / 1e6 / max(seconds, 1e-9), 3),
        "steps": out_steps,
    }
