//! The transport under the gRPC services, owned here rather than left to tonic's server so
//! that a client cannot hold what it likes: [`accept`] takes connections under a cap and backs
//! off when out of file descriptors, [`first_bytes`] gives each connection a deadline to start
//! speaking HTTP/2, [`budget`] bounds the request bytes held before messages are complete, and
//! [`connection`] serves each connection with hyper (TLS first, if on).

pub mod accept;
pub mod budget;
pub mod connection;
pub mod first_bytes;
