"""Named hook points on the one Transformer: read or replace any intermediate of a forward pass.

Every intermediate a researcher asks for has a name (TransformerLens-style):

    embed                         token embeddings (tok_embed's output, before positions)
    {stack}.{i}.resid_pre         residual stream entering block i (positions added)
    {stack}.{i}.attn_out          self-attention sub-layer output, before the residual add
    {stack}.{i}.attn_pattern      softmax(QK^T/sqrt(d)) weights (batch, heads, t_q, t_k)
    {stack}.{i}.cross_out         cross-attention output (decoders of encoder-decoders)
    {stack}.{i}.cross_pattern     cross-attention weights (batch, heads, t_target, t_source)
    {stack}.{i}.mlp_out           MLP sub-layer output, before the residual add
    {stack}.{i}.resid_post        residual stream leaving block i
    {stack}.final_norm            the final norm's output (pre-norm models)

with {stack} "encoder" or "decoder". The hooks are torch module hooks, registered only for
the names asked for and removed when the run ends, so the model's own code path is untouched
when nothing is asked (tests/interpret/test_hooks.py checks the outputs are bit-identical and
no hook is left). A pattern is the one exception that changes the computation: it asks the
attention module for its weights (`return_weights`), whose explicit softmax(QK^T)V rounds
differently from the fused kernel of the normal path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from lmforge.errors import LmforgeError

POINTS = (
    "resid_pre",
    "attn_out",
    "attn_pattern",
    "cross_out",
    "cross_pattern",
    "mlp_out",
    "resid_post",
)

# fn(tensor, name) -> None to read, or a tensor of the same shape to replace it
HookFn = Callable[[torch.Tensor, str], torch.Tensor | None]


def stacks(model: nn.Module) -> dict[str, nn.Module]:
    return {s: getattr(model, s) for s in ("encoder", "decoder") if getattr(model, s, None)}


def hook_names(model: nn.Module) -> list[str]:
    """Every name this model has, in the order a forward pass computes them."""
    names = ["embed"]
    for s, stack in stacks(model).items():
        for i, block in enumerate(stack.blocks):
            for point in POINTS:
                if point.startswith("cross") and block.cross is None:
                    continue
                names.append(f"{s}.{i}.{point}")
        if stack.final_norm is not None:
            names.append(f"{s}.final_norm")
    return names


def check_names(model: nn.Module, names) -> None:
    known = hook_names(model)
    unknown = [n for n in names if n not in known]
    if unknown:
        stacks_ = ", ".join(stacks(model))
        layers = {s: len(st.blocks) for s, st in stacks(model).items()}
        raise LmforgeError(
            f"unknown hook point {unknown[0]!r}; this model has embed and "
            f"STACK.LAYER.POINT with STACK in {stacks_}, layers {layers}, POINT in "
            f"{', '.join(POINTS)} (cross_* only in encoder-decoder decoders)"
        )


def _register(model: nn.Module, name: str, fn: HookFn) -> list:
    """The torch hooks that call `fn` at `name`; returns their handles."""
    if name == "embed":
        return [model.tok_embed.register_forward_hook(lambda m, a, out: fn(out, name))]
    stack_name, *rest = name.split(".")
    stack = stacks(model)[stack_name]
    if rest == ["final_norm"]:
        return [stack.final_norm.register_forward_hook(lambda m, a, out: fn(out, name))]
    i, point = int(rest[0]), rest[1]
    block = stack.blocks[i]

    def first_of_output(m, args, out):
        new = fn(out[0], name)
        return None if new is None else (new, *out[1:])

    if point == "resid_pre":

        def pre(m, args):
            new = fn(args[0], name)
            return None if new is None else (new, *args[1:])

        return [block.register_forward_pre_hook(pre)]
    if point == "resid_post":
        return [block.register_forward_hook(first_of_output)]
    if point == "mlp_out":
        return [block.mlp.register_forward_hook(lambda m, a, out: fn(out, name))]
    attn = block.attn if point.startswith("attn") else block.cross
    if point.endswith("_out"):
        return [attn.register_forward_hook(first_of_output)]

    # a pattern: ask the module for its weights, read them, hand back what it would return
    asked = []

    def want_weights(m, args, kwargs):
        asked.append(kwargs.get("return_weights", False))
        return args, {**kwargs, "return_weights": True}

    def read_weights(m, args, kwargs, out):
        if fn(out[1], name) is not None:
            raise LmforgeError(f"{name} can be read but not replaced; patch attn_out instead")
        return out if asked.pop() else (out[0], None)

    return [
        attn.register_forward_pre_hook(want_weights, with_kwargs=True),
        attn.register_forward_hook(read_weights, with_kwargs=True),
    ]


@contextlib.contextmanager
def hooks(model: nn.Module, fns: dict[str, HookFn]) -> Iterator[None]:
    """Within the block, each forward pass of `model` calls fns[name](tensor, name) where
    `name` is computed; a returned tensor replaces the activation downstream."""
    check_names(model, fns)
    handles = []
    try:
        for name, fn in fns.items():
            handles += _register(model, name, fn)
        yield
    finally:
        for h in handles:
            h.remove()


def run_with_hooks(model: nn.Module, fns: dict[str, HookFn], *args, **kwargs):
    """model(*args, **kwargs) with `fns` hooked in; returns the model's output."""
    with hooks(model, fns):
        return model(*args, **kwargs)


def run_with_cache(
    model: nn.Module,
    *args,
    names: list[str] | None = None,
    detach: bool = True,
    **kwargs,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(model output, {name: activation}) for `names` (default: every name except the
    attention patterns, which cost the explicit attention path; ask for them by name).
    An encoder-decoder's `embed` holds the target's embeddings (the token table is run on
    the source first, then on the target)."""
    if names is None:
        names = [n for n in hook_names(model) if not n.endswith("_pattern")]
    cache: dict[str, torch.Tensor] = {}

    def keep(tensor: torch.Tensor, name: str) -> None:
        cache[name] = tensor.detach() if detach else tensor

    out = run_with_hooks(model, dict.fromkeys(names, keep), *args, **kwargs)
    return out, {n: cache[n] for n in names if n in cache}


def patterns(model: nn.Module, *args, **kwargs) -> dict[str, torch.Tensor]:
    """{stack or "cross": (layers, batch, heads, t_q, t_k)} attention weights of every layer."""
    names = [n for n in hook_names(model) if n.endswith("_pattern")]
    _, cache = run_with_cache(model, *args, names=names, **kwargs)
    out: dict[str, list] = {}
    for name in names:
        stack, _, point = name.split(".")
        out.setdefault("cross" if point == "cross_pattern" else stack, []).append(cache[name])
    return {k: torch.stack(v) for k, v in out.items()}
