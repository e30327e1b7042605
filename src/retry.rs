//! Retrying a call to a gRPC server, for the server's etcd client and the jsonkv client alike:
//! whether a failed call never left, and how long to wait between attempts.

use std::collections::hash_map::RandomState;
use std::error::Error;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

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

/// Exponential backoff between attempts, with jitter so that many clients of one restarted
/// server do not all come back in the same instant.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Steps that start at `initial` and double up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.min(max);
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// How long to wait before the next attempt: between half and all of the current step,
    /// which then doubles up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = step.saturating_mul(2).min(self.max);
        let half = step / 2;
        half + half.mul_f64(random_fraction())
    }

    /// The connection works again: the next failure starts from the initial step.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// A number in [0, 1) that differs between calls; jitter needs no better randomness than the
/// per-hasher random keys std already has.
fn random_fraction() -> f64 {
    let bits = RandomState::new().build_hasher().finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
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

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    /// Asserts that `delay` is within [half, full] of `step`.
    fn assert_jittered(delay: Duration, step: Duration) {
        assert!(
            delay >= step / 2 && delay <= step,
            "{delay:?} not in [{:?}, {step:?}]",
            step / 2
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut backoff = Backoff::new(ms(100), ms(400));
        for step in [100, 200, 400, 400, 400] {
            assert_jittered(backoff.next_delay(), ms(step));
        }
    }

    #[test]
    fn backoff_starts_again_after_a_reset() {
        let mut backoff = Backoff::new(ms(100), ms(2000));
        for _ in 0..10 {
            backoff.next_delay();
        }
        assert_jittered(backoff.next_delay(), ms(2000));
        backoff.reset();
        assert_jittered(backoff.next_delay(), ms(100));
        assert_jittered(backoff.next_delay(), ms(200));
    }

    #[test]
    fn backoff_delays_are_jittered_within_the_step() {
        let delays: Vec<_> = (0..50)
            .map(|_| {
                let delay = Backoff::new(ms(100), ms(100)).next_delay();
                assert_jittered(delay, ms(100));
                delay
            })
            .collect();
        assert!(
            delays.iter().any(|d| *d != delays[0]),
            "no jitter: {delays:?}"
        );
    }

    #[test]
    fn an_initial_step_above_the_cap_is_capped() {
        let mut backoff = Backoff::new(ms(500), ms(100));
        assert_jittered(backoff.next_delay(), ms(100));
        let mut backoff = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(backoff.next_delay(), Duration::ZERO);
    }
}
