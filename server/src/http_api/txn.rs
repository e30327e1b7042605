//! `POST /v1/txn`: a `TxnRequest` in the proto's JSON mapping, answered with its
//! `TxnResponse` in the same mapping ([`jsonkv::proto_json`]): the gRPC call itself, with
//! nothing renamed.

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::request::Parts;
use http::StatusCode;
use jsonkv::pb::{self, json_kv_server::JsonKv};
use jsonkv::proto_json;

use super::call::Api;
use super::problem::Problem;

pub async fn txn(State(api): State<Api>, parts: Parts, body: Body) -> Result<Response, Problem> {
    let text = api.body_text(body).await?;
    let txn: pb::TxnRequest =
        proto_json::decode("TxnRequest", &text).map_err(Problem::bad_request)?;
    let request = api.request("Txn", &parts, txn)?;
    let answer = api.unary(api.service.txn(request)).await?.into_inner();
    let text = proto_json::encode("TxnResponse", &answer).map_err(|message| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            tonic::Code::Internal,
            message,
        )
    })?;
    Ok(api.json(text))
}
