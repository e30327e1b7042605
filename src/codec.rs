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
use tonic::codec::{BufferSettings, Codec};
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
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD)
}
