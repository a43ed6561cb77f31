//! Generates the gRPC code with protox, a pure-Rust protobuf compiler, so a
//! fresh machine needs no `protoc`.
use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let files = [
        "faultd/agent/v1/agent.proto",
        "faultd/coordinator/v1/coordinator.proto",
    ];
    for file in files {
        println!("cargo::rerun-if-changed={file}");
    }
    let fds = protox::compile(files, ["."]).context("compiling the .proto files")?;
    // The descriptors, imports included, for server reflection (ops.rs).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").context("OUT_DIR")?);
    std::fs::write(
        out.join("faultd_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )
    .context("writing the descriptor set")?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Undecodable requests are InvalidArgument (src/codec.rs).
        .codec_path("crate::codec::FaultdCodec")
        .compile_fds(fds)
        .context("generating Rust code")?;
    Ok(())
}
