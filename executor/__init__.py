"""The executor: applies an alpa-plan plan with JAX/XLA (docs/DESIGN.md section 9).

Kept apart from the planner: it imports `plans/` and third-party libraries only, never
`planner/`. Its dependencies (jax, optax, onnxruntime) are the `executor` extra. Importing this
package imports nothing heavy; `executor.run` is the entry point the CLI loads lazily.

One concept per module:

- `onnx_model`: the ONNX file as plain values (nodes, weights, inputs); the only `onnx` import;
- `ops`: the op table, ONNX op type -> JAX (or NumPy, for static shape arithmetic);
- `graph_fn`: evaluating ONNX nodes, and the analysis pass that finds static values and shapes;
- `stages`: the plan bound to the model: which nodes, parameters, inputs, outputs per stage;
- `mesh`: spec strings -> `PartitionSpec`, plan devices -> `jax.sharding.Mesh`;
- `pipeline`: the microbatch schedule (GPipe, 1F1B) as an ordered task list;
- `train`: losses, per-stage VJPs, gradient accumulation, the optax update;
- `collectives`: collectives in compiled HLO, and the kinds a plan predicts;
- `runtime`: the stages jitted on their meshes, transfers between them, inference and training;
- `distributed`: `jax.distributed` start-up for multi-host runs;
- `reference`: onnxruntime on the same weights, for checks;
- `environment`: host-platform device count, set before jax is first imported;
- `run`: the entry point behind `alpa-plan run`.
"""
