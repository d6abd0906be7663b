//! Generates the KServe v2 gRPC types, server and client from
//! `proto/grpc_predict_v2.proto`, with the `protoc` that the
//! protoc-bin-vendored crate carries (no system package needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/grpc_predict_v2.proto");
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Tensor bytes as `Bytes`: decoded without a copy, cloned for free.
    config.bytes(["."]);
    // Server only: `bench serve` frames its gRPC requests itself.
    tonic_prost_build::configure().build_client(false).compile_with_config(
        config,
        &["proto/grpc_predict_v2.proto"],
        &["proto"],
    )?;
    Ok(())
}
