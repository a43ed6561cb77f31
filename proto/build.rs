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
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)
        .context("generating Rust code")?;
    Ok(())
}
