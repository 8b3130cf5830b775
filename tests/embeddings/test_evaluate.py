import numpy as np
import pytest
from gensim.models import KeyedVectors as GensimVectors
from gensim.test.utils import datapath
from scipy.stats import spearmanr

from lmforge.embeddings import KeyedVectors, evaluate_analogies, evaluate_word_pairs, spearman
from lmforge.embeddings.evaluate import read_analogies

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inside gensim


@pytest.fixture(scope="module")
def vectors():
    """Random vectors for the words of the evaluation sets plus others, with planted
    structure so that some analogies are right: d = b - a + c for a share of questions."""
    questions = read_analogies(datapath("questions-words.txt"))
    words = sorted({w.lower() for q in questions[::25] for w in q[1:]})
    words += [f"filler{i}" for i in range(500)]
    rng = np.random.default_rng(0)
    table = {w: rng.standard_normal(32) for w in words}
    for _, a, b, c, d in questions[::75]:
        a, b, c, d = (w.lower() for w in (a, b, c, d))
        table[d] = table[b] - table[a] + table[c] + 0.1 * rng.standard_normal(32)
    words = list(table)
    return KeyedVectors(words, np.stack([table[w] for w in words]).astype(np.float32))


def _gensim(kv):
    ref = GensimVectors(kv.dim)
    ref.add_vectors(kv.words, kv.vectors)
    return ref


def test_analogy_accuracy_matches_gensims_evaluation(vectors, tmp_path):
    path = tmp_path / "questions.txt"  # every 4th question, sections kept: a faster run
    lines, section = [], None
    for name, *words in read_analogies(datapath("questions-words.txt"))[::4]:
        if name != section:
            lines.append(f": {name}")
            section = name
        lines.append(" ".join(words))
    path.write_text("\n".join(lines) + "\n")
    ours = evaluate_analogies(vectors, path)
    score, sections = _gensim(vectors).evaluate_word_analogies(str(path))
    total = next(s for s in sections if s["section"] == "Total accuracy")
    assert ours["covered"] == len(total["correct"]) + len(total["incorrect"]) > 50
    assert ours["correct"] == len(total["correct"]) > 0
    assert ours["accuracy"] == pytest.approx(score)


def test_3cosmul_accuracy_matches_gensims_cosmul(vectors, tmp_path):
    questions = [
        [w.lower() for w in words]
        for _, *words in read_analogies(datapath("questions-words.txt"))
        if all(w.lower() in vectors.index for w in words)
    ][::5]
    path = tmp_path / "questions.txt"
    path.write_text(": some\n" + "\n".join(" ".join(q) for q in questions) + "\n")
    ours = evaluate_analogies(vectors, path, method="3cosmul")
    ref = _gensim(vectors)
    right = sum(
        ref.most_similar_cosmul(positive=[b, c], negative=[a], topn=1)[0][0] == d
        for a, b, c, d in questions
    )
    assert (ours["covered"], ours["correct"]) == (len(questions), right)
    assert right > 0


def test_word_pair_spearman_matches_gensim(vectors):
    for name in ("wordsim353.tsv", "simlex999.txt"):
        ours = evaluate_word_pairs(vectors, datapath(name))
        pearson, rho, oov = _gensim(vectors).evaluate_word_pairs(datapath(name))
        assert ours["spearman"] == pytest.approx(rho.statistic, abs=1e-6)
        assert ours["covered"] == pytest.approx(ours["pairs"] * (1 - oov / 100))


def test_vocabulary_restricts_questions_and_answers(vectors):
    allowed = set(vectors.words[: len(vectors) // 2])
    result = evaluate_analogies(vectors, datapath("questions-words.txt"), vocabulary=allowed)
    restricted = KeyedVectors(
        [w for w in vectors.words if w in allowed],
        np.stack([vectors[w] for w in vectors.words if w in allowed]),
    )
    again = evaluate_analogies(restricted, datapath("questions-words.txt"))
    assert (result["covered"], result["correct"]) == (again["covered"], again["correct"])


def test_spearman_with_ties_matches_scipy():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, 200), rng.integers(0, 7, 200) + rng.integers(0, 5, 200)
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
