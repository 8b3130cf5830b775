"""Look inside a model: named activations and hooks, attention maps, the logit lens,
attribution, activation patching, and what a model memorised (docs/interpretability.md)."""

from lmforge.interpret.attribution import (
    Attribution,
    attribute,
    class_pick,
    gradient_x_input,
    integrated_gradients,
    next_token_pick,
)
from lmforge.interpret.hooks import (
    hook_names,
    hooks,
    patterns,
    run_with_cache,
    run_with_hooks,
)
from lmforge.interpret.lens import lens_losses, logit_lens
from lmforge.interpret.memorization import exposure, insert_canaries, verbatim_extraction
from lmforge.interpret.patching import logit_difference, patch, patching_sweep

__all__ = [
    "Attribution",
    "attribute",
    "class_pick",
    "gradient_x_input",
    "integrated_gradients",
    "next_token_pick",
    "exposure",
    "hook_names",
    "insert_canaries",
    "hooks",
    "lens_losses",
    "logit_difference",
    "logit_lens",
    "patch",
    "patching_sweep",
    "patterns",
    "run_with_cache",
    "run_with_hooks",
    "verbatim_extraction",
]
