"""Export the example models in ``examples/models/`` as graph-only ONNX files.

Needs the ``export`` extra (torch, transformers, onnxscript)::

    pip install -e '.[export]'
    python examples/export_models.py [--only NAME ...] [--out DIR]

The transformers models (GPT-2 as GPT-3, BERT) are the stock classes built from a
configuration and called as their users call them, with ``input_ids`` only: no custom
forward, no mask passed in, so the graph holds transformers' own causal-mask builder.
They are exported as torch documents it::

    torch.onnx.export(model, (input_ids,), dynamo=True,
                      dynamic_shapes={"input_ids": {0: "batch"}})

here with a dynamic batch and the sequence fixed at the configuration's length, so the
README's commands and the tests plan them with ``--batch-size`` alone; the same models
with a dynamic sequence too (``--dim seq=S``), from both exporters, are the import
corpus of ``tests/corpus/make_corpus.py``. The GShard MoE, Wide-ResNet and MLP are this
project's own modules (the Alpa paper's benchmarks), exported the same way.

Every model is built on the ``meta`` device, so no weights are ever materialised or
downloaded (torch's exporter cannot run the onnxscript optimizer on meta weights, so
it runs here on the graph with the weights as inputs). Each file is saved so that:

* the graph inputs are data only (``input_ids`` / ``pixel_values`` / ``x``);
* every weight is an initializer whose data lives in ``<file>.data``, a file that is
  never written: the ONNX files are graphs only; small constants keep their data;
* node ``metadata_props`` keep ``pkg.torch.onnx.name_scopes`` (the module path, then
  the FX node name, e.g. ``['', 'layers.3', 'layers.3.moe', 'einsum']``, which the
  planner's layer clustering reads) and ``pkg.torch.onnx.class_hierarchy``; stack
  traces and FX dumps are dropped.

``models.json`` in the output folder describes every model: file, family, config,
the exact torch parameter count (tied weights counted once), the number of scalars
held in the ONNX weights, the initializers without data (``onnx_parameters``; it also
counts buffers such as BatchNorm running statistics and position ids), the data inputs with
``"batch"`` for the dynamic dimension.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir
import onnxscript.optimizer
import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    OPTConfig,
    OPTForCausalLM,
)
from transformers.initialization import no_init_weights

DEFAULT_OUT = Path(__file__).resolve().parent / "models"

# Node metadata worth keeping: the module path and module classes of each node.
KEEP_METADATA = ("pkg.torch.onnx.name_scopes", "pkg.torch.onnx.class_hierarchy")

# Floating-point initializers above this many elements lose their data in a graph-only
# file, as weights do (the optimizer folds some from weights: a tied embedding's transpose).
EMBEDDED_LIMIT = 1024
FLOAT_TYPES = frozenset(
    {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
     onnx.TensorProto.DOUBLE}
)  # fmt: skip

# On the meta route, the optimizer folds only shape-sized constants: anything as large as a
# sequence stays an op (e.g. Range), so tiny and full-size models get the same structure.
FOLD_OUTPUT_SIZE_LIMIT = 16

# Example batch for tracing: not 1 (torch.export would specialise it).
EXAMPLE_BATCH = 2
BATCH_AXIS = {0: "batch"}

Entry = dict[str, Any]


# --------------------------------------------------------------------------------------
# Export pipeline, shared with tests/corpus/make_corpus.py
# --------------------------------------------------------------------------------------


def _strip_metadata(graph: onnx.GraphProto) -> None:
    """Keep the node metadata the planner reads (name scopes) and the module classes; drop
    stack traces, FX dumps and doc strings, which only make files large."""
    for node in graph.node:
        node.doc_string = ""
        kept = [p for p in node.metadata_props if p.key in KEEP_METADATA]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
    graph.doc_string = ""


def _inputs_to_external(graph: onnx.GraphProto, data_inputs: set[str], location: str) -> None:
    """Make every graph input that is not data (a weight the exporter lists as an input) an
    initializer stored in ``location``, a file that is never written. Unused inputs go."""
    used = {name for node in graph.node for name in node.input}
    offset = 0
    inputs = []
    for value in graph.input:
        if value.name in data_inputs:
            inputs.append(value)
            continue
        if value.name not in used:
            continue
        tensor_type = value.type.tensor_type
        dims = [d.dim_value for d in tensor_type.shape.dim]
        tensor = onnx.TensorProto(name=value.name, data_type=tensor_type.elem_type, dims=dims)
        offset = _point_to_external(tensor, location, offset)
        graph.initializer.append(tensor)
    del graph.input[:]
    graph.input.extend(inputs)


def _point_to_external(tensor: onnx.TensorProto, location: str, offset: int) -> int:
    """Drop the tensor's data and record it at ``offset`` in ``location``; the next offset."""
    itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    length = math.prod(tensor.dims) * itemsize
    for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data"):
        tensor.ClearField(field)
    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, val in (("location", location), ("offset", offset), ("length", length)):
        tensor.external_data.add(key=key, value=str(val))
    return offset + length


def _initializers_to_external(graph: onnx.GraphProto, weights: set[str], location: str) -> None:
    """Weights (and any large floating-point initializer the optimizer folded from weights,
    such as a transposed tied embedding) lose their data; small constants keep theirs."""
    offset = 0
    for init in graph.initializer:
        is_float = init.data_type in FLOAT_TYPES
        if init.name in weights or (is_float and math.prod(init.dims) > EMBEDDED_LIMIT):
            offset = _point_to_external(init, location, offset)


def _weightless_model(program: Any, path: Path, weights: set[str]) -> onnx.ModelProto:
    """The exported model as a protobuf whose weights point to an external file that is never
    written: serialised from onnx_ir with every weight's data replaced by a reference."""
    model = program.model
    location = f"{path.name}.data"
    offset = 0
    for name, value in model.graph.initializers.items():
        tensor = value.const_value
        if tensor is None:
            continue
        is_float = tensor.dtype.is_floating_point()
        if name in weights or (is_float and math.prod(tensor.shape.numpy()) > EMBEDDED_LIMIT):
            length = tensor.nbytes
            value.const_value = ir.ExternalTensor(
                location=location,
                offset=offset,
                length=length,
                dtype=tensor.dtype,
                shape=tensor.shape,
                name=name,
                base_dir=str(path.parent),
            )
            offset += length
    return ir.serde.serialize_model(model)


def export_dynamo(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    kwargs: dict[str, torch.Tensor],
    dynamic_shapes: dict[str, dict[int, str]],
    path: Path,
) -> onnx.ModelProto:
    """``torch.onnx.export(module, args, kwargs=kwargs, dynamo=True, dynamic_shapes=...)`` as
    torch's documentation writes it, saved graph-only at ``path``.

    A module with weights in memory is exported exactly so (torch runs the onnxscript optimizer
    on it); a module on the ``meta`` device is exported with ``optimize=False`` and optimised
    here with its weights as graph inputs, since the optimizer would read their data.
    """
    module.eval()
    on_meta = any(p.is_meta for p in module.parameters())
    program = torch.onnx.export(
        module,
        args,
        kwargs=kwargs or None,
        dynamo=True,
        optimize=not on_meta,
        verbose=False,
        dynamic_shapes=dynamic_shapes,
    )
    assert program is not None
    if on_meta:
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / path.name
            program.save(str(raw), include_initializers=False, keep_initializers_as_inputs=True)
            model = onnx.load(str(raw), load_external_data=False)
        model = onnxscript.optimizer.optimize(model, output_size_limit=FOLD_OUTPUT_SIZE_LIMIT)
        _inputs_to_external(model.graph, set(dynamic_shapes), f"{path.name}.data")
    else:
        weights = {name for name, _ in module.named_parameters()}
        weights |= {name for name, _ in module.named_buffers()}
        model = _weightless_model(program, path, weights)
    return _finish(model, path)


def export_torchscript(
    module: nn.Module,
    args: tuple[Any, ...],
    input_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
    path: Path,
    opset: int = 17,
) -> onnx.ModelProto:
    """``torch.onnx.export(module, args, path, dynamo=False, opset_version=opset,
    input_names=..., dynamic_axes=...)``, graph-only: exported with ``export_params=False``, so
    the weights come out as graph inputs, which then become initializers without data."""
    module.eval()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / path.name
        torch.onnx.export(
            module,
            args,
            str(raw),
            dynamo=False,
            opset_version=opset,
            input_names=input_names,
            dynamic_axes=dynamic_axes,
            export_params=False,
        )
        model = onnx.load(str(raw), load_external_data=False)
    _inputs_to_external(model.graph, set(input_names), f"{path.name}.data")
    return _finish(model, path)


def _finish(model: onnx.ModelProto, path: Path) -> onnx.ModelProto:
    graph = model.graph
    graph.name = path.stem
    _strip_metadata(graph)
    _initializers_to_external(graph, set(), f"{path.name}.data")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return model


def onnx_parameter_count(model: onnx.ModelProto) -> int:
    """Number of scalars held in the model's weights (its initializers without data)."""
    return sum(
        math.prod(init.dims)
        for init in model.graph.initializer
        if init.data_location == onnx.TensorProto.EXTERNAL
    )


def build(model_class: Any, config: Any, on_meta: bool = True) -> nn.Module:
    """A transformers model from its configuration, with no weights downloaded: on the ``meta``
    device, or in memory with uninitialised weights (``no_init_weights``) when an exporter
    needs tensors with data."""
    if on_meta:
        with torch.device("meta"):
            return model_class._from_config(config)
    with no_init_weights():
        return model_class._from_config(config)


# --------------------------------------------------------------------------------------
# GPT (transformers' stock GPT-2, as used for GPT-3 in the Alpa paper)
# --------------------------------------------------------------------------------------


def export_gpt(path: Path, hidden: int, layers: int, heads: int, seq: int, vocab: int) -> Entry:
    """Stock ``GPT2LMHeadModel`` called with ``input_ids[batch, seq]`` only (transformers
    builds the causal mask in the graph), dynamic batch."""
    config = GPT2Config(
        n_embd=hidden,
        n_layer=layers,
        n_head=heads,
        n_positions=seq,
        vocab_size=vocab,
        bos_token_id=0,
        eos_token_id=0,
        use_cache=False,
    )
    model = build(GPT2LMHeadModel, config)
    example = torch.zeros(EXAMPLE_BATCH, seq, dtype=torch.int64, device="meta")
    onnx_model = export_dynamo(model, (example,), {}, {"input_ids": BATCH_AXIS}, path)
    cfg = {"hidden": hidden, "layers": layers, "heads": heads, "seq": seq, "vocab": vocab}
    return _entry(path, "gpt", cfg, model, onnx_model, {"input_ids": ["batch", seq]})


# --------------------------------------------------------------------------------------
# OPT (transformers' stock OPTForCausalLM, Meta's OPT family)
# --------------------------------------------------------------------------------------


def export_opt(
    path: Path, hidden: int, layers: int, heads: int, seq: int, vocab: int = 50272
) -> Entry:
    """Stock ``OPTForCausalLM`` called with ``input_ids[batch, seq]`` only (the causal mask is
    built in the graph), dynamic batch; OPT's feed-forward is 4 x hidden."""
    config = OPTConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        ffn_dim=4 * hidden,
        max_position_embeddings=seq,
        vocab_size=vocab,
        word_embed_proj_dim=hidden,
        use_cache=False,
    )
    model = build(OPTForCausalLM, config)
    example = torch.zeros(EXAMPLE_BATCH, seq, dtype=torch.int64, device="meta")
    onnx_model = export_dynamo(model, (example,), {}, {"input_ids": BATCH_AXIS}, path)
    cfg = {"hidden": hidden, "layers": layers, "heads": heads, "seq": seq, "vocab": vocab}
    return _entry(path, "opt", cfg, model, onnx_model, {"input_ids": ["batch", seq]})


# --------------------------------------------------------------------------------------
# BERT (masked-LM logits)
# --------------------------------------------------------------------------------------


def export_bert(
    path: Path,
    hidden: int = 768,
    layers: int = 12,
    heads: int = 12,
    seq: int = 128,
    vocab: int = 30522,
) -> Entry:
    """Stock ``BertForMaskedLM`` called with ``input_ids[batch, seq]`` only."""
    config = BertConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        vocab_size=vocab,
    )
    model = build(BertForMaskedLM, config)
    example = torch.zeros(EXAMPLE_BATCH, seq, dtype=torch.int64, device="meta")
    onnx_model = export_dynamo(model, (example,), {}, {"input_ids": BATCH_AXIS}, path)
    cfg = {"hidden": hidden, "layers": layers, "heads": heads, "seq": seq, "vocab": vocab}
    return _entry(path, "bert", cfg, model, onnx_model, {"input_ids": ["batch", seq]})


def _entry(
    path: Path,
    family: str,
    config: dict[str, Any],
    module: nn.Module,
    model: onnx.ModelProto,
    inputs: dict[str, list[Any]],
) -> Entry:
    entry: Entry = {
        "file": path.name,
        "family": family,
        "config": config,
        "parameters": sum(p.numel() for p in module.parameters()),
        "onnx_parameters": onnx_parameter_count(model),
        "inputs": inputs,
    }
    return entry


# --------------------------------------------------------------------------------------
# GShard MoE (GPT-like decoder, every second MLP is a top-2 mixture of experts)
# --------------------------------------------------------------------------------------


def _causal_mask(seq: int, device: torch.device) -> torch.Tensor:
    """Additive [1, 1, seq, seq] causal mask of the GShard model, built from Range ops."""
    pos = torch.arange(seq, device=device)
    future = pos[None, :] > pos[:, None]
    mask = torch.where(future, torch.finfo(torch.float32).min, 0.0)
    return mask[None, None]


class CausalSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        seq, hidden = x.shape[1], x.shape[2]
        head_dim = hidden // self.heads
        qkv = self.qkv(x).reshape(-1, seq, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = q @ k.transpose(-1, -2) * head_dim**-0.5 + mask
        out = torch.softmax(scores, dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(-1, seq, hidden))


class MLP(nn.Module):
    def __init__(self, hidden: int, ffn: int) -> None:
        super().__init__()
        self.fc = nn.Linear(hidden, ffn)
        self.proj = nn.Linear(ffn, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(nn.functional.gelu(self.fc(x)))


class MoE(nn.Module):
    """GShard mixture of experts: top-k gating with a fixed expert capacity.

    Tokens are split in groups of ``group_size``; each expert takes at most
    ``capacity`` tokens per group. Dispatch and combine are one-hot
    [group, token, expert, capacity] tensors, so every shape is static except the
    number of groups, which follows the batch.
    """

    def __init__(
        self,
        hidden: int,
        ffn: int,
        experts: int,
        group_size: int,
        top_k: int,
        capacity_factor: float,
    ) -> None:
        super().__init__()
        self.group_size = group_size
        self.top_k = top_k
        self.capacity = math.ceil(capacity_factor * group_size * top_k / experts)
        self.gate = nn.Linear(hidden, experts, bias=False)
        self.w_in = nn.Parameter(torch.empty(experts, hidden, ffn))
        self.b_in = nn.Parameter(torch.empty(experts, 1, ffn))
        self.w_out = nn.Parameter(torch.empty(experts, ffn, hidden))
        self.b_out = nn.Parameter(torch.empty(experts, 1, hidden))

    def _routing(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dispatch (0/1) and combine (gate-weighted) tensors, [g, s, e, c]."""
        experts = probs.shape[-1]
        top_probs, top_idx = torch.topk(probs, self.top_k, dim=-1)
        top_probs = top_probs / top_probs.sum(dim=-1, keepdim=True)
        choice = nn.functional.one_hot(top_idx, experts).to(probs.dtype)  # [g, s, k, e]
        routes = []
        filled: torch.Tensor | float = 0.0  # [g, 1, e]: slots taken by earlier choices
        for i in range(self.top_k):
            mask = choice[:, :, i]  # [g, s, e]
            slot = torch.cumsum(mask, dim=1) - mask + filled
            mask = mask * (slot < self.capacity).to(mask.dtype)  # drop tokens over capacity
            filled = filled + mask.sum(dim=1, keepdim=True)
            slot_idx = (slot * mask).sum(dim=-1).to(torch.int64)  # [g, s]
            slot_onehot = nn.functional.one_hot(slot_idx, self.capacity).to(probs.dtype)
            routes.append(mask[..., None] * slot_onehot[:, :, None, :])  # [g, s, e, c]
        dispatch = torch.stack(routes).sum(dim=0)
        combine = torch.stack(
            [top_probs[:, :, i, None, None] * route for i, route in enumerate(routes)]
        ).sum(dim=0)
        return dispatch, combine

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, hidden = x.shape[1], x.shape[2]
        experts = self.w_in.shape[0]
        tokens = x.reshape(-1, self.group_size, hidden)  # [g, s, m]
        probs = torch.softmax(self.gate(tokens), dim=-1)  # [g, s, e]
        dispatch, combine = self._routing(probs)
        expert_in = torch.einsum("gsec,gsm->egcm", dispatch, tokens)
        h = expert_in.reshape(experts, -1, hidden)  # [e, g*c, m]
        h = nn.functional.gelu(torch.bmm(h, self.w_in) + self.b_in)
        h = torch.bmm(h, self.w_out) + self.b_out
        expert_out = h.reshape(experts, -1, self.capacity, hidden)  # [e, g, c, m]
        out = torch.einsum("gsec,egcm->gsm", combine, expert_out)
        return out.reshape(-1, seq, hidden)


class DecoderLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, ffn: int, moe: MoE | None) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden)
        self.attn = CausalSelfAttention(hidden, heads)
        self.ln_2 = nn.LayerNorm(hidden)
        self.mlp = MLP(hidden, ffn) if moe is None else None
        self.moe = moe

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        ffn = self.moe if self.moe is not None else self.mlp
        assert ffn is not None
        return x + ffn(self.ln_2(x))


class GShardMoELM(nn.Module):
    """GPT-like decoder; layers 1, 3, 5, ... use an MoE (submodule ``layers.<i>.moe``)."""

    def __init__(
        self,
        hidden: int,
        layers: int,
        heads: int,
        experts: int,
        seq: int,
        vocab: int,
        ffn: int,
        group_size: int,
        top_k: int,
        capacity_factor: float,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.pos_embed = nn.Embedding(seq, hidden)
        blocks = []
        for i in range(layers):
            moe = MoE(hidden, ffn, experts, group_size, top_k, capacity_factor) if i % 2 else None
            blocks.append(DecoderLayer(hidden, heads, ffn, moe))
        self.layers = nn.ModuleList(blocks)
        self.ln_f = nn.LayerNorm(hidden)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        seq = input_ids.shape[1]
        positions = torch.arange(seq, device=input_ids.device)
        x = self.embed(input_ids) + self.pos_embed(positions)
        mask = _causal_mask(seq, input_ids.device)
        for layer in self.layers:
            x = layer(x, mask)
        return self.ln_f(x) @ self.embed.weight.T  # LM head tied to the embedding


def export_moe(
    path: Path,
    hidden: int,
    layers: int,
    heads: int,
    experts: int,
    seq: int,
    vocab: int,
    ffn: int | None = None,
    group_size: int | None = None,
    top_k: int = 2,
    capacity_factor: float = 2.0,
) -> Entry:
    """GShard MoE LM, input ``input_ids[batch, seq]``.

    ``ffn`` defaults to 8 * hidden as in Alpa's MoE benchmark (the sizes in the paper,
    e.g. 1.3B, count it that way); ``group_size`` (tokens per routing group) defaults
    to ``seq``, one group per sequence, so any batch size works.
    """
    ffn = 8 * hidden if ffn is None else ffn
    group_size = seq if group_size is None else group_size
    with torch.device("meta"):
        model = GShardMoELM(
            hidden, layers, heads, experts, seq, vocab, ffn, group_size, top_k, capacity_factor
        )
    example = torch.zeros(EXAMPLE_BATCH, seq, dtype=torch.int64, device="meta")
    cfg = {
        "hidden": hidden,
        "layers": layers,
        "heads": heads,
        "experts": experts,
        "seq": seq,
        "vocab": vocab,
        "ffn": ffn,
        "group_size": group_size,
        "top_k": top_k,
        "capacity_factor": capacity_factor,
        "capacity": math.ceil(capacity_factor * group_size * top_k / experts),
        "moe_layers": list(range(1, layers, 2)),
    }
    onnx_model = export_dynamo(model, (example,), {}, {"input_ids": BATCH_AXIS}, path)
    return _entry(path, "moe", cfg, model, onnx_model, {"input_ids": ["batch", seq]})


# --------------------------------------------------------------------------------------
# Wide-ResNet (bottleneck blocks, Alpa's layout)
# --------------------------------------------------------------------------------------


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(c_out))


class Bottleneck(nn.Module):
    """1x1 (filters) -> 3x3 (filters * width, strided) -> 1x1 (filters * 4), as in Alpa."""

    def __init__(self, c_in: int, filters: int, width_factor: int, stride: int) -> None:
        super().__init__()
        wide = filters * width_factor
        self.conv1 = _conv_bn(c_in, filters, 1)
        self.conv2 = _conv_bn(filters, wide, 3, stride)
        self.conv3 = _conv_bn(wide, 4 * filters, 1)
        needs_proj = stride != 1 or c_in != 4 * filters
        self.proj = _conv_bn(c_in, 4 * filters, 1, stride) if needs_proj else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv1(x))
        y = torch.relu(self.conv2(y))
        y = self.conv3(y)
        residual = self.proj(x) if self.proj is not None else x
        return torch.relu(residual + y)


class WideResNet(nn.Module):
    def __init__(
        self, base_channels: int, width_factor: int, stages: list[int], num_classes: int
    ) -> None:
        super().__init__()
        self.stem = _conv_bn(3, base_channels, 7, 2)
        self.pool = nn.MaxPool2d(3, 2, padding=1)
        c_in = base_channels
        blocks = []
        for i, depth in enumerate(stages):
            filters = base_channels * 2**i
            for j in range(depth):
                blocks.append(Bottleneck(c_in, filters, width_factor, 2 if i > 0 and j == 0 else 1))
                c_in = 4 * filters
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.stem(pixel_values)))
        x = self.blocks(x)
        return self.head(x.mean(dim=(2, 3)))


def export_wide_resnet(
    path: Path,
    base_channels: int,
    width_factor: int,
    stages: list[int],
    image_size: int,
    num_classes: int,
) -> Entry:
    """Wide-ResNet (BatchNorm in eval mode), input ``pixel_values[batch, 3, size, size]``."""
    with torch.device("meta"):
        model = WideResNet(base_channels, width_factor, stages, num_classes)
    example = torch.zeros(EXAMPLE_BATCH, 3, image_size, image_size, device="meta")
    cfg = {
        "base_channels": base_channels,
        "width_factor": width_factor,
        "stages": stages,
        "layers": 3 * sum(stages) + 2,
        "image_size": image_size,
        "num_classes": num_classes,
    }
    onnx_model = export_dynamo(model, (example,), {}, {"pixel_values": BATCH_AXIS}, path)
    shape = ["batch", 3, image_size, image_size]
    entry = _entry(path, "wide_resnet", cfg, model, onnx_model, {"pixel_values": shape})
    entry["note"] = "onnx_parameters also counts BatchNorm running_mean/running_var buffers"
    return entry


# --------------------------------------------------------------------------------------
# MLP (unit tests)
# --------------------------------------------------------------------------------------


class TwoLayerMLP(nn.Module):
    def __init__(self, features: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.fc2 = nn.Linear(hidden, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def export_mlp(path: Path, features: int = 64, hidden: int = 256) -> Entry:
    """Linear -> ReLU -> Linear back to ``features``, input ``x[batch, features]``."""
    with torch.device("meta"):
        model = TwoLayerMLP(features, hidden)
    example = torch.zeros(EXAMPLE_BATCH, features, device="meta")
    cfg = {"features": features, "hidden": hidden}
    onnx_model = export_dynamo(model, (example,), {}, {"x": BATCH_AXIS}, path)
    return _entry(path, "mlp", cfg, model, onnx_model, {"x": ["batch", features]})


# --------------------------------------------------------------------------------------
# The shipped examples
# --------------------------------------------------------------------------------------

RESNET50_STAGES = [3, 4, 6, 3]

MODELS: dict[str, Callable[[Path], Entry]] = {
    # GPT-3 1.3B as in the Alpa paper.
    "gpt3-1.3b": lambda p: export_gpt(p, hidden=2048, layers=24, heads=32, seq=1024, vocab=51200),
    "gpt-tiny": lambda p: export_gpt(p, hidden=64, layers=2, heads=4, seq=32, vocab=256),
    # bert-base-uncased shape.
    "bert-base": lambda p: export_bert(p, seq=128),
    "gshard-moe-1.3b": lambda p: export_moe(
        p, hidden=768, layers=16, heads=16, experts=16, seq=1024, vocab=32000
    ),
    "gshard-moe-tiny": lambda p: export_moe(
        p, hidden=64, layers=4, heads=4, experts=4, seq=32, vocab=256
    ),
    "wide-resnet-1b": lambda p: export_wide_resnet(
        p,
        base_channels=320,
        width_factor=2,
        stages=RESNET50_STAGES,
        image_size=224,
        num_classes=1000,
    ),
    "wide-resnet-tiny": lambda p: export_wide_resnet(
        p, base_channels=16, width_factor=2, stages=[1, 1, 1, 1], image_size=32, num_classes=10
    ),
    "mlp-tiny": lambda p: export_mlp(p, features=64, hidden=256),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        nargs="+",
        choices=sorted(MODELS),
        metavar="NAME",
        help=f"models to export (default: all of {', '.join(MODELS)})",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    args = parser.parse_args(argv)

    index_path = args.out / "models.json"
    index: dict[str, Entry] = json.loads(index_path.read_text()) if index_path.exists() else {}
    for name in args.only or MODELS:
        path = args.out / f"{name}.onnx"
        index[name] = MODELS[name](path)
        size_kib = path.stat().st_size / 1024
        print(f"{path}: {size_kib:.0f} KiB, {index[name]['parameters']:,} parameters")
    ordered = {name: index[name] for name in MODELS if name in index}
    index_path.write_text(json.dumps(ordered, indent=2) + "\n")


if __name__ == "__main__":
    main()
