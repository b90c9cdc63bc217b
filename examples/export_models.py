"""Export the example models in ``examples/models/`` as graph-only ONNX files.

Needs the ``export`` extra (torch, transformers, onnxscript)::

    pip install -e '.[export]'
    python examples/export_models.py [--only NAME ...] [--out DIR]

Every model is built on the ``meta`` device, so no weights are ever materialised
or downloaded. It is exported with ``torch.onnx.export(dynamo=True)`` with a dynamic
batch dimension named ``batch`` (everything else static), cleaned up with the
onnxscript optimizer, and saved so that:

* the graph inputs are data only (``input_ids`` / ``pixel_values`` / ``x``);
* every weight is an initializer whose data lives in ``<file>.data``, a file that is
  never written: the ONNX files are graphs only;
* small constants are ``Constant`` nodes, so initializers are exactly the weights;
* node ``metadata_props`` keep ``pkg.torch.onnx.name_scopes`` (the module path, then
  the FX node name, e.g. ``['', 'layers.3', 'layers.3.moe', 'einsum']``) and
  ``pkg.torch.onnx.class_hierarchy``; stack traces and FX dumps are dropped.

``models.json`` in the output folder describes every model: file, family, config,
the exact torch parameter count (tied weights counted once), the number of scalars
held in ONNX initializers (``onnx_parameters``; it also counts BatchNorm running
statistics, which are buffers in torch) and the data inputs with ``"batch"`` for
the dynamic dimension.
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
import onnx.numpy_helper
import onnxscript.optimizer
import torch
from torch import nn
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

DEFAULT_OUT = Path(__file__).resolve().parent / "models"

# Node metadata worth keeping: the module path and module classes of each node.
KEEP_METADATA = ("pkg.torch.onnx.name_scopes", "pkg.torch.onnx.class_hierarchy")

# Fold only shape-sized constants; anything as large as a sequence stays an op
# (e.g. Range), so tiny and full-size models get the same graph structure.
FOLD_OUTPUT_SIZE_LIMIT = 16

EXAMPLE_BATCH = 2

Entry = dict[str, Any]


# --------------------------------------------------------------------------------------
# Export pipeline
# --------------------------------------------------------------------------------------


def _causal_mask(seq: int, device: torch.device) -> torch.Tensor:
    """Additive [1, 1, seq, seq] causal mask, built from Range ops in the graph."""
    pos = torch.arange(seq, device=device)
    future = pos[None, :] > pos[:, None]
    mask = torch.where(future, torch.finfo(torch.float32).min, 0.0)
    return mask[None, None]


def _to_onnx(
    module: nn.Module, example: torch.Tensor, input_name: str, path: Path
) -> onnx.ModelProto:
    """Export ``module(example)`` with a dynamic batch and return the raw graph.

    Weights (and buffers) come back as graph inputs without data.
    """
    module.eval()
    program = torch.onnx.export(
        module,
        (example,),
        dynamo=True,
        optimize=False,
        verbose=False,
        dynamic_shapes={input_name: {0: torch.export.Dim("batch")}},
    )
    assert program is not None
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / path.name
        program.save(str(raw), include_initializers=False, keep_initializers_as_inputs=True)
        return onnx.load(str(raw), load_external_data=False)


def _constants_to_nodes(graph: onnx.GraphProto) -> None:
    """Turn the initializers created by constant folding into Constant nodes."""
    nodes = [
        onnx.helper.make_node("Constant", [], [init.name], name=f"const_{init.name}", value=init)
        for init in graph.initializer
    ]
    nodes.extend(graph.node)
    del graph.initializer[:]
    del graph.node[:]
    graph.node.extend(nodes)


def _weights_to_external(graph: onnx.GraphProto, data_inputs: set[str], location: str) -> None:
    """Make every non-data graph input an initializer stored in ``location``.

    The data file is never written; offsets are laid out as if it were.
    Unused inputs are dropped.
    """
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
        tensor.data_location = onnx.TensorProto.EXTERNAL
        length = math.prod(dims) * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        for key, val in (("location", location), ("offset", offset), ("length", length)):
            tensor.external_data.add(key=key, value=str(val))
        offset += length
        graph.initializer.append(tensor)
    del graph.input[:]
    graph.input.extend(inputs)


def _drop_zero_conv_bias(graph: onnx.GraphProto) -> None:
    """Remove the all-zero bias torchlib gives every bias-free Conv (Expand of 0.0)."""
    producer = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        if node.op_type != "Conv" or len(node.input) < 3:
            continue
        expand = producer.get(node.input[2])
        zero = producer.get(expand.input[0]) if expand and expand.op_type == "Expand" else None
        is_tensor_constant = (
            zero and zero.op_type == "Constant" and zero.attribute[0].name == "value"
        )
        if is_tensor_constant and not onnx.numpy_helper.to_array(zero.attribute[0].t).any():
            del node.input[2]
    _remove_dead_nodes(graph)


def _remove_dead_nodes(graph: onnx.GraphProto) -> None:
    needed = {out.name for out in graph.output}
    live = []
    for node in reversed(graph.node):
        if needed.intersection(node.output):
            live.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(live))
    produced = {out for node in live for out in node.output}
    value_info = [info for info in graph.value_info if info.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(value_info)


def _strip_metadata(graph: onnx.GraphProto) -> None:
    for node in graph.node:
        node.doc_string = ""
        kept = [p for p in node.metadata_props if p.key in KEEP_METADATA]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)


def onnx_parameter_count(model: onnx.ModelProto) -> int:
    """Number of scalars held in the model's initializers."""
    return sum(math.prod(init.dims) for init in model.graph.initializer)


def export_module(
    module: nn.Module,
    example: torch.Tensor,
    input_name: str,
    path: Path,
    family: str,
    config: dict[str, Any],
) -> Entry:
    """Export ``module`` to ``path`` (graph only) and return its ``models.json`` entry."""
    model = _to_onnx(module, example, input_name, path)
    model = onnxscript.optimizer.optimize(model, output_size_limit=FOLD_OUTPUT_SIZE_LIMIT)
    graph = model.graph
    graph.name = path.stem
    _constants_to_nodes(graph)
    _drop_zero_conv_bias(graph)
    _strip_metadata(graph)
    # Check while the weights are still inputs: the checker insists on reading
    # external data files, which are never written.
    onnx.checker.check_model(model, full_check=True)
    _weights_to_external(graph, {input_name}, f"{path.name}.data")
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())

    return {
        "file": path.name,
        "family": family,
        "config": config,
        "parameters": sum(p.numel() for p in module.parameters()),
        "onnx_parameters": onnx_parameter_count(model),
        "inputs": {input_name: ["batch", *example.shape[1:]]},
    }


# --------------------------------------------------------------------------------------
# GPT (transformers GPT-2 architecture, as used for GPT-3 in the Alpa paper)
# --------------------------------------------------------------------------------------


class GPT2Logits(GPT2LMHeadModel):
    """GPT-2 LM returning only the logits, with an explicit causal mask.

    Passing the 4-D mask skips transformers' mask builder, whose packed-sequence
    detection adds CumSum/GatherND ops on position ids to the graph. The tied token
    embedding / LM head is one initializer, ``lm_head.weight``.
    """

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = _causal_mask(input_ids.shape[1], input_ids.device)
        out = super().forward(input_ids=input_ids, attention_mask=mask, use_cache=False)
        return out.logits


def export_gpt(path: Path, hidden: int, layers: int, heads: int, seq: int, vocab: int) -> Entry:
    """GPT decoder (LM head tied to the token embedding), input ``input_ids[batch, seq]``."""
    config = GPT2Config(
        n_embd=hidden,
        n_layer=layers,
        n_head=heads,
        n_positions=seq,
        vocab_size=vocab,
        bos_token_id=0,
        eos_token_id=0,
        use_cache=False,
        attn_implementation="eager",
    )
    with torch.device("meta"):
        model = GPT2Logits(config)
    example = torch.zeros(EXAMPLE_BATCH, seq, dtype=torch.int64, device="meta")
    cfg = {"hidden": hidden, "layers": layers, "heads": heads, "seq": seq, "vocab": vocab}
    return export_module(model, example, "input_ids", path, "gpt", cfg)


# --------------------------------------------------------------------------------------
# BERT (masked-LM logits)
# --------------------------------------------------------------------------------------


class BertMLMLogits(BertForMaskedLM):
    """BERT with its masked-LM head, returning only the logits.

    Position and token-type ids are built in the forward pass instead of being read
    from buffers, which have no data on the meta device. The (all-zero, no padding)
    additive attention mask is passed in 4-D so that transformers does not expand
    one to [batch, 1, seq, seq] from the input's shape.
    """

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        seq, device = input_ids.shape[1], input_ids.device
        positions = torch.arange(seq, device=device)[None]
        token_types = torch.zeros(1, seq, dtype=torch.int64, device=device)
        mask = torch.zeros(1, 1, 1, seq, device=device)
        out = super().forward(
            input_ids=input_ids,
            attention_mask=mask,
            token_type_ids=token_types,
            position_ids=positions,
        )
        return out.logits


def export_bert(
    path: Path,
    hidden: int = 768,
    layers: int = 12,
    heads: int = 12,
    seq: int = 128,
    vocab: int = 30522,
) -> Entry:
    """BERT encoder + MLM head (decoder tied to the word embedding), ``input_ids[batch, seq]``."""
    config = BertConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        vocab_size=vocab,
        attn_implementation="eager",
    )
    with torch.device("meta"):
        model = BertMLMLogits(config)
    example = torch.zeros(EXAMPLE_BATCH, seq, dtype=torch.int64, device="meta")
    cfg = {"hidden": hidden, "layers": layers, "heads": heads, "seq": seq, "vocab": vocab}
    return export_module(model, example, "input_ids", path, "bert", cfg)


# --------------------------------------------------------------------------------------
# GShard MoE (GPT-like decoder, every second MLP is a top-2 mixture of experts)
# --------------------------------------------------------------------------------------


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
    return export_module(model, example, "input_ids", path, "moe", cfg)


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
    entry = export_module(model, example, "pixel_values", path, "wide_resnet", cfg)
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
    return export_module(model, example, "x", path, "mlp", cfg)


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
