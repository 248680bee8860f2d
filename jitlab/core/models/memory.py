"""Activation memory of a backbone, counted from the tensors autograd saves for backward (no formula).

Per sample: what ``saved_tensors_hooks`` sees packed during the forward and the flow loss under the run's precision
(bf16 autocast on CPU, as on GPU), each storage once, at batch 4 minus batch 2, halved (the weights autocast keeps
as bfloat16 cancel). It runs under ``FakeTensorMode`` (shapes, dtypes and aliasing, no data), so the real code is
followed (autocast's casts, the fp32 attention's copies, dropout masks) without computing anything.

Eager, for ``JiT``: models of 1 and of 2 blocks at full width and tokens give the non-block part and one block of
each kind (before/after the in-context tokens, with/without dropout). Other backbones: one full count.
Compiled (each block compiled on its own, the rest eager): one block of each kind is traced, never run, by
AOTAutograd with inductor's decompositions and min-cut partitioner (what ``torch.compile`` runs); what its forward
hands to the backward and depends on the block's input is saved per sample. Cached per block shape under
``$XDG_CACHE_HOME/jitlab/memory``. Checkpointed: each block keeps its input, and one block is recomputed at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef

from jitlab.atomic import write_json
from jitlab.classpath import import_path
from jitlab.core.flow import Flow, FlowConfig
from jitlab.core.models.jit import JiT

BATCHES = (2, 4)  # the two batch sizes whose difference is counted
# the compiled trace's batch: only traced (no memory, no compute), so a realistic micro-batch; the partitioner
# weighs tensors by size, and its choices at batch 1-4 differ slightly from those of a training micro-batch
COMPILED_BATCH = 32
Kind = tuple[bool, bool]  # (after the in-context tokens join, with dropout)


class NotCountable(ValueError):
    """A backbone whose training forward cannot be followed on fake tensors (e.g. data-dependent shapes)."""


@dataclass(frozen=True)
class ActivationCount:
    """Bytes per sample kept for backward (eager, compiled, and each with per-block checkpointing)."""

    eager: float
    compiled: float | None  # None: not counted (``compiled=False``)
    checkpointed: float  # eager blocks recomputed
    checkpointed_compiled: float | None
    attention: float  # of ``eager``: the saved attention probabilities (float32 and bfloat16 copies)
    block_params: int  # parameters of the largest block (sharding gathers one or two at a time)
    params: int
    method: str

    def per_sample(self, compiled: bool, checkpointing: bool) -> float:
        if compiled and self.compiled is not None:
            return self.checkpointed_compiled if checkpointing else self.compiled
        return self.checkpointed if checkpointing else self.eager


@contextmanager
def counting_saved(into: dict[int, tuple[int, bool]], tokens: set[int] | None = None) -> Iterator[None]:
    """Record each storage packed for backward once: ``into[storage id] = (bytes, is attention probabilities)``.

    ``tokens``: sequence lengths L whose (..., L, L) tensors are attention probabilities.
    """
    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        square = t.dim() >= 2 and t.shape[-1] == t.shape[-2] and tokens is not None and t.shape[-1] in tokens
        into.setdefault(StorageWeakRef(storage).cdata, (storage.nbytes(), square))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield


def _autocast(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)


def saved_bytes(net: nn.Module, flow: Flow, batch: int, bf16: bool) -> tuple[int, int]:
    """(all, attention) bytes saved by one training forward and flow loss of ``batch`` samples (fake tensors)."""
    found: dict[int, tuple[int, bool]] = {}
    tokens = {net.num_patches, net.num_patches + getattr(net, "in_context_len", 0)}
    x = torch.randn(batch, *net.sample_shape)  # (N, C, H, W)
    y = torch.zeros(batch, dtype=torch.long)  # (N,)
    with counting_saved(found, tokens), _autocast(bf16):
        t, eps, z = flow.draw(x)  # (N,), (N, C, H, W), (N, C, H, W)
        out = net(flow.net_input(z, t), t, y)  # (N, C, H, W)
        loss = flow.per_sample_loss(out, x, eps, z, t).mean()
    del loss
    return sum(b for b, _ in found.values()), sum(b for b, square in found.values() if square)


def per_sample(net: nn.Module, flow: Flow, bf16: bool) -> tuple[float, float]:
    """(all, attention) bytes per sample: the difference of two batch sizes."""
    (a, att_a), (b, att_b) = (saved_bytes(net, flow, n, bf16) for n in BATCHES)
    return (b - a) / (BATCHES[1] - BATCHES[0]), (att_b - att_a) / (BATCHES[1] - BATCHES[0])


def fake_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode

    return FakeTensorMode()


def probe(net_args: dict[str, Any], kind: Kind, blocks: int) -> JiT:
    """A JiT at full width and tokens with ``blocks`` blocks, all of ``kind`` (built on the current device/mode)."""
    context, dropout = kind
    args = {**net_args, "depth": 4, "checkpointing": False, "in_context_start": 0}
    if not context:
        args["in_context_len"] = 0
    net = JiT(**args)
    block = net.blocks[1 if dropout else 0]  # a depth-4 JiT has dropout in blocks 1 and 2 (the middle half)
    net.blocks = nn.ModuleList([block] * blocks)
    net.depth = blocks
    return net.train()


def kind_of(net_args: dict[str, Any], i: int) -> Kind:
    """The kind of block ``i`` of a JiT of ``net_args`` (as ``JiT.__init__`` and ``JiT.forward`` place them)."""
    depth, start = net_args["depth"], net_args.get("in_context_start", 4)
    dropout = bool(net_args.get("attn_drop", 0.0) or net_args.get("proj_drop", 0.0))
    return (net_args.get("in_context_len", 32) > 0 and i >= start, dropout and i in range(depth // 4, depth // 4 * 3))


def count_eager(net_args: dict[str, Any], flow: Flow, bf16: bool) -> dict[str, Any]:
    """Per-kind block counts and the non-block part (bytes per sample) of a JiT, eager, on fake tensors.

    Of a model of one and of two blocks of a kind: block = two - one, the rest = one - block (the final layer reads
    the last block's output, so the rest is taken with the last block's kind).
    """
    per_kind: dict[Kind, dict[str, float]] = {}
    with fake_mode():
        for kind in sorted({kind_of(net_args, i) for i in range(net_args["depth"])}):
            nets = [probe(net_args, kind, n) for n in (1, 2)]
            inputs: list[int] = []  # the block's input (what a checkpointed block keeps), by a forward hook
            hook = nets[0].blocks[0].register_forward_pre_hook(lambda _m, args: inputs.append(args[0].nbytes))
            (one, att_one), (two, att_two) = (per_sample(net, flow, bf16) for net in nets)
            hook.remove()
            per_kind[kind] = {"block": two - one, "rest": 2 * one - two, "attention": att_two - att_one,
                              "input": (inputs[-1] - inputs[0]) / (BATCHES[1] - BATCHES[0])}
    return per_kind


def count_full(net: nn.Module, flow: Flow, bf16: bool) -> tuple[float, float]:
    """(all, attention) bytes per sample of a whole network (any backbone), eager: ``net`` built in fake mode."""
    return per_sample(net.train(), flow, bf16)


# -- compiled blocks -----------------------------------------------------------------------------------


class _Traced(Exception):
    """Raised by the forward compiler once the partitioned forward is read: nothing is run."""


class _BlockCall(nn.Module):
    def __init__(self, block: nn.Module, rope: nn.Module | None):
        super().__init__()
        self.block, self.rope = block, rope

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.block(h, c, self.rope)  # (N, L, D)


def partitioned_saved_bytes(module: nn.Module, h: torch.Tensor, c: torch.Tensor, bf16: bool) -> int:
    """Bytes the min-cut partitioned forward of ``module(h, c)`` hands to its backward that depend on the inputs
    ``h``, ``c`` (so grow with the batch; saved weights and their bfloat16 casts do not), each storage once."""
    from torch._functorch.aot_autograd import aot_module
    from torch._functorch.partitioners import min_cut_rematerialization_partition
    from torch._inductor.decomposition import select_decomp_table

    found: dict[int, int] = {}

    def forward_compiler(gm: torch.fx.GraphModule, _inputs: list) -> Any:
        placeholders = [node for node in gm.graph.nodes if node.op == "placeholder"]
        batched = set(placeholders[-2:])  # the primals: parameters and buffers first, then h and c
        for node in gm.graph.nodes:  # topological order: a node after its arguments
            if node.op != "placeholder" and any(arg in batched for arg in node.all_input_nodes):
                batched.add(node)
        output = next(node for node in gm.graph.nodes if node.op == "output")
        for node in output.args[0][1:]:  # the block's output first, then what is saved for backward
            value = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
            if node in batched and isinstance(value, torch.Tensor):
                storage = value.untyped_storage()
                found.setdefault(StorageWeakRef(storage).cdata, storage.nbytes())
        raise _Traced

    traced = aot_module(module, fw_compiler=forward_compiler, bw_compiler=forward_compiler,
                        partition_fn=min_cut_rematerialization_partition, decompositions=select_decomp_table())
    try:
        with _autocast(bf16):
            traced(h, c)
    except _Traced:
        pass
    return sum(found.values())


def compiled_block(net_args: dict[str, Any], kind: Kind, input_dtype: torch.dtype, bf16: bool) -> float:
    """Bytes per sample a compiled block of ``kind`` saves (its input included), cached per block shape."""
    keys = ("hidden_size", "num_heads", "mlp_ratio", "rope", "qk_norm", "in_context_len", "mlp", "norm", "attn_drop",
            "proj_drop", "attn_impl")  # a block sees the width and the token grid, not the patch size
    grid = net_args["img_size"] // net_args["patch_size"]
    spec = {k: net_args.get(k) for k in keys} | {"grid": grid, "kind": kind, "dtype": str(input_dtype), "bf16": bf16,
                                                  "torch": torch.__version__, "batch": COMPILED_BATCH, "version": 1}
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jitlab" / "memory"
    path = cache / f"block-{hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]}.json"
    if path.is_file():
        return float(json.loads(path.read_text())["bytes_per_sample"])
    with torch.device("meta"):
        net = probe(net_args, kind, 1)
    rope = net.rope_in_context if kind[0] and net.rope_in_context is not None else net.rope
    call = _BlockCall(net.blocks[0], rope).to_empty(device="cpu").train()
    tokens = net.num_patches + (net.in_context_len if kind[0] else 0)
    h = torch.empty(COMPILED_BATCH, tokens, net.hidden_size, dtype=input_dtype, requires_grad=True)  # (N, L, D)
    c = torch.empty(COMPILED_BATCH, net.hidden_size, requires_grad=True)  # (N, D)
    value = partitioned_saved_bytes(call, h, c, bf16) / COMPILED_BATCH
    try:
        write_json(path, spec | {"bytes_per_sample": value})
    except OSError:
        pass  # an unwritable cache only costs the trace again
    return value


# -- the whole count -------------------------------------------------------------------------------------


_COUNTED: dict[str, ActivationCount] = {}  # one count per network, flow and precision in a process


def count_activations(net_spec: dict[str, Any], flow: dict[str, Any] | FlowConfig | None = None, bf16: bool = True,
                      compiled: bool = True) -> ActivationCount:
    """``counted_activations``, remembered per process (a grid's cells share networks)."""
    flow_args = asdict(flow) if isinstance(flow, FlowConfig) else dict(flow or {})
    key = json.dumps([net_spec, flow_args, bf16, compiled], sort_keys=True, default=str)
    if key not in _COUNTED:
        _COUNTED[key] = counted_activations(net_spec, flow_args, bf16, compiled)
    return _COUNTED[key]


def counted_activations(net_spec: dict[str, Any], flow: dict[str, Any] | FlowConfig | None = None, bf16: bool = True,
                        compiled: bool = True) -> ActivationCount:
    """Bytes per sample of a network ``{"class_path", "init_args"}`` (complete: img_size and num_classes set),
    trained with ``flow`` (default: the paper's) under bf16 autocast (``bf16``) or float32. A ``JiT`` is counted by
    blocks; any other backbone by one full eager count (no compiled count; checkpointing taken as not reducing it).
    """
    cls = import_path(net_spec["class_path"])
    args = dict(net_spec.get("init_args") or {})
    flow_obj = Flow(flow if isinstance(flow, FlowConfig) else FlowConfig(**(flow or {})))
    with torch.device("meta"):
        meta = cls(**args)
    params = sum(p.numel() for p in meta.parameters())
    block_params = max((sum(p.numel() for p in b.parameters()) for b in getattr(meta, "blocks", [])), default=0)
    if cls is not JiT:
        try:
            with fake_mode():
                eager, attention = count_full(cls(**args), flow_obj, bf16)
        except Exception as error:  # noqa: BLE001 -- any backbone: one that fake tensors cannot run is named
            raise NotCountable(f"{cls.__name__}: activations not counted (its training forward could not be followed "
                               f"on fake tensors: {type(error).__name__})") from None
        return ActivationCount(eager, None, eager, None, attention, block_params, params, "full count, eager")
    args = {**meta.init_args}
    per_kind = count_eager(args, flow_obj, bf16)
    order = [kind_of(args, i) for i in range(args["depth"])]
    rest = per_kind[order[-1]]["rest"]
    eager = rest + sum(per_kind[k]["block"] for k in order)
    attention = sum(per_kind[k]["attention"] for k in order)
    kept = rest + sum(per_kind[k]["input"] for k in order)  # a checkpointed block keeps its input only
    checkpointed = kept + max(per_kind[k]["block"] for k in per_kind)  # one block recomputed at a time
    compiled_total = checkpointed_compiled = None
    method = "fake tensors: the non-block part and one block per kind (1- and 2-block models), scaled by depth"
    if compiled:
        dtype = {4: torch.float32, 2: torch.bfloat16}[round(per_kind[order[0]]["input"] /
                                                            (meta.num_patches * meta.hidden_size)) or 4]
        block = {k: compiled_block(args, k, dtype, bf16) for k in per_kind}
        compiled_total = rest + sum(block[k] for k in order)
        checkpointed_compiled = kept + max(block.values())
        method += "; compiled: each block kind traced by AOTAutograd's min-cut partitioner, the rest eager"
    return ActivationCount(eager, compiled_total, checkpointed, checkpointed_compiled, attention, block_params,
                           params, method)
