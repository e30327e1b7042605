//! The jsonkv API crate: the Rust code generated from `proto/jsonkv/v1/jsonkv.proto`, and the
//! conversion between JSON (`serde_json::Value`) and the wire forms of a value.
//!
//! Layout:
//! - [`pb`]: generated messages, the `JsonKv` client and the server trait.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors that reflection serves.
//! - [`value`]: JSON <-> `google.protobuf.Value`, and lossless JSON text.
//! - [`codec`]: the protobuf codec the generated code uses (prost's, with smaller buffers).
//! - `proto_json` (feature `proto-json`): messages in the proto3 JSON mapping.
//! - [`retry`]: for the server's etcd client and the jsonkv client: whether a failed call never
//!   left, and the backoff between attempts.

pub mod codec;
#[cfg(feature = "proto-json")]
pub mod proto_json;
pub mod retry;
pub mod value;

/// Generated code for package `jsonkv.v1`.
// Generated code: its doc comments are the proto's, formatted for protobuf, not rustdoc.
#[allow(clippy::all)]
pub mod pb {
    tonic::include_proto!("jsonkv.v1");
}

/// The encoded `FileDescriptorSet` of the jsonkv proto and its imports, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("jsonkv_descriptor");
