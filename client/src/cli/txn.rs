//! `jsonkv txn`: a transaction written as a `TxnRequest` in the proto's canonical JSON mapping
//! (proto3 JSON, through [`jsonkv::proto_json`]), answered with its `TxnResponse` in the same
//! mapping.

use jsonkv::{pb, proto_json};
use jsonkv_client::Client;

use crate::cli::output::{print_text, Exit};

/// The `TxnRequest` that `text` (proto3 JSON) describes; a one-line error naming what is wrong
/// with it otherwise (unknown fields included).
pub fn parse_request(text: &str) -> Result<pb::TxnRequest, Exit> {
    proto_json::decode("TxnRequest", text).map_err(Exit::error)
}

/// Runs `request` and prints its response as one line of proto3 JSON.
pub async fn run(client: &Client, request: pb::TxnRequest) -> Result<(), Exit> {
    let response = client.txn_request(request).await?;
    let line = proto_json::encode("TxnResponse", &response).map_err(Exit::error)?;
    print_text(&line)
}
