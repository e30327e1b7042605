//! The HTTP/JSON API and the web console, served beside gRPC. Layout:
//! - [`call`]: [`Api`], the routes' shared state, and how an HTTP request becomes a call of
//!   the gRPC service (so the same checks, tokens, scopes and limits apply).
//! - [`problem`]: errors as statuses and JSON bodies.
//! - [`json`]: the JSON written for keys, pages and watch events.
//! - [`kv`]: `/v1/kv`. [`txn`]: `/v1/txn`. [`watch`]: `/v1/watch`, server-sent events.
//! - [`console`]: the embedded web console at `/`.
//!
//! [`router`] assembles them; [`GrpcOrHttp`] sends each request of a shared port to gRPC or
//! to the API by its content type, as etcd's gateway shares 2379.

pub mod call;
pub mod console;
pub mod json;
pub mod kv;
pub mod problem;
pub mod txn;
pub mod watch;

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use futures::future::{Either, Map};
use futures::FutureExt;
use http::{HeaderValue, Method, StatusCode};
use tonic::body::Body as GrpcBody;
use tower::Service;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use call::Api;
use problem::Problem;

use crate::layers::http_metrics::HttpMetrics;

/// The API's routes and the console, counted by `metrics`; with `cors_origins`, browsers on
/// those origins may call it too (CORS is off otherwise).
pub fn router(api: Api, metrics: HttpMetrics, cors_origins: &[HeaderValue]) -> Router {
    let router = Router::new()
        .route("/v1/kv", get(kv::list))
        .route("/v1/kv/", axum::routing::any(kv::no_key))
        .route(
            "/v1/kv/{*key}",
            get(kv::get)
                .put(kv::put)
                .delete(kv::delete)
                .patch(kv::patch),
        )
        .route("/v1/txn", post(txn::txn))
        .route("/v1/watch", get(watch::watch))
        .route("/", get(console::index))
        .route("/console/{file}", get(console::asset))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(api);
    let router = if cors_origins.is_empty() {
        router
    } else {
        router.layer(cors(cors_origins))
    };
    router.layer(middleware::from_fn_with_state(metrics, count))
}

/// Browsers on `origins` may call the API with a token, conditional headers and the watch's
/// resume header, and read the revisions the answers carry.
fn cors(origins: &[HeaderValue]) -> CorsLayer {
    use http::header;
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::POST,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            http::HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([
            header::ETAG,
            http::HeaderName::from_static("jsonkv-revision"),
            http::HeaderName::from_static("jsonkv-create-revision"),
            http::HeaderName::from_static("jsonkv-mod-revision"),
            http::HeaderName::from_static("jsonkv-version"),
            http::HeaderName::from_static("jsonkv-lease"),
            http::HeaderName::from_static("jsonkv-store-id"),
        ])
        .max_age(std::time::Duration::from_secs(600))
}

async fn count(State(metrics): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.observe(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

async fn no_route(request: Request) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        tonic::Code::NotFound,
        format!(
            "no route {} {}: the API is /v1/kv/{{key}}, /v1/kv?prefix=, /v1/txn and /v1/watch",
            request.method(),
            request.uri().path()
        ),
    )
}

async fn method_not_allowed(request: Request) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        tonic::Code::Unimplemented,
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// For a port that does not serve the HTTP API: every HTTP request gets 404 and `message`,
/// which says where it went, or that it is off.
pub fn elsewhere(message: String) -> Router {
    Router::new().fallback(move || {
        let message = message.clone();
        async move { Problem::new(StatusCode::NOT_FOUND, tonic::Code::NotFound, message) }
    })
}

/// One port's service: gRPC calls (content type `application/grpc…`) to `grpc`, every other
/// request to `http`; with no `http`, every request to `grpc`, unlooked at.
#[derive(Clone)]
pub struct GrpcOrHttp<G> {
    grpc: G,
    http: Option<Router>,
}

impl<G> GrpcOrHttp<G> {
    pub fn new(grpc: G, http: Option<Router>) -> Self {
        GrpcOrHttp { grpc, http }
    }
}

type HttpAnswer = Result<Response, Infallible>;

impl<G> Service<http::Request<GrpcBody>> for GrpcOrHttp<G>
where
    G: Service<http::Request<GrpcBody>, Response = http::Response<GrpcBody>, Error = Infallible>,
{
    type Response = http::Response<GrpcBody>;
    type Error = Infallible;
    #[allow(clippy::type_complexity)]
    type Future = Either<
        G::Future,
        Map<
            <Router as Service<http::Request<GrpcBody>>>::Future,
            fn(HttpAnswer) -> Result<http::Response<GrpcBody>, Infallible>,
        >,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        match (self.grpc.poll_ready(cx), &mut self.http) {
            (Poll::Ready(Ok(())), Some(http)) => {
                <Router as Service<http::Request<GrpcBody>>>::poll_ready(http, cx)
            }
            (other, _) => other,
        }
    }

    fn call(&mut self, request: http::Request<GrpcBody>) -> Self::Future {
        let http = self.http.as_mut().filter(|_| {
            !request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"))
        });
        match http {
            None => Either::Left(self.grpc.call(request)),
            Some(http) => {
                let into_grpc_body: fn(HttpAnswer) -> Result<http::Response<GrpcBody>, Infallible> =
                    |answer| answer.map(|response| response.map(GrpcBody::new));
                Either::Right(http.call(request).map(into_grpc_body))
            }
        }
    }
}
