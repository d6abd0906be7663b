"""Writes device_probe.onnx: the tiny model a process commits on the
requested execution provider at start (`hourglass_worker::device`), so a
provider that registers but cannot run (no GPU, no driver, a node it cannot
place) shows before any work is leased. y = x · [¼ ¼ ¼ ¼]ᵀ + 1, x: [N, 4].
MatMul and Add run on every provider. Run with the project venv:
    .venv/bin/python runtime/assets/make_device_probe.py
"""

import onnx
from onnx import TensorProto, helper

x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])
w = helper.make_tensor("w", TensorProto.FLOAT, [4, 1], [0.25, 0.25, 0.25, 0.25])
b = helper.make_tensor("b", TensorProto.FLOAT, [1], [1.0])
graph = helper.make_graph(
    [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])],
    "hourglass_device_probe",
    [x],
    [y],
    [w, b],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="hourglass")
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, "runtime/assets/device_probe.onnx")
