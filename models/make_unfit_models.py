"""Tiny ONNX models that load but cannot score a batch job, for the tests
that show `submit` refusing them before anything is enqueued (committed in
models/unfit/; `make models` regenerates them). Each takes the 39 CTR
features as `input [N, 39]` float32, as the reference models do.

- fixed_batch.onnx: the batch dimension is fixed at 1 (`input [1, 39]`).
- zipmap.onnx: a classifier exported with ZipMap on: its output is a
  sequence of maps, not a tensor.
- string_output.onnx: a string tensor output, which the output writer
  does not take.
"""
import os

import onnx
from onnx import TensorProto, helper

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "unfit")
FEATURES = [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]


def save(name, graph, domains=(("", 15),)):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in domains])
    model.ir_version = 8
    model.producer_name = "hourglass/make_unfit_models.py"
    entry = model.metadata_props.add()
    entry.key, entry.value = "hourglass.feature_names", ",".join(FEATURES)
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(HERE, f"{name}.onnx"))


def main():
    os.makedirs(HERE, exist_ok=True)
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    # fixed_batch: score = sum of the features, batch of exactly one row.
    save(
        "fixed_batch",
        helper.make_graph(
            [helper.make_node("ReduceSum", ["input", "axes"], ["score"], keepdims=0)],
            "fixed_batch",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 39])],
            [helper.make_tensor_value_info("score", TensorProto.FLOAT, [1])],
            initializer=[axes],
        ),
    )
    # zipmap: two "probabilities" per row, zipped into {0: p0, 1: p1} maps.
    w = helper.make_tensor("w", TensorProto.FLOAT, [39, 2], [0.01] * 78)
    save(
        "zipmap",
        helper.make_graph(
            [
                helper.make_node("MatMul", ["input", "w"], ["logits"]),
                helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
                helper.make_node("ZipMap", ["probs"], ["probabilities"], domain="ai.onnx.ml", classlabels_int64s=[0, 1]),
            ],
            "zipmap",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 39])],
            [
                helper.make_value_info(
                    "probabilities",
                    helper.make_sequence_type_proto(helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, []))),
                )
            ],
            initializer=[w],
        ),
        domains=(("", 15), ("ai.onnx.ml", 1)),
    )
    # string_output: a label per row as a string.
    save(
        "string_output",
        helper.make_graph(
            [
                helper.make_node("ReduceSum", ["input", "axes"], ["score"], keepdims=0),
                helper.make_node("Cast", ["score"], ["label"], to=TensorProto.STRING),
            ],
            "string_output",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 39])],
            [helper.make_tensor_value_info("label", TensorProto.STRING, ["N"])],
            initializer=[axes],
        ),
    )


if __name__ == "__main__":
    main()
