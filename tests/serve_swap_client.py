"""Load on `hourglass serve` while its registry alias moves: 32 closed-loop
clients (16 HTTP with binary tensors, 16 gRPC) send 1 to 8 rows each for
SECONDS seconds. Prints WARM once traffic flows (the test then moves the
alias), and at the end one JSON line: requests ok and failed, responses by
version, and the requests sent after the first new-version answer that were
still answered by the old one (0 when the switch is atomic).

Usage: serve_swap_client.py HTTP_HOST:PORT GRPC_HOST:PORT MODEL_NAME SECONDS
"""

import json
import sys
import threading
import time

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as http

url, grpc_url, name, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
lock = threading.Lock()
records = []  # (sent, received, version or None, error or None, client)
warm = threading.Event()
start = time.monotonic()


def client_loop(k):
    use_grpc = k % 2 == 1
    rng = np.random.default_rng(k)
    c = grpcclient.InferenceServerClient(url=grpc_url) if use_grpc else http.InferenceServerClient(url=url)
    mod = grpcclient if use_grpc else http
    while time.monotonic() - start < seconds:
        x = rng.uniform(-1, 3, size=(int(rng.integers(1, 9)), 39)).astype(np.float32)
        inp = mod.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        sent = time.monotonic()
        try:
            r = c.infer(name, [inp])
            version = r.get_response().model_version if use_grpc else r.get_response()["model_version"]
            first = r.get_response().outputs[0].shape[0] if use_grpc else r.get_response()["outputs"][0]["shape"][0]
            err = None if first == x.shape[0] else f"{first} rows answered for {x.shape[0]}"
        except Exception as e:  # any failure is counted, with its message
            version, err = None, str(e)
        with lock:
            records.append((sent, time.monotonic(), version, err, k))
            if len(records) == 200:
                warm.set()


threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(32)]
for t in threads:
    t.start()
warm.wait(timeout=seconds)
print("WARM", flush=True)
for t in threads:
    t.join()

ok = [r for r in records if r[3] is None]
failed = [r for r in records if r[3] is not None]
by_version = {}
for r in ok:
    by_version[r[2]] = by_version.get(r[2], 0) + 1
versions = sorted(by_version, key=int)
stale, last = 0, {}
if len(versions) > 1:
    new = versions[-1]
    first_new = min(r[1] for r in ok if r[2] == new)
    stale = sum(1 for r in ok if r[0] > first_new and r[2] != new)
for r in sorted(ok):
    last[r[4]] = r[2]
print(json.dumps({
    "ok": len(ok),
    "failed": len(failed),
    "errors": sorted({r[3] for r in failed})[:5],
    "by_version": by_version,
    "stale_after_switch": stale,
    "last_versions": sorted(set(last.values())),
}), flush=True)
