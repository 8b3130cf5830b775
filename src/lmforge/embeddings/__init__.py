"""Classic word embeddings, trained by hand: Word2Vec (skip-gram and CBOW with negative
sampling), GloVe and FastText; nearest neighbours and analogies; the word2vec and GloVe
file formats; and starting a Transformer's token embedding from trained vectors.

    from lmforge.embeddings import tokenize_texts, train_word2vec
    trained = train_word2vec(tokenize_texts(texts), dim=100, window=5, epochs=5)
    trained.vectors.most_similar("king")
"""

from lmforge.embeddings.evaluate import evaluate_analogies, evaluate_word_pairs, spearman
from lmforge.embeddings.fasttext import FastTextSettings, FastTextVectors, train_fasttext
from lmforge.embeddings.glove import GloveSettings, cooccurrence, train_glove
from lmforge.embeddings.init import init_token_embedding, token_vectors
from lmforge.embeddings.io import load_embeddings, save_embeddings
from lmforge.embeddings.vectors import FORMATS, KeyedVectors
from lmforge.embeddings.vocab import Vocabulary, tokenize, tokenize_texts
from lmforge.embeddings.word2vec import Trained, TrainStats, Word2VecSettings, train_word2vec

ALGORITHMS = {"word2vec": train_word2vec, "glove": train_glove, "fasttext": train_fasttext}
SETTINGS = {"word2vec": Word2VecSettings, "glove": GloveSettings, "fasttext": FastTextSettings}

__all__ = [
    "ALGORITHMS",
    "FORMATS",
    "SETTINGS",
    "FastTextSettings",
    "FastTextVectors",
    "GloveSettings",
    "KeyedVectors",
    "TrainStats",
    "Trained",
    "Vocabulary",
    "Word2VecSettings",
    "cooccurrence",
    "evaluate_analogies",
    "evaluate_word_pairs",
    "init_token_embedding",
    "load_embeddings",
    "save_embeddings",
    "spearman",
    "token_vectors",
    "tokenize",
    "tokenize_texts",
    "train_fasttext",
    "train_glove",
    "train_word2vec",
]
