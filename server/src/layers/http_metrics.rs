//! [`HttpMetrics`]: the HTTP API's requests, counted by route, method and status and timed by
//! route (a watch until its stream is open), beside the gRPC calls' own families. Routes are
//! the API's fixed patterns, so a client cannot grow the label set with made-up paths.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

impl Default for HttpMetrics {
    fn default() -> HttpMetrics {
        HttpMetrics {
            requests: Family::default(),
            // 100 µs .. ~6.5 s, as the gRPC calls'.
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_1, 2.0, 17))
            }),
        }
    }
}

/// The API's routes, as labels; anything else is `other`.
pub const ROUTES: [&str; 7] = [
    "/v1/kv/{*key}",
    "/v1/kv",
    "/v1/txn",
    "/v1/watch",
    "/",
    "/console/{file}",
    "/v1/kv/",
];

impl HttpMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "jsonkv_http_requests",
            "HTTP API requests by route, method and status",
            self.requests.clone(),
        );
        registry.register(
            "jsonkv_http_request_duration_seconds",
            "HTTP API requests: time until the response starts (a watch: until its stream is open)",
            self.duration.clone(),
        );
    }

    /// Counts one request of `route` (as the router matched it) that answered `status`.
    pub fn observe(&self, route: &str, method: &http::Method, status: u16, seconds: f64) {
        let route = ROUTES
            .iter()
            .copied()
            .find(|r| *r == route)
            .unwrap_or("other");
        let method = match *method {
            http::Method::GET => "GET",
            http::Method::HEAD => "HEAD",
            http::Method::PUT => "PUT",
            http::Method::DELETE => "DELETE",
            http::Method::PATCH => "PATCH",
            http::Method::POST => "POST",
            http::Method::OPTIONS => "OPTIONS",
            _ => "other",
        };
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
        self.duration
            .get_or_create(&RouteLabels { route })
            .observe(seconds);
    }
}
