//! Retrying a call to a gRPC server, for the server's etcd client and the jsonkv client alike:
//! whether a failed call never left.

use std::error::Error;

/// Whether a call failed before its request left: tonic reports a connection that could not be
/// made (refused, timed out, TLS handshake failed) with a `ConnectError` in the error's source
/// chain. Such a call is safe to send again, even a write, since no server saw it.
pub fn never_sent(err: &(dyn Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(error) = source {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        source = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;
    use std::io;

    /// An error that wraps another, as transports wrap the cause of a failure.
    #[derive(Debug)]
    struct Wrapped(Box<dyn Error + Send + Sync>);

    impl fmt::Display for Wrapped {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "wrapped: {}", self.0)
        }
    }

    impl Error for Wrapped {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(self.0.as_ref())
        }
    }

    fn refused() -> io::Error {
        io::Error::from(io::ErrorKind::ConnectionRefused)
    }

    #[test]
    fn a_connect_error_anywhere_in_the_sources_means_never_sent() {
        let connect = || tonic::ConnectError(Box::new(refused()));
        assert!(never_sent(&connect()));
        assert!(never_sent(&Wrapped(Box::new(connect()))));
        assert!(never_sent(&Wrapped(Box::new(Wrapped(Box::new(connect()))))));
    }

    #[test]
    fn other_failures_may_have_been_sent() {
        assert!(!never_sent(&refused()));
        assert!(!never_sent(&Wrapped(Box::new(Wrapped(
            Box::new(refused())
        )))));
        assert!(!never_sent(&tonic::Status::unavailable("connection reset")));
    }
}
