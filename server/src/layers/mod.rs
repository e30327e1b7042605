//! The tower layers around the gRPC services, outermost first as `server.rs` stacks them:
//! [`metrics`] counts and times every call, [`timeout`] ends one that takes too long, and
//! [`auth`] checks the token of every JsonKv call. [`health_watch`] wraps the health service
//! alone, counting its watches against the watcher limits. [`http_metrics`] counts the HTTP
//! API's requests.

pub mod auth;
pub mod health_watch;
pub mod http_metrics;
pub mod metrics;
pub mod timeout;
