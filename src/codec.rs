//! The protobuf codec of the generated jsonkv client and server: prost's own encoder and
//! decoder, with a smaller buffer per call.
//!
//! tonic allocates each call's encode buffer up front, 8 KiB by default, and a watch stream
//! keeps its buffer for as long as it is open: with ten thousand idle watchers it was the
//! largest part of the server's memory per watcher (heaptrack). jsonkv's messages are mostly
//! small (an event, a unary reply), so calls start at 512 bytes; a larger message grows the
//! buffer as it needs to, which costs a reallocation, not a failure. The idle-keys and fan-out
//! benchmarks measured the memory saved, and no cost to fan-out latency or unary throughput.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial encode/decode buffer per call, in bytes.
const BUFFER_BYTES: usize = 512;
/// tonic's default: how much encoded data a stream gathers before yielding it to the transport.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`ProstCodec`] with [`BUFFER_BYTES`] buffers. Named by `build.rs` (`codec_path`).
#[derive(Debug, Clone)]
pub struct JsonKvCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for JsonKvCodec<T, U> {
    fn default() -> Self {
        JsonKvCodec(PhantomData)
    }
}

impl<T, U> Codec for JsonKvCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = JsonKvDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        JsonKvDecoder(ProstCodec::<T, U>::raw_decoder(settings()))
    }
}

/// prost's decoder, with its failures reported by who sent the bytes. A request that does not
/// decode (malformed protobuf, a string field that is not UTF-8) is the caller's bad input,
/// INVALID_ARGUMENT, where tonic says INTERNAL; a response that does not decode stays
/// INTERNAL, the server's fault. Every RPC's input message is named `*Request` (a unit test
/// holds the proto to it).
#[derive(Debug)]
pub struct JsonKvDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for JsonKvDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            if is_request::<U>() {
                Status::invalid_argument(format!(
                    "the request is not a valid {} message: {}",
                    short_name::<U>(),
                    status.message()
                ))
            } else {
                status
            }
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

fn short_name<U>() -> &'static str {
    let name = std::any::type_name::<U>();
    name.rsplit("::").next().unwrap_or(name)
}

fn is_request<U>() -> bool {
    short_name::<U>().ends_with("Request")
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rpc_takes_a_request_and_returns_no_request() {
        let proto = include_str!("../proto/jsonkv/v1/jsonkv.proto");
        let rpcs: Vec<&str> = proto
            .lines()
            .map(str::trim)
            .filter(|line| line.starts_with("rpc "))
            .collect();
        assert!(!rpcs.is_empty());
        for rpc in rpcs {
            let (input, output) = rpc
                .split_once(" returns ")
                .expect("rpc Name(Input) returns (Output)");
            assert!(input.trim_end().ends_with("Request)"), "{rpc}");
            assert!(!output.contains("Request"), "{rpc}");
        }
        assert!(is_request::<crate::pb::GetRequest>());
        assert!(!is_request::<crate::pb::WatchResponse>());
    }
}
