//! [`Api`]: what every route of the HTTP API shares, and how an HTTP request becomes a call of
//! the gRPC service: the caller's token checked as gRPC checks it (the same roles and scopes),
//! the connection's address attached (for the per-connection watch limit), the query read
//! strictly, the body read under the message-size limit, and a unary call bounded by the
//! request timeout.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{header, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Limited};
use tonic::Code;

use super::problem::Problem;
use crate::config::Config;
use crate::credentials::TokenStore;
use crate::layers::auth::authorize;
use crate::service::{JsonKvService, STORE_ID_HEADER};
use crate::store_id::StoreId;

/// The state of the HTTP API's routes. Cheap to clone.
#[derive(Clone)]
pub struct Api {
    pub(super) service: JsonKvService,
    tokens: Option<Arc<TokenStore>>,
    request_timeout: Duration,
    max_body_bytes: usize,
    pub(super) heartbeat: Duration,
    /// The store's identity, as the `jsonkv-store-id` header every answer carries.
    store_id: HeaderValue,
}

impl Api {
    pub fn new(
        service: JsonKvService,
        store_id: &StoreId,
        tokens: Option<Arc<TokenStore>>,
        config: &Config,
    ) -> Api {
        Api {
            store_id: HeaderValue::try_from(store_id.as_str())
                .expect("store identities are letters, digits and dashes"),
            service,
            tokens,
            request_timeout: config.request_timeout,
            max_body_bytes: config.max_message_bytes,
            heartbeat: config.http_heartbeat,
        }
    }

    /// `message` as a call of the JsonKv method `method`, by the client that sent `parts`:
    /// 401 or 403 if its token may not make it.
    pub fn request<T>(
        &self,
        method: &str,
        parts: &Parts,
        message: T,
    ) -> Result<tonic::Request<T>, Problem> {
        let mut extensions = http::Extensions::new();
        if let Some(info) = parts
            .extensions
            .get::<tonic::transport::server::TcpConnectInfo>()
        {
            extensions.insert(info.clone());
        }
        if let Some(tokens) = &self.tokens {
            authorize(tokens, method, &parts.headers, &mut extensions)?;
        }
        Ok(tonic::Request::from_parts(
            tonic::metadata::MetadataMap::new(),
            extensions,
            message,
        ))
    }

    pub fn store_id_header(&self) -> HeaderValue {
        self.store_id.clone()
    }

    /// `body`, JSON text, as a 200 answer naming the store its revisions belong to.
    pub fn json(&self, body: String) -> Response {
        let mut response = (StatusCode::OK, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(STORE_ID_HEADER, self.store_id_header());
        response
    }

    /// Runs a unary call within the request timeout (504 beyond, as gRPC's DEADLINE_EXCEEDED).
    pub async fn unary<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<tonic::Response<T>, Problem> {
        if self.request_timeout.is_zero() {
            return Ok(call.await?);
        }
        match tokio::time::timeout(self.request_timeout, call).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                Code::DeadlineExceeded,
                format!(
                    "no answer within the request timeout ({:?})",
                    self.request_timeout
                ),
            )),
        }
    }

    /// The request body as text: 413 past the largest message the server accepts, 400 if it
    /// is not UTF-8.
    pub async fn body_text(&self, body: Body) -> Result<String, Problem> {
        let bytes = match Limited::new(body, self.max_body_bytes).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(err) if err.is::<http_body_util::LengthLimitError>() => {
                return Err(Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Code::InvalidArgument,
                    format!(
                        "the request body is over {} bytes (--max-message-bytes)",
                        self.max_body_bytes
                    ),
                ))
            }
            Err(err) => {
                return Err(Problem::bad_request(format!(
                    "cannot read the request body: {err}"
                )))
            }
        };
        String::from_utf8(bytes.into())
            .map_err(|_| Problem::bad_request("the request body is not UTF-8 text"))
    }
}

/// Strict query parameters: an unknown one is an error, not ignored (a misspelt `lease`
/// would otherwise write a key without its lease). A parameter read into a list may repeat.
pub fn query<T: serde::de::DeserializeOwned>(parts: &Parts) -> Result<T, Problem> {
    serde_html_form::from_str(parts.uri.query().unwrap_or_default())
        .map_err(|e| Problem::bad_request(format!("bad query string: {e}")))
}
