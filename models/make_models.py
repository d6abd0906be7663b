#!/usr/bin/env python3
"""Generate Hourglass's reference models, their cards and golden predictions.

Run from the repository root with the project venv (`make models`):

    .venv/bin/python models/make_models.py

Pinned versions (see requirements-models.txt): lightgbm 4.7.0,
onnxmltools 1.16.0 (target_opset 15, zipmap disabled), onnx 1.23.2,
onnxruntime 1.31.1. The outputs are committed; tests never regenerate them.

The synthetic data is Criteo-shaped: 13 dense count features (I1..I13,
log-normal counts) and 26 hashed categorical features (C1..C26, bucket ids
as float32, skewed towards small ids), with a label driven by a few of them
so the GBDT learns real structure. `hourglass gen-data` draws rows from the
same distribution (see coordinator/src/synth.rs); keep the two in step.
"""

import hashlib
import json
import os
import sys

import lightgbm as lgb
import numpy as np
import onnx
import onnxmltools
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxmltools.convert.common.data_types import FloatTensorType

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20261122
N_DENSE = 13
N_CAT = 26
FEATURES = [f"I{i}" for i in range(1, N_DENSE + 1)] + [f"C{i}" for i in range(1, N_CAT + 1)]
# Per-feature parameters shared with coordinator/src/synth.rs.
DENSE_MU = [0.5 + 0.25 * j for j in range(N_DENSE)]
CAT_CARD = [10 ** (1 + (j % 6)) for j in range(N_CAT)]


def synth(n, rng):
    """Rows of the reference distribution and their labels."""
    x = np.empty((n, N_DENSE + N_CAT), dtype=np.float32)
    for j in range(N_DENSE):
        x[:, j] = np.floor(np.exp(rng.normal(DENSE_MU[j], 1.0, n)))
    for j in range(N_CAT):
        x[:, N_DENSE + j] = np.floor(CAT_CARD[j] * rng.random(n) ** 2)
    logit = (
        -1.2
        + 0.45 * np.log1p(x[:, 0])
        - 0.30 * np.log1p(x[:, 1])
        + 0.20 * np.log1p(x[:, 4])
        + 0.80 * (x[:, N_DENSE + 0] < 2)
        - 0.60 * (x[:, N_DENSE + 2] < CAT_CARD[2] / 20)
        + 0.40 * ((x[:, N_DENSE + 7].astype(np.int64) % 7) == 3)
        + rng.normal(0, 0.5, n)
    )
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int32)
    return x, y


def fix_batch_dims(model):
    """onnxmltools declares the outputs as [1]/[1,2]; the batch dim is really N."""
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) > 0:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "N"
    return model


def set_metadata(model, **props):
    del model.metadata_props[:]
    for k, v in props.items():
        entry = model.metadata_props.add()
        entry.key = k
        entry.value = v


def gbdt(x, y):
    clf = lgb.LGBMClassifier(
        n_estimators=100, num_leaves=31, learning_rate=0.1, random_state=SEED, verbose=-1
    )
    clf.fit(x, y)
    model = onnxmltools.convert_lightgbm(
        clf,
        initial_types=[("input", FloatTensorType([None, N_DENSE + N_CAT]))],
        target_opset=15,
        zipmap=False,
    )
    model = fix_batch_dims(model)
    model.producer_name = "hourglass/make_models.py"
    set_metadata(model, **{"hourglass.feature_names": ",".join(FEATURES)})
    onnx.checker.check_model(model)
    return model


def mlp(x, rng):
    """A float32 MLP 39->256->128->1 with sigmoid; standardisation is in the graph."""
    feats = np.log1p(x.astype(np.float64))
    mean = feats.mean(axis=0).astype(np.float32)
    std = (feats.std(axis=0) + 1e-6).astype(np.float32)
    sizes = [N_DENSE + N_CAT, 256, 128, 1]
    inits = [numpy_helper.from_array(mean, "mean"), numpy_helper.from_array(std, "std")]
    nodes = [
        helper.make_node("Add", ["input", "one"], ["xp1"]),
        helper.make_node("Log", ["xp1"], ["logx"]),
        helper.make_node("Sub", ["logx", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["h0"]),
    ]
    inits.append(numpy_helper.from_array(np.array([1.0], dtype=np.float32), "one"))
    for i in range(3):
        w = (rng.normal(0, np.sqrt(2.0 / sizes[i]), (sizes[i], sizes[i + 1]))).astype(np.float32)
        b = (rng.normal(0, 0.01, sizes[i + 1])).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("MatMul", [f"h{i}", f"w{i}"], [f"mm{i}"]))
        nodes.append(helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"z{i}"]))
        if i < 2:
            nodes.append(helper.make_node("Relu", [f"z{i}"], [f"h{i + 1}"]))
        else:
            nodes.append(helper.make_node("Sigmoid", [f"z{i}"], ["score"]))
    graph = helper.make_graph(
        nodes,
        "ctr_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", N_DENSE + N_CAT])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    model.producer_name = "hourglass/make_models.py"
    set_metadata(model, **{"hourglass.feature_names": ",".join(FEATURES)})
    onnx.checker.check_model(model)
    return model


def dtype_name(elem_type):
    return {TensorProto.FLOAT: "float32", TensorProto.INT64: "int64", TensorProto.DOUBLE: "float64"}[elem_type]


def describe(values):
    out = []
    for v in values:
        t = v.type.tensor_type
        dims = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
        out.append({"name": v.name, "dtype": dtype_name(t.elem_type), "shape": dims})
    return out


def write_model(name, model, golden_x, description):
    path = os.path.join(HERE, f"{name}.onnx")
    data = model.SerializeToString()
    with open(path, "wb") as f:
        f.write(data)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    outputs = sess.run(None, {"input": golden_x})
    golden = {}
    for meta, arr in zip(sess.get_outputs(), outputs):
        golden[meta.name] = arr.tolist()
    with open(os.path.join(HERE, "golden", f"{name}.json"), "w") as f:
        json.dump({"model": f"{name}.onnx", "rows": len(golden_x), "outputs": golden}, f)
    card = {
        "name": name,
        "file": f"{name}.onnx",
        "sha256": hashlib.sha256(data).hexdigest(),
        "description": description,
        "inputs": describe(model.graph.input),
        "outputs": describe(model.graph.output),
        "feature_names": FEATURES,
        "id_column": "id",
        "opset": {op.domain or "ai.onnx": op.version for op in model.opset_import},
        "golden": f"golden/{name}.json",
        "generator": "models/make_models.py",
        "versions": {
            "lightgbm": lgb.__version__,
            "onnxmltools": onnxmltools.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
            "numpy": np.__version__,
        },
    }
    with open(os.path.join(HERE, f"{name}.card.json"), "w") as f:
        json.dump(card, f, indent=2)
        f.write("\n")


def main():
    rng = np.random.default_rng(SEED)
    os.makedirs(os.path.join(HERE, "golden"), exist_ok=True)
    x, y = synth(200_000, rng)
    golden_x, _ = synth(1_000, rng)
    with open(os.path.join(HERE, "golden", "inputs.csv"), "w") as f:
        f.write(",".join(["id"] + FEATURES) + "\n")
        for i, row in enumerate(golden_x):
            f.write(",".join([str(i)] + [repr(float(v)) for v in row]) + "\n")
    write_model(
        "ctr_gbdt",
        gbdt(x, y),
        golden_x,
        "LightGBM binary classifier, 100 trees, 31 leaves, on synthetic Criteo-shaped CTR data",
    )
    write_model(
        "ctr_mlp",
        mlp(x, rng),
        golden_x,
        "float32 MLP 39-256-128-1 with sigmoid (random weights, log1p standardisation in-graph); for the GPU path",
    )
    print(f"wrote models to {HERE}", file=sys.stderr)


if __name__ == "__main__":
    main()
