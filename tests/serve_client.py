"""Drives `hourglass serve` with tritonclient (PyPI), a KServe v2 client
nobody here wrote: health, metadata, infer over HTTP with binary and JSON
tensors, outputs checked against a direct ONNX Runtime run, and malformed
requests answered with errors that name the input. Prints OK on success.

Then the same over gRPC: raw_input_contents (tritonclient's way), typed
fp32_contents (built by hand with the protocol's generated stub), errors
as gRPC status codes.

Usage: serve_client.py HTTP_HOST:PORT GRPC_HOST:PORT MODEL_NAME MODEL_PATH
"""

import sys
import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient
import tritonclient.http as http
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

url, grpc_url, name, path = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
client = http.InferenceServerClient(url=url, concurrency=8)
assert client.is_server_live()
assert client.is_server_ready()
assert client.is_model_ready(name)
meta = client.get_server_metadata()
assert "binary_tensor_data" in meta["extensions"], meta
model = client.get_model_metadata(name)
assert model["inputs"][0]["shape"] == [-1, 39], model
assert {o["name"] for o in model["outputs"]} == {"label", "probabilities"}, model

session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
rng = np.random.default_rng(7)


def check(rows, binary_in, binary_out):
    x = rng.uniform(-1, 3, size=(rows, 39)).astype(np.float32)
    inp = http.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary_in)
    outs = [http.InferRequestedOutput("probabilities", binary_data=binary_out),
            http.InferRequestedOutput("label", binary_data=binary_out)]
    result = client.infer(name, [inp], outputs=outs)
    want_label, want_prob = session.run(["label", "probabilities"], {"input": x})
    got_prob = result.as_numpy("probabilities")
    assert got_prob.shape == (rows, 2), got_prob.shape
    assert np.max(np.abs(got_prob - want_prob)) <= 1e-6, np.max(np.abs(got_prob - want_prob))
    assert (result.as_numpy("label") == want_label).all()
    assert result.get_response()["model_version"] == "1"


for rows in (1, 7, 256):
    for binary_in in (True, False):
        for binary_out in (True, False):
            check(rows, binary_in, binary_out)

# Concurrent requests of different sizes are batched together and split
# back: each gets exactly its own rows' scores.
pending = []
for i in range(200):
    x = rng.uniform(-1, 3, size=(1 + i % 13, 39)).astype(np.float32)
    inp = http.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    pending.append((x, client.async_infer(name, [inp], outputs=[http.InferRequestedOutput("probabilities")])))
for x, request in pending:
    got = request.get_result().as_numpy("probabilities")
    (want,) = session.run(["probabilities"], {"input": x})
    assert got.shape == want.shape and np.max(np.abs(got - want)) <= 1e-6

# Malformed requests: errors that name what is wrong, never a hang.
def refused(inputs, needle):
    try:
        client.infer(name, inputs)
    except InferenceServerException as e:
        assert needle in str(e), str(e)
        return
    raise AssertionError(f"accepted: {needle}")


bad = http.InferInput("input", [2, 39], "FP64")
bad.set_data_from_numpy(np.zeros((2, 39), dtype=np.float64))
refused([bad], 'datatype "FP64"')
wrong = http.InferInput("nope", [1, 39], "FP32")
wrong.set_data_from_numpy(np.zeros((1, 39), dtype=np.float32))
refused([wrong], 'unknown input "nope"')
narrow = http.InferInput("input", [1, 38], "FP32")
narrow.set_data_from_numpy(np.zeros((1, 38), dtype=np.float32))
refused([narrow], "does not fit")
try:
    client.get_model_metadata("missing")
    raise AssertionError("a missing model was found")
except InferenceServerException as e:
    assert "unknown model" in str(e), str(e)

# gRPC: the same model through GRPCInferenceService.
g = grpcclient.InferenceServerClient(url=grpc_url)
assert g.is_server_live() and g.is_server_ready() and g.is_model_ready(name)
gmeta = g.get_model_metadata(name, as_json=True)
assert gmeta["inputs"][0]["shape"] == ["-1", "39"], gmeta
assert gmeta["versions"] == ["1"], gmeta
for rows in (1, 5, 256):
    x = rng.uniform(-1, 3, size=(rows, 39)).astype(np.float32)
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = g.infer(name, [inp], outputs=[grpcclient.InferRequestedOutput("probabilities"),
                                           grpcclient.InferRequestedOutput("label")])
    want_label, want_prob = session.run(["label", "probabilities"], {"input": x})
    got = result.as_numpy("probabilities")
    assert got.shape == (rows, 2) and np.max(np.abs(got - want_prob)) <= 1e-6
    assert (result.as_numpy("label") == want_label).all()
    assert result.get_response().model_version == "1"

# Typed contents instead of raw bytes, through the protocol's own stub.
x = rng.uniform(-1, 3, size=(3, 39)).astype(np.float32)
req = service_pb2.ModelInferRequest(model_name=name, id="typed-1")
t = req.inputs.add(name="input", datatype="FP32", shape=[3, 39])
t.contents.fp32_contents.extend(x.ravel().tolist())
req.outputs.add(name="probabilities")
resp = g._client_stub.ModelInfer(req)
assert resp.id == "typed-1" and [o.name for o in resp.outputs] == ["probabilities"], resp
got = np.frombuffer(resp.raw_output_contents[0], dtype=np.float32).reshape(3, 2)
(want,) = session.run(["probabilities"], {"input": x})
assert np.max(np.abs(got - want)) <= 1e-6


def grpc_refused(call, needle, code):
    try:
        call()
    except InferenceServerException as e:
        assert needle in str(e) and e.status() == code, (str(e), e.status())
        return
    raise AssertionError(f"accepted: {needle}")


short = grpcclient.InferInput("input", [2, 39], "FP32")
short.set_data_from_numpy(np.zeros((2, 39), dtype=np.float32))
short._raw_content = short._raw_content[:-4]
grpc_refused(lambda: g.infer(name, [short]), "bytes of binary data", "StatusCode.INVALID_ARGUMENT")
grpc_refused(lambda: g.get_model_metadata("missing"), "unknown model", "StatusCode.NOT_FOUND")
gbad = grpcclient.InferInput("input", [1, 39], "INT64")
gbad.set_data_from_numpy(np.zeros((1, 39), dtype=np.int64))
grpc_refused(lambda: g.infer(name, [gbad]), 'datatype "INT64"', "StatusCode.INVALID_ARGUMENT")
print("OK")
