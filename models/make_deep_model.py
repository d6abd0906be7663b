#!/usr/bin/env python3
"""Generate models/ctr_deep.onnx: a deep, narrow CTR network (a DCN-style
tower of 128 residual blocks of width 32 over the 39 Criteo-shaped
features), random weights. Scoring one row costs ONNX Runtime about as much
as scoring dozens (its ~500 small nodes each pay a fixed dispatch cost), as
in the deep towers of production CTR models: the model `hourglass bench
serve` uses to show what dynamic batching buys when a call's fixed cost
dominates. The reference models (make_models.py) score a row in ~5 µs, too
little for batching to matter next to a request's protocol cost.

Run from the repository root with the venv that has models/requirements.txt:

    .venv/bin/python models/make_deep_model.py

The output is committed; tests never regenerate it.
"""

import hashlib
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20261124
N_FEATURES = 39
WIDTH = 32
BLOCKS = 128
FEATURES = [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]


def model():
    rng = np.random.default_rng(SEED)
    inits, nodes = [], []

    def weight(name, rows, cols, scale):
        inits.append(numpy_helper.from_array(rng.normal(0, scale, (rows, cols)).astype(np.float32), name))

    def bias(name, n):
        inits.append(numpy_helper.from_array(np.zeros(n, dtype=np.float32), name))

    inits.append(numpy_helper.from_array(np.array([1.0], dtype=np.float32), "one"))
    nodes += [
        helper.make_node("Add", ["input", "one"], ["xp1"]),
        helper.make_node("Log", ["xp1"], ["logx"]),
    ]
    weight("w_in", N_FEATURES, WIDTH, np.sqrt(2.0 / N_FEATURES))
    bias("b_in", WIDTH)
    nodes += [
        helper.make_node("MatMul", ["logx", "w_in"], ["mm_in"]),
        helper.make_node("Add", ["mm_in", "b_in"], ["h0"]),
    ]
    for i in range(BLOCKS):
        weight(f"w{i}", WIDTH, WIDTH, 0.1 / np.sqrt(WIDTH))
        bias(f"b{i}", WIDTH)
        nodes += [
            helper.make_node("MatMul", [f"h{i}", f"w{i}"], [f"mm{i}"]),
            helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"z{i}"]),
            helper.make_node("Relu", [f"z{i}"], [f"r{i}"]),
            helper.make_node("Add", [f"h{i}", f"r{i}"], [f"h{i + 1}"]),
        ]
    weight("w_out", WIDTH, 1, 0.1 / np.sqrt(WIDTH))
    bias("b_out", 1)
    nodes += [
        helper.make_node("MatMul", [f"h{BLOCKS}", "w_out"], ["mm_out"]),
        helper.make_node("Add", ["mm_out", "b_out"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "ctr_deep",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", N_FEATURES])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    m.ir_version = 8
    m.producer_name = "hourglass/make_deep_model.py"
    entry = m.metadata_props.add()
    entry.key, entry.value = "hourglass.feature_names", ",".join(FEATURES)
    onnx.checker.check_model(m)
    return m


def main():
    m = model()
    data = m.SerializeToString()
    with open(os.path.join(HERE, "ctr_deep.onnx"), "wb") as f:
        f.write(data)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    x = np.abs(np.random.default_rng(1).normal(0, 3, (4, N_FEATURES))).astype(np.float32)
    (score,) = sess.run(None, {"input": x})
    assert score.shape == (4, 1) and np.isfinite(score).all()
    card = {
        "name": "ctr_deep",
        "file": "ctr_deep.onnx",
        "sha256": hashlib.sha256(data).hexdigest(),
        "description": f"float32 deep narrow tower: {BLOCKS} residual blocks of width {WIDTH} (random weights); "
        "for serving benchmarks, where a call's fixed cost dominates",
        "inputs": [{"name": "input", "dtype": "float32", "shape": ["N", N_FEATURES]}],
        "outputs": [{"name": "score", "dtype": "float32", "shape": ["N", 1]}],
        "feature_names": FEATURES,
        "generator": "models/make_deep_model.py",
        "versions": {"onnx": onnx.__version__, "onnxruntime": ort.__version__, "numpy": np.__version__},
    }
    with open(os.path.join(HERE, "ctr_deep.card.json"), "w") as f:
        json.dump(card, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
