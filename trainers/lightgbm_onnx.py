#!/usr/bin/env python3
"""Hourglass's reference trainer: LightGBM, exported to ONNX.

It follows the trainer contract (docs/training.md): the trial's inputs come
in HOURGLASS_* environment variables, progress goes to stdout as JSON lines,
and model.onnx, metrics.json and holdout_predictions.txt are written to
HOURGLASS_OUTPUT_DIR. The worker checks the model before registering it:
it loads it in ONNX Runtime, binds it to the dataset's columns and compares
its holdout predictions with the ones written here (within 1e-5).

Pins (models/requirements-runtime.txt) are the ones models/make_models.py
uses: lightgbm 4.7.0, onnxmltools 1.16.0 with target_opset 15 and no zipmap,
so the exported model has a plain [N, 2] probabilities output.

Parameters (HOURGLASS_PARAMS, a JSON object) go to LGBMClassifier as they
are (n_estimators, num_leaves, learning_rate, min_child_samples, ...), except
`seed` (default 0), which sets random_state.
"""

import json
import os
import sys

import lightgbm as lgb
import numpy as np
import onnx
import onnxmltools
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from onnxmltools.convert.common.data_types import FloatTensorType


def emit(**event):
    print(json.dumps(event), flush=True)


def read(paths, fmt, columns):
    """The named columns of every file, stacked, as float64 (NumPy)."""
    parts = []
    for path in paths:
        if fmt == "parquet":
            table = pq.read_table(path, columns=columns)
        else:
            table = pacsv.read_csv(path).select(columns)
        parts.append(np.column_stack([table.column(c).to_numpy(zero_copy_only=False) for c in columns]))
    return np.vstack(parts).astype(np.float64)


def auc(y, p):
    """ROC AUC with ties counted half."""
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p))
    sorted_p = p[order]
    i = 0
    while i < len(p):
        j = i
        while j + 1 < len(p) and sorted_p[j + 1] == sorted_p[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    pos = y.sum()
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return None
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def main():
    env = os.environ
    features = env["HOURGLASS_FEATURES"].split(",")
    label = env["HOURGLASS_LABEL"]
    fmt = env["HOURGLASS_DATA_FORMAT"]
    out = env["HOURGLASS_OUTPUT_DIR"]
    params = json.loads(env.get("HOURGLASS_PARAMS") or "{}")
    threads = int(env.get("HOURGLASS_THREADS") or 1)
    train_files = [p for p in env["HOURGLASS_TRAIN_FILES"].split("\n") if p]
    holdout_files = [p for p in env["HOURGLASS_HOLDOUT_FILES"].split("\n") if p]
    parent = os.getppid()

    train = read(train_files, fmt, features + [label])
    x, y = train[:, :-1].astype(np.float32), train[:, -1].astype(np.int32)
    holdout = read(holdout_files, fmt, features + [label])
    hx, hy = holdout[:, :-1].astype(np.float32), holdout[:, -1].astype(np.int32)
    emit(stage="loaded", train_rows=int(len(y)), holdout_rows=int(len(hy)), features=len(features))

    seed = int(params.pop("seed", 0))
    rounds = int(params.get("n_estimators", 100))

    def progress(env_):
        # A worker that was killed leaves its trainer to init: stop too.
        if os.getppid() != parent:
            sys.exit("the worker that started this trainer is gone")
        done = env_.iteration + 1
        if done % max(1, rounds // 10) == 0 or done == rounds:
            emit(progress=done / rounds, iteration=done)

    clf = lgb.LGBMClassifier(random_state=seed, n_jobs=threads, verbose=-1, **params)
    clf.fit(x, y, callbacks=[progress])

    # The booster's own predictions (float64 arithmetic): the worker
    # compares the exported model's with these.
    p = clf.predict_proba(hx)[:, 1]
    with open(os.path.join(out, "holdout_predictions.txt"), "w") as f:
        f.write("\n".join(repr(float(v)) for v in p))
        f.write("\n")

    model = onnxmltools.convert_lightgbm(
        clf,
        initial_types=[("input", FloatTensorType([None, len(features)]))],
        target_opset=15,
        zipmap=False,
    )
    # onnxmltools declares [1]/[1, 2] outputs; the batch dimension is N.
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) > 0:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "N"
    model.producer_name = "hourglass/trainers/lightgbm_onnx.py"
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key = "hourglass.feature_names"
    entry.value = ",".join(features)
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(out, "model.onnx"))

    eps = 1e-15
    pc = np.clip(p, eps, 1 - eps)
    metrics = {
        "logloss": float(-np.mean(hy * np.log(pc) + (1 - hy) * np.log(1 - pc))),
        "train_rows": int(len(y)),
        "holdout_rows": int(len(hy)),
    }
    a = auc(hy, p)
    if a is not None:
        metrics["auc"] = a
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f)
    emit(stage="done", **metrics)


if __name__ == "__main__":
    main()
