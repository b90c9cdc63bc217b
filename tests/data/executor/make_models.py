"""Regenerate the executor's test models: small ONNX files with real random weights.

Needs the ``export`` extra (torch, transformers, onnxscript)::

    pip install -e '.[export]'
    python tests/data/executor/make_models.py

Each model is exported with ``torch.onnx.export(dynamo=True)`` and a dynamic batch dimension
named ``batch``, cleaned up with the onnxscript optimizer, and saved with its weights embedded
(seeded, so the files are reproducible on one torch version). All three stay well under 1 MB:

* ``mlp.onnx``: ``x[batch, 32]`` -> Linear(32, 64) -> ReLU -> Linear(64, 32);
* ``gpt2.onnx``: a 2-layer GPT-2 (transformers), hidden 32, 4 heads, seq 8, vocab 64, the LM
  head tied to the token embedding, ``input_ids[batch, 8]`` -> logits ``[batch, 8, 64]``;
* ``convnet.onnx``: ``x[batch, 3, 8, 8]`` -> Conv(3, 8, 3) -> BatchNorm -> ReLU -> MaxPool(2)
  -> Flatten -> Linear(72, 10) (batch norm exported in inference form, random statistics).
"""

from __future__ import annotations

from pathlib import Path

import onnx
import onnxscript.optimizer
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

HERE = Path(__file__).resolve().parent
SEED = 0
EXAMPLE_BATCH = 2
# Fold only shape-sized constants (as examples/export_models.py does).
FOLD_OUTPUT_SIZE_LIMIT = 16


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(32, 64)
        self.fc2 = nn.Linear(64, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(torch.relu(self.bn(self.conv(x))))
        return self.fc(h.flatten(1))


class Gpt2Logits(GPT2LMHeadModel):
    """GPT-2 returning only the logits, with an explicit additive causal mask (as
    examples/export_models.py does, so the graph has no packed-sequence detection ops)."""

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        seq = input_ids.shape[1]
        pos = torch.arange(seq, device=input_ids.device)
        mask = torch.where(pos[None, :] > pos[:, None], torch.finfo(torch.float32).min, 0.0)
        out = super().forward(input_ids=input_ids, attention_mask=mask[None, None], use_cache=False)
        return out.logits


def export(module: nn.Module, example: torch.Tensor, input_name: str, path: Path) -> None:
    """Export with weights as graph inputs (so the optimizer folds shape arithmetic but never a
    weight: a tied LM head stays tied), then turn those inputs into embedded initializers."""
    module.eval()
    program = torch.onnx.export(
        module,
        (example,),
        dynamo=True,
        optimize=False,
        verbose=False,
        input_names=[input_name],
        dynamic_shapes={input_name: {0: torch.export.Dim("batch")}},
    )
    assert program is not None
    program.save(str(path), include_initializers=False, keep_initializers_as_inputs=True)
    model = onnx.load(str(path))
    # Weights are inputs while the optimizer runs, so it folds shape arithmetic but never a
    # weight's value (it would drop an all-zero bias or untie a tied LM head).
    model = onnxscript.optimizer.optimize(model, output_size_limit=FOLD_OUTPUT_SIZE_LIMIT)
    state = module.state_dict()
    data = [value for value in model.graph.input if value.name == input_name]
    used = {name for node in model.graph.node for name in node.input}
    for value in model.graph.input:
        if value.name != input_name and value.name in used:
            array = state[value.name].detach().numpy()
            model.graph.initializer.append(onnx.numpy_helper.from_array(array, value.name))
    del model.graph.input[:]
    model.graph.input.extend(data)
    model.graph.name = path.stem
    for node in model.graph.node:
        node.doc_string = ""
        kept = [p for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
    onnx.checker.check_model(model, full_check=True)
    path.write_bytes(model.SerializeToString())
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def randomise(module: nn.Module) -> nn.Module:
    """Every weight random (initialisers leave biases at zero), norm scales around one."""
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            parameter.normal_(0.0, 0.2 if parameter.dim() < 2 else 0.1)
            if "ln" in name.split(".")[-2] and name.endswith("weight"):
                parameter.add_(1.0)
    return module


def main() -> None:
    torch.manual_seed(SEED)
    export(randomise(Mlp()), torch.randn(EXAMPLE_BATCH, 32), "x", HERE / "mlp.onnx")

    torch.manual_seed(SEED)
    conv = randomise(ConvNet())
    with torch.no_grad():  # random statistics, so batch norm is not the identity
        conv.bn.running_mean.uniform_(-0.5, 0.5)
        conv.bn.running_var.uniform_(0.5, 1.5)
        conv.bn.weight.uniform_(0.5, 1.5)
        conv.bn.bias.uniform_(-0.5, 0.5)
    export(conv, torch.randn(EXAMPLE_BATCH, 3, 8, 8), "x", HERE / "convnet.onnx")

    torch.manual_seed(SEED)
    config = GPT2Config(
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=8,
        vocab_size=64,
        bos_token_id=0,
        eos_token_id=0,
        use_cache=False,
        attn_implementation="eager",
    )
    gpt = randomise(Gpt2Logits(config))
    export(gpt, torch.zeros(EXAMPLE_BATCH, 8, dtype=torch.int64), "input_ids", HERE / "gpt2.onnx")


if __name__ == "__main__":
    main()
