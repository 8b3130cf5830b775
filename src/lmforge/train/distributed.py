"""Parallel training on a built single-device model: data parallel (DDP), fully sharded (FSDP2)
and tensor parallel (TP), under `torchrun`.

    torchrun --nproc_per_node=2 -m lmforge pretrain PRESET --train.parallel=fsdp

- ddp:  every rank holds the whole model and trains on its slice of the global batch; the
        gradients are averaged (all-reduce) before each optimizer step.
- fsdp: like ddp, but parameters, gradients and optimizer state are sharded across ranks
        (`fully_shard` per block, then the root); a block's weights are gathered for its
        forward and backward only.
- tp:   every rank sees the same batch; attention and MLP matrices are split across ranks
        (Megatron style): q, k, v, up (and gate) by output columns, attention out and MLP down
        by input rows, so each rank computes its own heads and hidden units and one
        all-reduce per sub-layer sums the partial outputs. Embeddings, norms and the head are
        replicated.
- fsdp+tp: both, on a 2-D mesh of (world / tp_size) x tp_size ranks: tensor parallel within
        each row of tp_size ranks (by default the processes of one node, which have the
        fastest links), and FSDP across the rows, which split the batch.

The model code stays single-device: `wrap` changes a built `Transformer` in place (FSDP, TP) or
wraps it (DDP). The one thing TP must tell the model is that an attention module now holds
n_head / tp of the heads (`MultiHeadAttention.n_head`, `n_kv_head`), which its reshapes use.

The global batch is batch_size x grad_accum_steps x the data-parallel size (world for ddp and
fsdp, 1 for tp, world / tp_size for fsdp+tp): each data-parallel rank takes a fixed, disjoint
slice of the batch a single process would draw (`RankSlice`), so a run on N processes sees the
same sequences as one process with the same global batch. Only rank 0 logs and writes;
checkpoints hold full (unsharded) tensors in the single-process format, so a checkpoint moves
freely between modes and world sizes.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from lmforge.device import pick_device
from lmforge.errors import LmforgeError
from lmforge.nn.attention import MultiHeadAttention
from lmforge.nn.block import Block
from lmforge.nn.mlp import MLP

T = TypeVar("T")
MODES = ("none", "ddp", "fsdp", "tp", "fsdp+tp")


def world_size() -> int:
    if dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Rank 0: the one process that logs and writes files."""
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def setup(device_name: str = "auto") -> torch.device:
    """This process's device; under torchrun (WORLD_SIZE > 1) also join the process group,
    with gloo on CPU and nccl on CUDA (one GPU per process, chosen by LOCAL_RANK)."""
    device = pick_device(device_name)
    if world_size() == 1:
        return device
    if device.type == "mps":
        raise LmforgeError("torchrun training needs cpu or cuda; set --train.device=cpu")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def resolve_mode(parallel: str, log: Callable[[str], None] = print) -> str:
    """The mode a run uses: `parallel`, except that one process trains plainly and several
    processes with parallel=none use ddp (the mode that needs no other setting)."""
    world = world_size()
    if world == 1:
        return "none"
    if parallel == "none":
        log(f"{world} processes and train.parallel=none: using ddp (set --train.parallel)")
        return "ddp"
    return parallel


def tensor_parallel_size(mode: str, tp_size: int | None = None) -> int:
    """How many ranks split each matrix: all of them for tp; for fsdp+tp `tp_size`, by default
    the processes of one node (torchrun's LOCAL_WORLD_SIZE)."""
    if tp_size and mode not in ("fsdp+tp", "none"):  # one process ignores parallel settings
        raise LmforgeError(
            f"train.tp_size is for train.parallel=fsdp+tp, not {mode} (tp splits across every "
            "process); leave it unset or use fsdp+tp"
        )
    if mode == "tp":
        return world_size()
    if mode != "fsdp+tp":
        return 1
    size = tp_size or int(os.environ.get("LOCAL_WORLD_SIZE", world_size()))
    if size < 1 or world_size() % size:
        raise LmforgeError(
            f"fsdp+tp needs tp_size to divide the {world_size()} processes, got {size}; "
            "set --train.tp_size"
        )
    return size


def data_parallel_size(mode: str, tp_size: int | None = None) -> int:
    """How many ranks split each global batch (the ranks of one TP group see the same rows)."""
    if mode == "none":
        return 1
    return world_size() // tensor_parallel_size(mode, tp_size)


def data_parallel_rank(mode: str, tp_size: int | None = None) -> int:
    """This rank's row of the (data, tensor) mesh: its slice of the global batch."""
    return rank() // tensor_parallel_size(mode, tp_size)


@dataclass(frozen=True)
class ParallelPlan:
    """How this run spreads over its processes, resolved once from the settings and the
    environment torchrun gives: the mode, world size, data-parallel (dp) and
    tensor-parallel (tp) sizes of the dp x tp mesh, and this process's place in it."""

    mode: str = "none"
    world: int = 1
    dp: int = 1
    tp: int = 1
    rank: int = 0
    dp_rank: int = 0

    @classmethod
    def resolve(
        cls, parallel: str, tp_size: int | None = None, log: Callable[[str], None] = print
    ) -> ParallelPlan:
        mode = resolve_mode(parallel, log)
        tp = tensor_parallel_size(mode, tp_size)
        return cls(
            mode=mode,
            world=world_size(),
            dp=data_parallel_size(mode, tp_size),
            tp=tp,
            rank=rank(),
            dp_rank=data_parallel_rank(mode, tp_size) if mode != "none" else 0,
        )

    def tokens_per_step(self, batch_size: int, grad_accum_steps: int, block_size: int) -> int:
        """Tokens in one optimizer step over all data-parallel ranks."""
        return batch_size * grad_accum_steps * block_size * self.dp

    def shard(self, sampler):
        """This rank's slice of each global batch `sampler` draws (all of it without dp)."""
        return RankSlice(sampler, self.dp_rank, self.dp) if self.dp > 1 else sampler

    def describe(self) -> str:
        """A phrase for the start-up line: '' for one process."""
        if self.mode == "none":
            return ""
        text = f"; {self.world} processes, {self.mode}"
        if self.mode == "fsdp+tp":
            text += f" on a {self.dp} x {self.tp} mesh (fsdp x tp)"
        return text


def run_on_main(fn: Callable[[], T]) -> T:
    """fn() on rank 0 while the others wait; every rank gets its result, or its error."""
    if world_size() == 1:
        return fn()
    outcome: list = [None, None]
    if is_main():
        try:
            outcome[0] = fn()
        except BaseException as e:  # the others must not wait forever
            outcome[1] = e
    dist.broadcast_object_list(outcome, src=0)
    if outcome[1] is not None:
        if is_main():
            raise outcome[1]
        raise LmforgeError(f"rank 0 failed: {outcome[1]}")
    return outcome[0]


def max_over_ranks(*values: float) -> list[float]:
    """Each value's maximum over the ranks, so that they all act on the same figure: a Ctrl-C
    or a clock seen by one rank, the step the time budget's schedule has reached."""
    if world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def mean_over_ranks(value: float) -> float:
    if world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return t.item() / world_size()


def _collective_device() -> torch.device:
    return (
        torch.device("cuda", torch.cuda.current_device()) if _uses_nccl() else torch.device("cpu")
    )


def _uses_nccl() -> bool:
    return dist.is_initialized() and dist.get_backend() == "nccl"


# ---------------------------------------------------------------- data


class RankSlice:
    """This rank's rows of each step's global batch: `sampler` draws the global batch
    (batch_size x world rows, seeded by the step) and rank r keeps rows r*b .. (r+1)*b - 1."""

    def __init__(self, sampler, rank: int, world: int):
        if sampler.batch_size % world:
            raise LmforgeError(
                f"a global batch of {sampler.batch_size} does not split {world} ways"
            )
        self.sampler, self.rank, self.world = sampler, rank, world
        self.block_size = sampler.block_size
        self.batch_size = sampler.batch_size // world

    def batch(self, step: int, micro: int = 0):
        """This rank's rows of the global batch: a tensor, or a tuple or dict of them (a
        fine-tuning task's batch, padded to the global batch's longest example)."""
        rows = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)

        def cut(value):
            if isinstance(value, torch.Tensor):
                return value[rows]
            if isinstance(value, dict):
                return {k: cut(v) for k, v in value.items()}
            return type(value)(cut(v) for v in value)

        return cut(self.sampler.batch(step, micro))

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.steps_per_epoch


# ---------------------------------------------------------------- wrapping


def check_tensor_parallel(model: nn.Module, ways: int) -> None:
    """Heads and MLP units must split evenly across the ranks."""
    for m in model.modules():
        if isinstance(m, MultiHeadAttention) and (m.n_head % ways or m.n_kv_head % ways):
            raise LmforgeError(
                f"tensor parallel splits attention heads {ways} ways, but "
                f"n_head={m.n_head}, n_kv_head={m.n_kv_head}; set --model.n_head (and "
                f"n_kv_head) to a multiple of {ways}, or use --train.parallel=fsdp"
            )
        if isinstance(m, MLP) and m.up.out_features % ways:
            raise LmforgeError(
                f"tensor parallel splits the MLP's {m.up.out_features} hidden units {ways} "
                f"ways; set --model.mlp_hidden to a multiple of {ways}"
            )


def wrap(model: nn.Module, plan: ParallelPlan, device: torch.device) -> nn.Module:
    """Apply the plan's mode to a built model (on `device`); returns the module to train."""
    mode, tp = plan.mode, plan.tp
    if mode == "none":
        return model
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None
        )
    if mode not in MODES:
        raise LmforgeError(f"unknown train.parallel={mode!r}; choose one of {', '.join(MODES)}")
    from torch.distributed.device_mesh import init_device_mesh

    # rank = data_rank * tp + tensor_rank: a row of the mesh is one TP group
    mesh = init_device_mesh(device.type, (world_size() // tp, tp), mesh_dim_names=("dp", "tp"))
    if tp > 1:
        _tensor_parallel(model, mesh["tp"])
    if mode in ("fsdp", "fsdp+tp"):
        _fully_shard(model, mesh["dp"])
    if mode == "fsdp+tp":
        # DTensor warns, on every rank, that the 2-D gradient norm and the full checkpoint
        # take one collective per mesh dimension: expected, and far from the step's cost.
        logging.getLogger("torch.distributed.tensor._redistribute").setLevel(logging.ERROR)
    return model


def _fully_shard(model: nn.Module, mesh) -> None:
    from torch.distributed.fsdp import fully_shard

    # One unit per block: its weights are gathered just for its own forward and backward.
    for m in model.modules():
        if isinstance(m, Block):
            fully_shard(m, mesh=mesh)
    fully_shard(model, mesh=mesh)  # embeddings, final norm, head


def _tensor_parallel(model: nn.Module, mesh) -> None:
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    ways = mesh.size()
    check_tensor_parallel(model, ways)
    for m in list(model.modules()):
        if isinstance(m, MultiHeadAttention):
            plan = {"q": ColwiseParallel(), "k": ColwiseParallel(), "v": ColwiseParallel()}
            parallelize_module(m, mesh, {**plan, "out": RowwiseParallel()})
            m.n_head //= ways  # the heads this rank holds
            m.n_kv_head //= ways
        elif isinstance(m, MLP):
            plan = {"up": ColwiseParallel(), "down": RowwiseParallel()}
            if m.gate is not None:
                plan["gate"] = ColwiseParallel()
            parallelize_module(m, mesh, plan)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (FSDP and TP change the model in place)."""
    return getattr(model, "module", model)


def is_sharded(model: nn.Module) -> bool:
    """FSDP or TP: some parameters are DTensors, pieces of a tensor spread over the ranks."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient reduction on the micro-batches before the last one of a step."""
    from torch.distributed.fsdp import FSDPModule
    from torch.nn.parallel import DistributedDataParallel

    if enabled:
        yield
    elif isinstance(model, DistributedDataParallel):
        with model.no_sync():
            yield
    elif isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


def clip_grad_norm(model: nn.Module, max_norm: float) -> float:
    """torch's clip_grad_norm_, also where gradients live on different meshes (TP shards,
    replicated tensors, FSDP shards of either), which one foreach kernel cannot take: the
    norm of each group of like gradients, combined. Returns the global norm before clipping."""
    from torch.distributed.tensor import DTensor

    groups: dict = {}
    for p in model.parameters():
        if p.grad is not None:
            g = p.grad
            key = (g.device_mesh, g.placements) if isinstance(g, DTensor) else None
            groups.setdefault(key, []).append(g)
    if len(groups) <= 1:  # one kernel takes them all (or there are none)
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        return (norm.full_tensor() if isinstance(norm, DTensor) else norm).item()
    norms = []
    for grads in groups.values():
        norm = torch.nn.utils.get_total_norm(grads)
        norms.append(norm.full_tensor() if isinstance(norm, DTensor) else norm)
    total = torch.linalg.vector_norm(torch.stack([n.to(norms[0]) for n in norms])).item()
    scale = min(1.0, max_norm / (total + 1e-6))
    if scale < 1.0:
        for grads in groups.values():
            torch._foreach_mul_(grads, scale)
    return total


# ---------------------------------------------------------------- full state for checkpoints


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> tuple[dict, dict]:
    """Unsharded weights and optimizer state (collective under FSDP and TP, complete on rank 0),
    the optimizer's in the single-process layout of `optimizer.state_dict()` ({} without one)."""
    if not is_sharded(model):
        return unwrap(model).state_dict(), optimizer.state_dict() if optimizer else {}
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=options)
    if optimizer is None:
        return weights, {}
    by_name = get_optimizer_state_dict(model, optimizer, options=options)
    if not by_name:  # ranks other than 0 get nothing
        return weights, {}
    names = [name for group in by_name["param_groups"] for name in group["params"]]
    index = {name: i for i, name in enumerate(names)}
    return weights, {
        "state": {index[name]: s for name, s in by_name["state"].items()},
        "param_groups": [
            {**g, "params": [index[n] for n in g["params"]]} for g in by_name["param_groups"]
        ],
    }


def load_full_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, weights: dict, optimizer_state: dict
) -> None:
    """Shard full weights (every name of tied tensors present) and a single-process optimizer
    state onto a FSDP or TP model, as each rank's piece."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, weights, options=options)
    name_of = {id(p): name for name, p in model.named_parameters()}
    names = [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]
    by_name = {
        "state": {names[i]: s for i, s in optimizer_state["state"].items()},
        "param_groups": [
            {**g, "params": [names[i] for i in g["params"]]}
            for g in optimizer_state["param_groups"]
        ],
    }
    set_optimizer_state_dict(model, optimizer, by_name, options=options)
