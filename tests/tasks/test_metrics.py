"""Metrics against independent references: scikit-learn for classification; SQuAD's
definitions worked by hand; sacrebleu and rouge-score are the references themselves."""

import random

import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score

from lmforge.tasks.classification import classification_metrics
from lmforge.tasks.qa import normalize_answer, squad_metrics, token_f1


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_match_scikit_learn(seed):
    rng = random.Random(seed)
    labels = ["a", "b", "c", "d"]
    truth = [rng.choice(labels[:3]) for _ in range(50)]  # 'd' never true
    predicted = [t if rng.random() < 0.6 else rng.choice(labels) for t in truth]
    ours = classification_metrics(truth, predicted, labels, majority="b")
    assert ours["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    present = sorted(set(truth) | set(predicted))
    assert ours["macro_f1"] == pytest.approx(
        f1_score(truth, predicted, labels=present, average="macro", zero_division=0)
    )
    precision = precision_score(truth, predicted, labels=labels, average=None, zero_division=0)
    assert [ours["per_class"][x]["precision"] for x in labels] == pytest.approx(list(precision))
    assert ours["confusion_matrix"] == confusion_matrix(truth, predicted, labels=labels).tolist()
    assert ours["majority_baseline"] == pytest.approx(truth.count("b") / len(truth))


def test_squad_normalisation_and_f1():
    assert normalize_answer("The  Duke of York!") == "duke of york"
    assert normalize_answer("an apple, a pear") == "apple pear"
    # prediction "duke of york" vs gold "york": 1 common token, P = 1/3, R = 1 -> F1 = 0.5
    assert token_f1("the Duke of York", "York") == pytest.approx(0.5)
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0
    scores = squad_metrics(["York", "king"], [["the duke of York", "YORK."], ["queen"]])
    assert scores["exact_match"] == pytest.approx(50.0)  # the second gold matches exactly
    assert scores["f1"] == pytest.approx(50.0)
