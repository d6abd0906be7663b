# The Hourglass image: one static-ish binary plus ONNX Runtime's shared
# library, run as a non-root user. Every component (worker, scaler, submit,
# watch) is this image with different arguments (see deploy/helm/hourglass).
#
# Not built in CI: the development machines have no Docker engine. Build it
# with `docker build -t hourglass:0.1.0 .` (or buildah/kaniko) and push it
# where your cluster pulls from.

# 1. The binary, built as `make build` does.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin hourglass

# 2. ONNX Runtime 1.31.1 from its wheel, the same library the tests use.
FROM python:3.11-slim-bookworm AS ort
RUN pip install --no-cache-dir --target /ort onnxruntime==1.31.1

# 2b. ONNX Runtime's GPU build with CUDA 13 and cuDNN 9 (and TensorRT 10
#     with --build-arg TENSORRT=1) from the wheels `make setup-gpu` pins,
#     in one site-packages so the binary finds them beside the library and
#     preloads them (no LD_LIBRARY_PATH). Headers and static libraries go.
FROM python:3.11-slim-bookworm AS ort-gpu
ARG TENSORRT=0
COPY models/requirements-gpu-runtime.txt models/requirements-gpu.txt models/requirements-tensorrt.txt /req/
RUN python -m venv /venv \
 && /venv/bin/pip install --no-cache-dir --no-deps -r /req/requirements-gpu-runtime.txt \
 && /venv/bin/pip install --no-cache-dir -r /req/requirements-gpu.txt \
 && if [ "$TENSORRT" = 1 ]; then /venv/bin/pip install --no-cache-dir -r /req/requirements-tensorrt.txt; fi \
 && mv /venv/lib/python3.11/site-packages /ort \
 && rm -rf /ort/nvidia/*/include /ort/nvidia/*/lib/*.a /ort/pip* /ort/setuptools* \
 && test -f /ort/onnxruntime/capi/libonnxruntime.so.1.31.1

# 3. `--target trainer`: the same binary and library, with Python and the
#    reference LightGBM trainer (trainers/lightgbm_onnx.py, pinned as
#    models/requirements-runtime.txt pins it), for workers that also run
#    training trials (chart: worker.training.trainers).
FROM python:3.11-slim-bookworm AS trainer
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && pip install --no-cache-dir lightgbm==4.7.0 onnxmltools==1.16.0 onnx==1.23.2 numpy==2.4.6 pyarrow==22.0.0 \
 && groupadd --gid 10001 hourglass \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin hourglass
COPY --from=build /src/target/release/hourglass /usr/local/bin/hourglass
COPY --from=ort /ort/onnxruntime/capi/libonnxruntime.so.1.31.1 /usr/local/lib/libonnxruntime.so.1.31.1
COPY trainers/ /opt/hourglass/trainers/
ENV ORT_DYLIB_PATH=/usr/local/lib/libonnxruntime.so.1.31.1 \
    HOURGLASS_TRAINERS="lightgbm=python3 /opt/hourglass/trainers/lightgbm_onnx.py"
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/hourglass"]
CMD ["--help"]

# 4. `base`: the runtime's Debian, CA certificates and user, and the
#    binary; `--target gpu`: that, for GPU node pools (chart:
#    gpu.enabled, which runs it as IMAGE:TAG-gpu with --device). The NVIDIA
#    driver (libcuda.so.1) is the node's: the NVIDIA container toolkit mounts
#    it into pods that request nvidia.com/gpu. `hourglass doctor --device
#    cuda` in the pod says whether the provider registers, and why not.
FROM debian:bookworm-slim AS base
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 hourglass \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin hourglass
COPY --from=build /src/target/release/hourglass /usr/local/bin/hourglass

FROM base AS gpu
COPY --from=ort-gpu /ort /opt/ort
ENV ORT_DYLIB_PATH=/opt/ort/onnxruntime/capi/libonnxruntime.so.1.31.1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/hourglass"]
CMD ["--help"]

# 5. Runtime, the default (last) target: CA certificates for S3/SQS over TLS,
#    nothing else (the `base` stage above, which `gpu` shares).
FROM base
COPY --from=ort /ort/onnxruntime/capi/libonnxruntime.so.1.31.1 /usr/local/lib/libonnxruntime.so.1.31.1
ENV ORT_DYLIB_PATH=/usr/local/lib/libonnxruntime.so.1.31.1
# Numeric, so Kubernetes can check runAsNonRoot.
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/hourglass"]
CMD ["--help"]
