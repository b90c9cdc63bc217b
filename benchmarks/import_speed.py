"""Import time of a 32-layer Llama-3-8B-shaped graph-only export (needs the `export` extra).

    python benchmarks/import_speed.py [--layers 32] [--seq 2048] [--batch 8]

Builds transformers' stock LlamaForCausalLM with Llama-3-8B's configuration on the meta
device, exports it as examples/export_models.py does (dynamo, dynamic batch and sequence,
graph-only), then times `load_onnx` at --batch-size and --dim seq. Figures: benchmarks/SPEED.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from examples.export_models import build, export_dynamo  # noqa: E402
from planner.onnx_import import load_onnx  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    config = transformers.LlamaConfig(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=args.layers,
        num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
        max_position_embeddings=8192, rope_theta=500000.0, use_cache=False,
    )  # fmt: skip
    model = build(transformers.LlamaForCausalLM, config)
    example = torch.zeros(2, 16, dtype=torch.int64, device="meta")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "llama-3-8b.onnx"
        start = time.perf_counter()
        export_dynamo(model, (example,), {}, {"input_ids": {0: "batch", 1: "seq"}}, path)
        exported = time.perf_counter() - start
        start = time.perf_counter()
        graph = load_onnx(path, batch_size=args.batch, dims={"seq": args.seq})
        imported = time.perf_counter() - start
        size_kib = path.stat().st_size / 1024
    print(
        f"{args.layers} layers, {len(graph.ops)} ops, {graph.parameter_count:,} parameters, "
        f"{size_kib:.0f} KiB: export {exported:.1f} s, import {imported:.2f} s "
        f"(batch {args.batch}, seq {args.seq})"
    )


if __name__ == "__main__":
    main()
