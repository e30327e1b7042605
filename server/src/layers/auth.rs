//! [`AuthLayer`]: checks every JsonKv call's bearer token against the tokens in force ([`TokenStore`]), and answers
//! refused calls itself. Health and reflection stay open.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{self, Either, Ready};
use jsonkv::pb::json_kv_server::SERVICE_NAME;
use tonic::body::Body;
use tonic::transport::server::TcpConnectInfo;
use tonic::Status;
use tower::{Layer, Service};

use crate::credentials::TokenStore;
use crate::error::Error;

/// Wraps the gRPC services so that JsonKv calls are checked against `tokens`; with `None`,
/// every call goes through.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    tokens: Option<Arc<TokenStore>>,
}

impl AuthLayer {
    pub fn new(tokens: Option<Arc<TokenStore>>) -> Self {
        AuthLayer { tokens }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

/// The service [`AuthLayer`] makes: answers refused calls itself, passes the rest on.
#[derive(Debug, Clone)]
pub struct Authenticate<S> {
    inner: S,
    tokens: Option<Arc<TokenStore>>,
}

impl<S, B> Service<http::Request<B>> for Authenticate<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Either<Ready<Result<http::Response<Body>, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Some(tokens) = &self.tokens else {
            return Either::Right(self.inner.call(request));
        };
        let (mut parts, body) = request.into_parts();
        // Only JsonKv is guarded: health checks and reflection stay open to probes and tools.
        let checked = match jsonkv_method(parts.uri.path()) {
            Some(method) => authorize(tokens, method, &parts.headers, &mut parts.extensions),
            None => Ok(()),
        };
        match checked {
            Ok(()) => Either::Right(self.inner.call(http::Request::from_parts(parts, body))),
            Err(err) => Either::Left(future::ready(Ok(Status::from(err).into_http()))),
        }
    }
}

/// Checks the bearer token in `headers` for a call of `method` (a JsonKv method's name); if
/// it may make the call, puts what it was granted into `extensions` for the service, else
/// logs the refusal and says why. The HTTP API's calls pass here too.
pub fn authorize(
    tokens: &Arc<TokenStore>,
    method: &str,
    headers: &http::HeaderMap,
    extensions: &mut http::Extensions,
) -> Result<(), Error> {
    let authorization = headers
        .get(http::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    match tokens.check(method, authorization) {
        Ok(grant) => {
            // The service checks each key against the scope (see auth::Scope). A watch also
            // gets a credential, to check its token again after each reload; a unary call
            // ends before that could matter, and is spared building one.
            let credential = LASTING
                .contains(&method)
                .then(|| tokens.credential(grant.clone(), method));
            extensions.insert(grant.scope);
            if let Some(credential) = credential {
                extensions.insert(credential);
            }
            Ok(())
        }
        Err(err) => {
            tracing::warn!(method, peer = ?peer_addr(extensions), reason = %err, "call refused");
            Err(err)
        }
    }
}

/// The calls that last: their credential is checked again after each reload of the tokens.
const LASTING: [&str; 2] = ["WatchKey", "WatchPrefix"];

/// The method name of a JsonKv call path (`/jsonkv.v1.JsonKv/Get` -> `Get`).
fn jsonkv_method(path: &str) -> Option<&str> {
    path.strip_prefix('/')?
        .strip_prefix(SERVICE_NAME)?
        .strip_prefix('/')
}

/// The client's address, from the connection info `net::connection` attaches to each request.
fn peer_addr(extensions: &http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_jsonkv_paths_are_guarded() {
        assert_eq!(jsonkv_method("/jsonkv.v1.JsonKv/Insert"), Some("Insert"));
        assert_eq!(jsonkv_method("/grpc.health.v1.Health/Check"), None);
        assert_eq!(jsonkv_method("/jsonkv.v1.JsonKvX/Get"), None);
    }
}
