//! [`FirstBytes`]: a connection that must send its first bytes by a deadline.
//!
//! hyper waits for a client's HTTP/2 preface as long as the client cares to take, and
//! keepalive pings cannot start before it: a client that connects and sends half a preface
//! would hold its socket forever. Wrapped in this, its next read fails once the deadline
//! passes, and hyper closes the connection. A connection that turns out to speak HTTP/1.1 is
//! left to hyper's own deadline for the request head.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::accept::ConnectionCounts;

/// What a client must have sent for its connection to count as started: the HTTP/2 client
/// preface (24 bytes) and the header of its first frame (9), which must be SETTINGS.
pub const HTTP2_START: usize = 24 + 9;

/// How the HTTP/2 preface begins. A connection whose first bytes differ speaks HTTP/1.1,
/// whose request head hyper itself must read within the same deadline.
const PREFACE_START: &[u8] = b"PRI ";

/// `io`, whose reads fail with `TimedOut` if fewer than `needed` bytes have arrived by the
/// deadline. Once they have (or the client closed), it is `io` unchanged.
#[derive(Debug)]
pub struct FirstBytes<IO> {
    io: IO,
    /// `None` once the bytes arrived, or the deadline has been reported.
    deadline: Option<Pin<Box<Sleep>>>,
    needed: usize,
    /// Bytes of [`PREFACE_START`] seen so far.
    matched: usize,
    counts: ConnectionCounts,
}

impl<IO> FirstBytes<IO> {
    pub fn new(io: IO, needed: usize, deadline: Instant, counts: ConnectionCounts) -> Self {
        FirstBytes {
            io,
            deadline: Some(Box::pin(tokio::time::sleep_until(deadline))),
            needed,
            matched: 0,
            counts,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for FirstBytes<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let Some(deadline) = &mut this.deadline else {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        };
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                this.needed = this.needed.saturating_sub(read);
                let mut http1 = false;
                for byte in &buf.filled()[before..] {
                    if this.matched == PREFACE_START.len() {
                        break;
                    }
                    if *byte != PREFACE_START[this.matched] {
                        http1 = true;
                        break;
                    }
                    this.matched += 1;
                }
                // Zero bytes is the end of the stream: nothing more to wait for.
                if this.needed == 0 || read == 0 || http1 {
                    this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => {
                ready!(deadline.as_mut().poll(cx));
                this.deadline = None;
                this.counts.count_timeout();
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client did not start HTTP/2 within the handshake timeout",
                )))
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FirstBytes<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn wrapped(
        needed: usize,
        within: Duration,
    ) -> (
        FirstBytes<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
        ConnectionCounts,
    ) {
        let (server, client) = tokio::io::duplex(1024);
        let counts = ConnectionCounts::new(1);
        let io = FirstBytes::new(server, needed, Instant::now() + within, counts.clone());
        (io, client, counts)
    }

    #[tokio::test(start_paused = true)]
    async fn too_few_bytes_by_the_deadline_fail_the_read() {
        let (mut io, mut client, counts) = wrapped(10, Duration::from_secs(5));
        client.write_all(b"PRI *").await.unwrap();
        let mut buf = [0; 16];
        assert_eq!(io.read(&mut buf).await.unwrap(), 5);
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(counts.timed_out(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_http1_request_is_left_to_hyper_after_its_first_bytes() {
        let (mut io, mut client, counts) = wrapped(10, Duration::from_secs(5));
        client.write_all(b"PUT").await.unwrap();
        let mut buf = [0; 16];
        assert_eq!(io.read(&mut buf).await.unwrap(), 3);
        // "PUT" could still be "PRI": until it is not, the deadline holds.
        client.write_all(b" ").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 1);
        tokio::time::sleep(Duration::from_secs(60)).await;
        client.write_all(b"/").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 1);
        assert_eq!(counts.timed_out(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn half_an_http2_preface_still_times_out() {
        let (mut io, mut client, counts) = wrapped(HTTP2_START, Duration::from_secs(5));
        client.write_all(b"PRI * HTTP/2.0").await.unwrap();
        let mut buf = [0; 64];
        assert_eq!(io.read(&mut buf).await.unwrap(), 14);
        assert_eq!(
            io.read(&mut buf).await.unwrap_err().kind(),
            io::ErrorKind::TimedOut
        );
        assert_eq!(counts.timed_out(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn once_the_bytes_arrived_the_connection_may_idle() {
        let (mut io, mut client, counts) = wrapped(10, Duration::from_secs(5));
        client.write_all(b"1234567890").await.unwrap();
        let mut buf = [0; 16];
        assert_eq!(io.read(&mut buf).await.unwrap(), 10);
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            client.write_all(b"later").await.unwrap();
            client
        });
        assert_eq!(io.read(&mut buf).await.unwrap(), 5);
        drop(late.await.unwrap());
        assert_eq!(counts.timed_out(), 0);
    }
}
