"""`lmforge embeddings train|query`: classic word vectors (Word2Vec, GloVe, FastText)."""

from __future__ import annotations

from lmforge.cli.corpus import add_reading_options

# flag -> setting name; None defaults leave each algorithm's own default in place
_SETTINGS = {
    "dim": int,
    "window": int,
    "negative": int,
    "epochs": int,
    "min_count": int,
    "max_vocab": int,
    "sample": float,
    "alpha": float,
    "workers": int,
    "batch_words": int,
    "seed": int,
    "min_n": int,
    "max_n": int,
    "bucket": int,
    "x_max": float,
}
_HELP = {
    "dim": "vector size (default 100)",
    "window": "context words on each side (word2vec/fasttext 5, glove 10)",
    "negative": "noise words per pair (default 5)",
    "epochs": "passes over the corpus (word2vec/fasttext 5, glove 25)",
    "min_count": "drop words seen fewer times (default 5)",
    "max_vocab": "keep only this many most frequent words",
    "sample": "frequent-word subsampling threshold, 0 = off (default 1e-3)",
    "alpha": "starting learning rate (word2vec/fasttext 0.025; glove's AdaGrad 0.05)",
    "workers": "worker threads (default 2)",
    "batch_words": "centres (glove: co-occurrence entries) per vectorised step",
    "seed": "random seed (default 1)",
    "min_n": "fasttext: shortest character n-gram (default 3)",
    "max_n": "fasttext: longest character n-gram (default 6)",
    "bucket": "fasttext: n-gram hash buckets (default 2000000)",
    "x_max": "glove: count where the weighting reaches 1 (default 100)",
}


def register(sub) -> None:
    p = sub.add_parser("embeddings", help="train word vectors (word2vec, glove, fasttext), query")
    cmds = p.add_subparsers(dest="embeddings_command", metavar="ACTION", required=True)
    train = cmds.add_parser("train", help="train word vectors on a corpus; write a directory")
    train.add_argument("inputs", nargs="+", help="'shakespeare' (all plays) or .txt/.jsonl files")
    train.add_argument("--algorithm", default="word2vec", choices=["word2vec", "glove", "fasttext"])
    train.add_argument(
        "--model", default="skipgram", choices=["skipgram", "cbow"], help="word2vec, fasttext"
    )
    for name, kind in _SETTINGS.items():
        train.add_argument(f"--{name.replace('_', '-')}", type=kind, help=_HELP[name])
    train.add_argument(
        "--format",
        default="word2vec-binary",
        choices=["word2vec-binary", "word2vec-text", "glove"],
        help="vectors file format (all readable by gensim)",
    )
    train.add_argument("--output", required=True, help="directory to write")
    add_reading_options(train)
    train.set_defaults(run=run_train)
    query = cmds.add_parser(
        "query", help="nearest words to an expression such as: king - man + woman"
    )
    query.add_argument("vectors", help="embeddings directory, or a word2vec/GloVe file")
    query.add_argument("expression", nargs="+", help="words joined by + and -")
    query.add_argument("--topn", type=int, default=10)
    query.add_argument(
        "--method",
        default="3cosadd",
        choices=["3cosadd", "3cosmul"],
        help="3cosmul needs the form 'b - a + c'",
    )
    query.set_defaults(run=run_query)


def run_train(args, extra) -> int:
    from tqdm import tqdm

    from lmforge.embeddings import ALGORITHMS, SETTINGS, save_embeddings, tokenize_texts
    from lmforge.text import load_corpus, read_documents

    if args.inputs == ["shakespeare"]:
        train, valid = load_corpus(["shakespeare"])
        docs = train + valid
    else:
        docs = read_documents(args.inputs, args.text_field, args.invalid_utf8)
    sentences = tokenize_texts(d.text for d in docs)
    changes = {name: getattr(args, name) for name in _SETTINGS}
    changes = {k: v for k, v in changes.items() if v is not None}
    if args.algorithm != "glove":
        changes["sg"] = args.model == "skipgram"
    settings = SETTINGS[args.algorithm]().updated(**changes)

    with tqdm(total=1000, desc=args.algorithm, unit="‰", leave=False, disable=None) as bar:

        def progress(share: float) -> None:
            bar.update(int(share * 1000) - bar.n)

        trained = ALGORITHMS[args.algorithm](sentences, settings, progress)
    path = save_embeddings(trained, args.output, args.algorithm, args.format)
    s = trained.stats
    kind = "" if args.algorithm == "glove" else f" {args.model}"
    print(
        f"{args.algorithm}{kind}: {len(trained.vectors)} words x {trained.vectors.dim}, "
        f"{s.raw_words:,} corpus words x {s.epochs} epochs in {s.seconds:.1f} s "
        f"({s.words_per_s:,.0f} words/s) -> {path}"
    )
    return 0


def parse_expression(words: list[str]) -> tuple[list[str], list[str]]:
    """'king - man + woman' -> (positive [king, woman], negative [man])."""
    from lmforge.errors import LmforgeError

    tokens = " ".join(words).replace("+", " + ").split()
    positive, negative, sign = [], [], "+"
    for token in tokens:
        if token in "+-":
            sign = token
            continue
        (positive if sign == "+" else negative).append(token)
        sign = "+"
    if not positive and not negative:
        raise LmforgeError("give words to look up, e.g.: king - man + woman")
    return positive, negative


def run_query(args, extra) -> int:
    from lmforge.embeddings import load_embeddings
    from lmforge.errors import LmforgeError

    vectors = load_embeddings(args.vectors)
    positive, negative = parse_expression(args.expression)

    def known(word: str) -> str:
        for candidate in (word, word.lower()):
            if candidate in vectors:
                return candidate
        raise LmforgeError(f"'{word}' is not in the vocabulary of {len(vectors)} words")

    positive, negative = [known(w) for w in positive], [known(w) for w in negative]
    if args.method == "3cosmul":
        if len(positive) != 2 or len(negative) != 1:
            raise LmforgeError("3cosmul answers 'b - a + c' (two words added, one taken away)")
        results = vectors.analogy(negative[0], positive[0], positive[1], "3cosmul", args.topn)
    else:
        results = vectors.most_similar(positive, negative, topn=args.topn)
    width = max((len(w) for w, _ in results), default=0)
    for word, score in results:
        print(f"{word:<{width}}  {score:.4f}")
    return 0
