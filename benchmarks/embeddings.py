"""Word2Vec (skip-gram, CBOW) and FastText: lmforge vs gensim, same corpus, same settings.

Both train on the built-in corpus (all plays) as tokenised by `lmforge.embeddings.tokenize`,
handed to each as the same list of sentences, with the same dim, window, negatives,
subsampling, epochs, min_count, learning rates and number of worker threads. Words/s is
corpus words (rare ones included) times epochs over the wall time of training, vocabulary
building excluded, for both. Quality: top-1 accuracy (3CosAdd) on questions-words.txt and
Spearman correlation on wordsim353.tsv and simlex999.txt, the evaluation files that gensim
ships in its test data, scored by lmforge's evaluation code on the words both models know.
GloVe, which gensim does not implement, is reported alone (x_max 10 for this small corpus).

Each Word2Vec and FastText model is trained with several seeds (1, 2, 3 by default), both
ours and gensim's, and the table gives the means: on this corpus one run's quality scores
move by several points from seed to seed (and from run to run, as lock-free threads
interleave differently), for gensim as much as for us, so single runs cannot tell the two
apart. The spread (lowest to highest) follows the table. Words/s is the corpus words of all
runs over their summed training time. Prints the tables, then one JSON line.
Run:  python benchmarks/embeddings.py [--seeds N]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time

from gensim.models import FastText, Word2Vec
from gensim.test.utils import datapath

from lmforge.embeddings import (
    FastTextSettings,
    GloveSettings,
    KeyedVectors,
    Vocabulary,
    Word2VecSettings,
    cooccurrence,
    evaluate_analogies,
    evaluate_word_pairs,
    tokenize_texts,
    train_fasttext,
    train_glove,
    train_word2vec,
)
from lmforge.text import load_shakespeare

COMMON = dict(dim=100, window=5, negative=5, epochs=5, min_count=5, sample=1e-3, workers=2)
COMMON.update(alpha=0.025, min_alpha=0.0001)
# x_max 10, not the paper's 100: Shakespeare's counts are small (docs/embeddings.md)
GLOVE = dict(dim=100, window=10, epochs=10, x_max=10.0, min_count=5, workers=2, seed=1)


def quality(vectors: KeyedVectors, vocabulary: set[str]) -> dict:
    analogy = evaluate_analogies(vectors, datapath("questions-words.txt"), vocabulary=vocabulary)
    wordsim = evaluate_word_pairs(vectors, datapath("wordsim353.tsv"), vocabulary=vocabulary)
    simlex = evaluate_word_pairs(vectors, datapath("simlex999.txt"), vocabulary=vocabulary)
    return {
        "analogy_accuracy": analogy["accuracy"],
        "analogy_questions": analogy["covered"],
        "wordsim_spearman": wordsim["spearman"],
        "wordsim_pairs": wordsim["covered"],
        "simlex_spearman": simlex["spearman"],
        "simlex_pairs": simlex["covered"],
    }


def gensim_run(cls, sentences, sg: bool, seed: int, **extra):
    s = COMMON
    model = cls(
        vector_size=s["dim"],
        window=s["window"],
        negative=s["negative"],
        hs=0,
        sample=s["sample"],
        min_count=s["min_count"],
        workers=s["workers"],
        alpha=s["alpha"],
        min_alpha=s["min_alpha"],
        seed=seed,
        sg=int(sg),
        **extra,
    )
    model.build_vocab(sentences)
    started = time.perf_counter()
    model.train(sentences, total_examples=len(sentences), epochs=s["epochs"])
    seconds = time.perf_counter() - started
    return KeyedVectors(model.wv.index_to_key, model.wv.vectors), seconds


def compare(reference, ours_train, settings, sg, extra, sentences, seeds) -> dict:
    """Ours and gensim's, seed by seed (gensim first each time), in one process."""
    work = sum(len(s) for s in sentences) * COMMON["epochs"]
    runs = []
    for seed in seeds:
        ref_vectors, ref_seconds = gensim_run(reference, sentences, sg, seed, **extra)
        ours = ours_train(sentences, settings(**{**COMMON, "seed": seed}, sg=sg, **extra))
        shared = set(ours.vectors.words) & set(ref_vectors.words)
        runs.append(
            {
                "seed": seed,
                "seconds": ours.stats.seconds,
                "ref_seconds": ref_seconds,
                "speed_ratio": ref_seconds / ours.stats.seconds,
                "vocabulary": len(ours.vectors),
                "ref_vocabulary": len(ref_vectors),
                "shared_vocabulary": len(shared),
                "ours": quality(ours.vectors, shared),
                "gensim": quality(ref_vectors, shared),
            }
        )
    seconds = sum(r["seconds"] for r in runs)
    ref_seconds = sum(r["ref_seconds"] for r in runs)
    return {
        "words_per_s": work * len(runs) / seconds,
        "ref_words_per_s": work * len(runs) / ref_seconds,
        "speed_ratio": ref_seconds / seconds,
        "ours": {k: statistics.mean(r["ours"][k] for r in runs) for k in runs[0]["ours"]},
        "gensim": {k: statistics.mean(r["gensim"][k] for r in runs) for k in runs[0]["gensim"]},
        "runs": runs,
    }


def spread(runs: list[dict], who: str, key: str, percent: bool = False) -> str:
    values = [r[who][key] if who else r[key] for r in runs]
    if percent:
        return f"{min(values):.1%}-{max(values):.1%}"
    return f"{min(values):.3f}-{max(values):.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="runs per model (seeds 1..N)")
    seeds = range(1, parser.parse_args().seeds + 1)
    logging.getLogger("gensim").setLevel(logging.WARNING)
    train, valid = load_shakespeare()
    sentences = tokenize_texts(d.text for d in train + valid)
    n_words = sum(len(s) for s in sentences)
    results = {}

    runs = {
        "word2vec skip-gram": (Word2Vec, train_word2vec, Word2VecSettings, True, {}),
        "word2vec CBOW": (Word2Vec, train_word2vec, Word2VecSettings, False, {}),
        "fasttext skip-gram": (
            FastText,
            train_fasttext,
            FastTextSettings,
            True,
            {"min_n": 3, "max_n": 6, "bucket": 2_000_000},
        ),
    }
    for name, (reference, ours_train, settings, sg, extra) in runs.items():
        results[name] = compare(reference, ours_train, settings, sg, extra, sentences, seeds)
    glove = train_glove(sentences, GloveSettings(**GLOVE))
    vocab = Vocabulary.build(sentences, GLOVE["min_count"])
    entries = len(cooccurrence(vocab.encode(sentences), len(vocab), GLOVE["window"]))
    glove_result = {
        "cooccurrences": entries,
        "train_s": glove.stats.seconds,
        "entries_per_s": entries * GLOVE["epochs"] / glove.stats.seconds,
        "settings": GLOVE,
        "ours": quality(glove.vectors, set(glove.vectors.words)),
    }

    print(f"corpus: {len(sentences):,} sentences, {n_words:,} words; settings {COMMON}")
    print(f"means over seeds {', '.join(map(str, seeds))}, ours and gensim's:")
    print(
        f"{'':20}{'words/s':>10}{'gensim':>10}{'ratio':>7}"
        f"{'analogy':>9}{'gensim':>8}{'wordsim':>9}{'gensim':>8}{'simlex':>8}{'gensim':>8}"
    )
    for name, r in results.items():
        o, g = r["ours"], r["gensim"]
        print(
            f"{name:20}{r['words_per_s']:10,.0f}{r['ref_words_per_s']:10,.0f}"
            f"{r['speed_ratio']:7.2f}{o['analogy_accuracy']:9.1%}{g['analogy_accuracy']:8.1%}"
            f"{o['wordsim_spearman']:9.3f}{g['wordsim_spearman']:8.3f}"
            f"{o['simlex_spearman']:8.3f}{g['simlex_spearman']:8.3f}"
        )
    print("spread over the seeds (lowest-highest), ours | gensim:")
    for name, r in results.items():
        per_seed = r["runs"]
        print(
            f"{name:20}speed ratio {spread(per_seed, '', 'speed_ratio')}; analogy "
            f"{spread(per_seed, 'ours', 'analogy_accuracy', True)} | "
            f"{spread(per_seed, 'gensim', 'analogy_accuracy', True)}; wordsim "
            f"{spread(per_seed, 'ours', 'wordsim_spearman')} | "
            f"{spread(per_seed, 'gensim', 'wordsim_spearman')}; simlex "
            f"{spread(per_seed, 'ours', 'simlex_spearman')} | "
            f"{spread(per_seed, 'gensim', 'simlex_spearman')}"
        )
    o = glove_result["ours"]
    print(
        f"glove (no gensim counterpart; window 10, x_max 10, {GLOVE['epochs']} epochs): "
        f"{entries:,} co-occurrences, {glove.stats.seconds:.1f} s "
        f"({glove_result['entries_per_s']:,.0f} entries/s); analogy "
        f"{o['analogy_accuracy']:.1%}, wordsim {o['wordsim_spearman']:.3f}, "
        f"simlex {o['simlex_spearman']:.3f}"
    )
    o = results["word2vec skip-gram"]["ours"]
    print(
        f"covered (shared vocabulary): {o['analogy_questions']} of 19,544 analogy questions, "
        f"{o['wordsim_pairs']} of 353 wordsim pairs, {o['simlex_pairs']} of 999 simlex pairs"
    )
    results["glove"] = glove_result
    record = {"benchmark": "embeddings", "corpus_words": n_words, "seeds": list(seeds)}
    print(json.dumps({**record, **results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
