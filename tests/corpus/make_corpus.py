"""Export the import corpus: stock transformers models, graph-only, with both torch exporters.

Needs the ``export`` extra (torch, transformers, onnxscript)::

    pip install -e '.[export]'
    python tests/corpus/make_corpus.py [--only NAME ...]

Each family is the stock transformers class, built from a configuration with the widths of a
real checkpoint (named beside it) but only a few layers, and called as its documentation calls
it. Nothing is downloaded: weights are allocated uninitialised (or on the ``meta`` device where
they would not fit in memory) and never saved. Exporters:

- ``dynamo``: ``torch.onnx.export(model, args, dynamo=True, dynamic_shapes=...)``, the
  default opset, dynamic batch and sequence;
- ``torchscript``: ``torch.onnx.export(model, args, path, dynamo=False, opset_version=17,
  input_names=..., dynamic_axes=...)``, weights exported as graph inputs
  (``export_params=False``), made initializers without data.

The files go to ``tests/corpus/models/`` (each under 3 MB, committed, so CI needs no torch) and
``tests/corpus/corpus.json`` lists them with the dimensions to bind when planning, and every
family and exporter that could not export, with the exporter's error.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from examples.export_models import build, export_dynamo, export_torchscript  # noqa: E402

OUT = HERE / "models"
MANIFEST = HERE / "corpus.json"
MAX_FILE_BYTES = 3 * 1024 * 1024

BATCH, SEQ = 2, 16  # example inputs for tracing (neither may be 1)


@dataclass(frozen=True)
class Family:
    """One stock model: its class and configuration, and how its users call it."""

    name: str
    checkpoint: str  # whose widths the configuration copies
    model_class: Any
    config: Callable[[], Any]
    # name -> (example tensor maker, dynamic axes): the inputs of the documented call
    inputs: dict[str, tuple[Callable[[], torch.Tensor], dict[int, str]]]
    # inputs of the TorchScript call when they differ (a decoder needs its attention mask)
    torchscript_inputs: tuple[str, ...] | None = None
    exporters: tuple[str, ...] = ("dynamo", "torchscript")
    on_meta: bool = False  # too large to allocate: dynamo only, from the meta device
    dims: dict[str, int] = field(default_factory=dict)  # to bind when planning


def _ids(seq: int = SEQ) -> Callable[[], torch.Tensor]:
    return lambda: torch.zeros(BATCH, seq, dtype=torch.int64)


def _ones(seq: int = SEQ) -> Callable[[], torch.Tensor]:
    return lambda: torch.ones(BATCH, seq, dtype=torch.int64)


def _pixels(size: int) -> Callable[[], torch.Tensor]:
    return lambda: torch.zeros(BATCH, 3, size, size)


SEQ_AXES = {0: "batch", 1: "seq"}
DECODER_AXES = {0: "batch", 1: "decoder_seq"}
BATCH_AXIS = {0: "batch"}
CAUSAL_LM = transformers.AutoModelForCausalLM
TEXT = {"input_ids": (_ids(), SEQ_AXES)}
TEXT_WITH_MASK = {"input_ids": (_ids(), SEQ_AXES), "attention_mask": (_ones(), SEQ_AXES)}

FAMILIES: tuple[Family, ...] = (
    Family(
        "gpt2",
        "openai-community/gpt2",
        transformers.GPT2LMHeadModel,
        lambda: transformers.GPT2Config(n_embd=768, n_head=12, n_layer=2, use_cache=False),
        TEXT_WITH_MASK,
        torchscript_inputs=("input_ids", "attention_mask"),
        dims={"seq": 128},
    ),
    Family(
        "llama",
        "meta-llama/Llama-3.2-1B (GQA 32/8 heads, RoPE with llama3 scaling, RMSNorm, SwiGLU)",
        transformers.LlamaForCausalLM,
        lambda: transformers.LlamaConfig(
            hidden_size=2048,
            intermediate_size=8192,
            num_hidden_layers=2,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=64,
            vocab_size=128256,
            max_position_embeddings=131072,
            rope_theta=500000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 32.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
            },
            tie_word_embeddings=True,
            use_cache=False,
        ),
        TEXT_WITH_MASK,
        torchscript_inputs=("input_ids", "attention_mask"),
        dims={"seq": 128},
    ),
    Family(
        "opt",
        "facebook/opt-1.3b (learned positions offset by 2, pre-LayerNorm, ReLU MLP)",
        transformers.OPTForCausalLM,
        lambda: transformers.OPTConfig(
            hidden_size=2048,
            ffn_dim=8192,
            num_hidden_layers=2,
            num_attention_heads=32,
            vocab_size=50272,
            max_position_embeddings=2048,
            word_embed_proj_dim=2048,
            use_cache=False,
        ),
        TEXT_WITH_MASK,
        torchscript_inputs=("input_ids", "attention_mask"),
        dims={"seq": 128},
    ),
    Family(
        "gemma",
        "google/gemma-2b (multi-query attention, head_dim 256, GeGLU)",
        transformers.GemmaForCausalLM,
        lambda: transformers.GemmaConfig(
            hidden_size=2048,
            intermediate_size=16384,
            num_hidden_layers=2,
            num_attention_heads=8,
            num_key_value_heads=1,
            head_dim=256,
            vocab_size=256000,
            use_cache=False,
        ),
        TEXT_WITH_MASK,
        torchscript_inputs=("input_ids", "attention_mask"),
        dims={"seq": 128},
    ),
    Family(
        "mixtral",
        "mistralai/Mixtral-8x7B-v0.1 (8 experts, top-2, batched_mm experts)",
        transformers.MixtralForCausalLM,
        lambda: transformers.MixtralConfig(
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=2,
            num_attention_heads=32,
            num_key_value_heads=8,
            num_local_experts=8,
            num_experts_per_tok=2,
            vocab_size=32000,
            use_cache=False,
            experts_implementation="batched_mm",
        ),
        TEXT_WITH_MASK,
        torchscript_inputs=("input_ids", "attention_mask"),
        on_meta=True,
        dims={"seq": 64},
    ),
    Family(
        "bert",
        "google-bert/bert-base-uncased",
        transformers.BertForMaskedLM,
        lambda: transformers.BertConfig(num_hidden_layers=2),
        TEXT,
        dims={"seq": 128},
    ),
    Family(
        "distilbert",
        "distilbert/distilbert-base-uncased",
        transformers.DistilBertForMaskedLM,
        lambda: transformers.DistilBertConfig(n_layers=2),
        TEXT,
        dims={"seq": 128},
    ),
    Family(
        "vit",
        "google/vit-base-patch16-224",
        transformers.ViTForImageClassification,
        lambda: transformers.ViTConfig(num_hidden_layers=2, num_labels=1000),
        {"pixel_values": (_pixels(224), BATCH_AXIS)},
    ),
    Family(
        "convnext",
        "facebook/convnext-tiny-224 (one block per stage)",
        transformers.ConvNextForImageClassification,
        lambda: transformers.ConvNextConfig(depths=[1, 1, 1, 1], num_labels=1000),
        {"pixel_values": (_pixels(224), BATCH_AXIS)},
    ),
    Family(
        "swin",
        "microsoft/swin-tiny-patch4-window7-224 (one block per stage)",
        transformers.SwinForImageClassification,
        lambda: transformers.SwinConfig(depths=[1, 1, 1, 1], num_labels=1000),
        {"pixel_values": (_pixels(224), BATCH_AXIS)},
    ),
    Family(
        "t5",
        "google-t5/t5-small",
        transformers.T5ForConditionalGeneration,
        lambda: transformers.T5Config(num_layers=2, num_decoder_layers=2, use_cache=False),
        {"input_ids": (_ids(), SEQ_AXES), "decoder_input_ids": (_ids(8), DECODER_AXES)},
        dims={"seq": 128, "decoder_seq": 32},
    ),
    Family(
        "whisper",
        "openai/whisper-tiny (encoder over 30 s of audio, and decoder)",
        transformers.WhisperForConditionalGeneration,
        lambda: transformers.WhisperConfig(
            d_model=384,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=6,
            decoder_attention_heads=6,
            encoder_ffn_dim=1536,
            decoder_ffn_dim=1536,
            use_cache=False,
        ),
        {
            "input_features": (lambda: torch.zeros(BATCH, 80, 3000), BATCH_AXIS),
            "decoder_input_ids": (_ids(8), DECODER_AXES),
            "decoder_attention_mask": (_ones(8), DECODER_AXES),
        },
        torchscript_inputs=("input_features", "decoder_input_ids", "decoder_attention_mask"),
        dims={"decoder_seq": 32},
    ),
)


def export_family(family: Family, exporter: str) -> tuple[dict[str, Any] | None, str | None]:
    """Export one family with one exporter: (manifest entry, None) or (None, the error)."""
    path = OUT / f"{family.name}-{exporter}.onnx"
    on_meta = family.on_meta and exporter == "dynamo"
    if family.on_meta and exporter == "torchscript":
        return None, (
            "not tried: the TorchScript exporter runs the model on real tensors (meta tensors "
            "fail in .item()), and this family's weights do not fit in memory"
        )
    model = build(family.model_class, family.config(), on_meta=on_meta)
    device = "meta" if on_meta else "cpu"
    names = (
        family.torchscript_inputs
        if exporter == "torchscript" and family.torchscript_inputs
        else tuple(name for name in family.inputs if not name.endswith("attention_mask"))
    )
    tensors = {name: family.inputs[name][0]().to(device) for name in names}
    axes = {name: family.inputs[name][1] for name in names}
    try:
        if exporter == "dynamo":
            first = next(iter(tensors))
            args = (tensors[first],) if len(tensors) == 1 else ()
            kwargs = {} if len(tensors) == 1 else tensors
            onnx_model = export_dynamo(model, args, kwargs, axes, path)
        else:
            args = (tensors[names[0]], {name: tensors[name] for name in names[1:]})
            onnx_model = export_torchscript(model, args, list(names), axes, path)
    except Exception as error:  # the exporter's own failure: recorded, not hidden
        path.unlink(missing_ok=True)
        return None, _error_line(error)
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        path.unlink()
        return None, f"graph-only file of {size} bytes, over the corpus limit {MAX_FILE_BYTES}"
    dims = {name: value for name, value in family.dims.items() if _uses(axes, name)}
    opset = next(o.version for o in onnx_model.opset_import if o.domain in ("", "ai.onnx"))
    entry = {
        "file": path.name,
        "family": family.name,
        "exporter": exporter,
        "opset": opset,
        "checkpoint_widths": family.checkpoint,
        "inputs": {name: axes[name] for name in names},
        "dims": dims,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return entry, None


def _uses(axes: dict[str, dict[int, str]], dim: str) -> bool:
    return any(dim in names.values() for names in axes.values())


def _error_line(error: BaseException) -> str:
    """The first line of the innermost cause: the exporter's wrappers say only which step
    failed."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=[f.name for f in FAMILIES], metavar="NAME")
    args = parser.parse_args(argv)
    manifest: dict[str, Any] = (
        json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {"models": {}, "failures": {}}
    )
    for family in FAMILIES:
        if args.only and family.name not in args.only:
            continue
        for exporter in family.exporters:
            key = f"{family.name}-{exporter}"
            try:
                entry, failure = export_family(family, exporter)
            except Exception:  # building the model itself failed: a bug here, show it all
                traceback.print_exc()
                raise
            manifest["models"].pop(key, None)
            manifest["failures"].pop(key, None)
            if entry is not None:
                manifest["models"][key] = entry
                print(f"{key}: {(OUT / entry['file']).stat().st_size // 1024} KiB", flush=True)
            else:
                manifest["failures"][key] = failure
                print(f"{key}: FAILED {failure}", flush=True)
    manifest["models"] = dict(sorted(manifest["models"].items()))
    manifest["failures"] = dict(sorted(manifest["failures"].items()))
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
