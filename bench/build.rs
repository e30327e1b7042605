//! Compiles `proto/echo.proto`, the empty RPC of the echo reference server, with the vendored
//! protoc (as the root crate's build.rs does for the jsonkv proto).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/echo.proto";
    println!("cargo:rerun-if-changed={proto}");

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(
        config,
        &[PathBuf::from(proto)],
        &[PathBuf::from("proto")],
    )?;
    Ok(())
}
