"""Language identification with the model that the PyPI package `langid` ships (Lui and
Baldwin 2012, 97 languages), probabilities normalised so a confidence threshold means
something."""

from __future__ import annotations

from lmforge.errors import LmforgeError

_IDENTIFIER = None


def identify(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability)."""
    global _IDENTIFIER
    if _IDENTIFIER is None:
        try:
            from langid.langid import LanguageIdentifier, model
        except ImportError:
            raise LmforgeError(
                "language identification needs the package 'langid'; install it with: "
                "pip install langid (or drop the 'language' step from the recipe)"
            ) from None
        _IDENTIFIER = LanguageIdentifier.from_modelstring(model, norm_probs=True)
    lang, prob = _IDENTIFIER.classify(text[:10_000])
    return lang, float(prob)
