"""Weight-name tables: how the tensors of another layout (a Hugging Face family, an older
lmforge layout) become ours, and back.

A table is a list of `Rule`s. A rule names one tensor of the other layout, with `{i}` standing
for a block index, the tensor(s) of ours it holds, and the `Transform` between them, e.g.

    Rule("h.{i}.attn.c_attn.weight",
         ("decoder.blocks.{i}.attn.q.weight", "decoder.blocks.{i}.attn.k.weight",
          "decoder.blocks.{i}.attn.v.weight"),
         TRANSPOSE_SPLIT3)

Both directions run from the same table, so a mapping is written once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Transform:
    """A tensor of theirs <-> the list of our tensors it holds."""

    name: str
    to_ours: Callable[[torch.Tensor], list[torch.Tensor]]
    to_theirs: Callable[[list[torch.Tensor]], torch.Tensor]


SAME = Transform("same", lambda t: [t], lambda ts: ts[0])
# GPT-2's Conv1D stores a linear layer's weight as (in, out), the transpose of nn.Linear's.
TRANSPOSE = Transform("transpose", lambda t: [t.t()], lambda ts: ts[0].t())
# One fused projection for queries, keys and values, stacked along the output dimension.
SPLIT3 = Transform("split in 3", lambda t: list(t.chunk(3, 0)), lambda ts: torch.cat(ts, 0))
TRANSPOSE_SPLIT3 = Transform(
    "transpose, split in 3", lambda t: list(t.t().chunk(3, 0)), lambda ts: torch.cat(ts, 0).t()
)
# A (1, n) row stored for a vector, as BART's final_logits_bias.
ROW = Transform("(1, n) row", lambda t: [t.reshape(-1)], lambda ts: ts[0].reshape(1, -1))


@dataclass(frozen=True)
class Rule:
    theirs: str
    ours: tuple[str, ...]
    transform: Transform = SAME

    def __post_init__(self):
        if isinstance(self.ours, str):
            object.__setattr__(self, "ours", (self.ours,))


def linear(theirs: str, ours: str | tuple[str, ...], weight=SAME, bias=SAME) -> list[Rule]:
    """A layer's `.weight` and `.bias` (the bias rule is unused where there is no bias)."""
    parts = (ours,) if isinstance(ours, str) else ours
    return [
        Rule(f"{theirs}.weight", tuple(f"{p}.weight" for p in parts), weight),
        Rule(f"{theirs}.bias", tuple(f"{p}.bias" for p in parts), bias),
    ]


def _pattern(name: str) -> re.Pattern:
    return re.compile(re.escape(name).replace(re.escape("{i}"), r"(\d+)"))


def _fill(name: str, index: str | None) -> str:
    return name if index is None else name.replace("{i}", index)


@dataclass
class Translation:
    ours: dict[str, torch.Tensor] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    misshaped: list[str] = field(default_factory=list)


class WeightMap:
    def __init__(self, rules: Iterable[Rule], ignore: Iterable[str] = ()):
        """`ignore`: regexes of their tensors that hold nothing we need (buffers such as
        GPT-2's causal mask, copies of tied weights), or parts that this model has not
        (BERT's pooler under a masked-LM head)."""
        self.rules = list(rules)
        self._theirs = [(_pattern(r.theirs), r) for r in self.rules]
        self._ours = [(_pattern(o), r) for r in self.rules for o in r.ours]
        self._ignore = [re.compile(p) for p in ignore]

    def ignored(self, name: str) -> bool:
        return any(p.search(name) for p in self._ignore)

    @staticmethod
    def _find(patterns, name: str) -> tuple[Rule, str | None] | None:
        for pattern, rule in patterns:
            m = pattern.fullmatch(name)
            if m:
                return rule, m.group(1) if m.groups() else None
        return None

    def theirs_name(self, ours: str) -> str:
        """Their name of the tensor that holds our `ours` (for messages)."""
        found = self._find(self._ours, ours)
        return _fill(found[0].theirs, found[1]) if found else ours

    def to_ours(self, tensors: dict[str, torch.Tensor], shapes: dict[str, torch.Size]):
        """Their tensors -> ours, checked against the `shapes` our model expects."""
        out = Translation()
        for name, tensor in tensors.items():
            found = self._find(self._theirs, name)
            if found is None:
                if not self.ignored(name):
                    out.unexpected.append(name)
                continue
            rule, index = found
            targets = [_fill(o, index) for o in rule.ours]
            if any(t not in shapes for t in targets):
                if not self.ignored(name):
                    out.unexpected.append(name)
                continue
            empty = [torch.empty(shapes[t], device="meta") for t in targets]
            want = tuple(rule.transform.to_theirs(empty).shape)
            if tuple(tensor.shape) != want:
                out.misshaped.append(f"{name} {tuple(tensor.shape)}, expected {want}")
                continue
            out.ours.update(zip(targets, rule.transform.to_ours(tensor)))
        return out

    def to_theirs(self, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], set]:
        """Our tensors -> theirs; also returns the set of our names that were used."""
        out, used = {}, set()
        for rule in self.rules:
            first = _pattern(rule.ours[0])
            for name in state:
                m = first.fullmatch(name)
                if not m:
                    continue
                index = m.group(1) if m.groups() else None
                targets = [_fill(o, index) for o in rule.ours]
                if all(t in state for t in targets):
                    tensors = [state[t] for t in targets]
                    out[_fill(rule.theirs, index)] = rule.transform.to_theirs(tensors)
                    used.update(targets)
        return out, used
