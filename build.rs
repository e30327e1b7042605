//! Compiles `proto/jsonkv/v1/jsonkv.proto` into Rust (messages, client and server) and writes the
//! file descriptor set that the server's reflection service serves.
//!
//! protoc is the vendored binary from `protoc-bin-vendored`, so a fresh machine needs nothing
//! installed by hand; its bundled include path provides `google/protobuf/struct.proto`.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/jsonkv/v1/jsonkv.proto";
    println!("cargo:rerun-if-changed={proto}");

    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known = protoc_bin_vendored::include_path()?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);

    tonic_prost_build::configure()
        // prost's codec with a smaller buffer per call: see src/codec.rs.
        .codec_path("crate::codec::JsonKvCodec")
        // The descriptor set includes imports (struct.proto), which reflection clients need to
        // resolve google.protobuf.Value.
        .file_descriptor_set_path(out_dir.join("jsonkv_descriptor.bin"))
        .compile_with_config(
            config,
            &[PathBuf::from(proto)],
            &[PathBuf::from("proto"), well_known],
        )?;
    Ok(())
}
