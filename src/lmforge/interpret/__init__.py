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

__all__ = [
    "Attribution",
    "attribute",
    "class_pick",
    "gradient_x_input",
    "integrated_gradients",
    "next_token_pick",
    "hook_names",
    "hooks",
    "lens_losses",
    "logit_lens",
    "patterns",
    "run_with_cache",
    "run_with_hooks",
]
