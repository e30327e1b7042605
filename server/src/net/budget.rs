//! [`RequestBuffers`]: the request bytes the server holds before their messages are complete,
//! bounded per connection and in total.
//!
//! A gRPC request is decoded once its whole message has arrived; until then tonic keeps what
//! came so far. HTTP/2 flow control does not bound that, because tonic keeps reading: a client
//! could start a large message on every stream of a connection and finish none of them. So
//! every request body is counted while it is held, and a frame that would take its connection
//! (or the server) past the bound fails that request with RESOURCE_EXHAUSTED. Failing, rather
//! than waiting for room, cannot deadlock: waiting requests that each hold part of the budget
//! would wait for each other until their timeout.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Status;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The server-wide pool of request bytes, and what each connection may take of it. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct RequestBuffers {
    server: Arc<Pool>,
    per_connection: usize,
}

/// One connection's share: every request body of the connection is counted here and in the
/// server's pool.
#[derive(Debug, Clone)]
pub struct ConnectionBuffers {
    server: Arc<Pool>,
    connection: Arc<Pool>,
}

#[derive(Debug)]
struct Pool {
    used: AtomicUsize,
    max: usize,
    /// The flag that sets `max`, for the message a refused client sees.
    flag: &'static str,
}

impl Pool {
    fn new(max: usize, flag: &'static str) -> Pool {
        Pool {
            used: AtomicUsize::new(0),
            max,
            flag,
        }
    }

    /// Takes `bytes` if they fit under the bound.
    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&after| after <= self.max)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

impl RequestBuffers {
    pub fn new(total: usize, per_connection: usize) -> RequestBuffers {
        RequestBuffers {
            server: Arc::new(Pool::new(total, "--max-request-buffer")),
            per_connection,
        }
    }

    /// The budget of a new connection.
    pub fn connection(&self) -> ConnectionBuffers {
        ConnectionBuffers {
            server: Arc::clone(&self.server),
            connection: Arc::new(Pool::new(
                self.per_connection,
                "--max-request-buffer-per-connection",
            )),
        }
    }

    /// Request bytes held now, over all connections.
    pub fn held(&self) -> usize {
        self.server.used.load(Ordering::Acquire)
    }
}

impl ConnectionBuffers {
    /// `body`, counted against this connection's budget and the server's while it is held.
    pub fn count<B>(&self, body: B) -> CountedBody<B> {
        CountedBody {
            inner: body,
            held: 0,
            budget: self.clone(),
        }
    }

    /// Takes `bytes` from both pools, or from neither; the refusal names the bound.
    fn take(&self, bytes: usize) -> Result<(), Status> {
        if !self.connection.take(bytes) {
            return Err(refusal(&self.connection, "on this connection"));
        }
        if !self.server.take(bytes) {
            self.connection.give_back(bytes);
            return Err(refusal(&self.server, "on this server"));
        }
        Ok(())
    }

    fn give_back(&self, bytes: usize) {
        self.connection.give_back(bytes);
        self.server.give_back(bytes);
    }
}

fn refusal(pool: &Pool, scope: &str) -> Status {
    Status::resource_exhausted(format!(
        "unfinished requests {scope} would hold more than {} bytes ({}); send large requests fewer at a time",
        pool.max, pool.flag
    ))
}

pin_project! {
    /// A request body whose bytes are counted from their arrival until it is dropped, which
    /// tonic does once it has decoded the message.
    pub struct CountedBody<B> {
        #[pin]
        inner: B,
        held: usize,
        budget: ConnectionBuffers,
    }

    impl<B> PinnedDrop for CountedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            this.budget.give_back(*this.held);
        }
    }
}

impl<B> Body for CountedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(err)) => return Poll::Ready(Some(Err(err.into()))),
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref() {
            if let Err(status) = this.budget.take(data.len()) {
                return Poll::Ready(Some(Err(status.into())));
            }
            *this.held += data.len();
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::convert::Infallible;

    type Frames = futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>;

    /// A body of `chunks` data frames, then its end.
    fn body(chunks: &[usize]) -> http_body_util::StreamBody<Frames> {
        let frames: Vec<_> = chunks
            .iter()
            .map(|&n| Ok(Frame::data(Bytes::from(vec![0; n]))))
            .collect();
        http_body_util::StreamBody::new(futures::stream::iter(frames))
    }

    #[tokio::test]
    async fn a_body_past_its_connections_bound_fails_and_gives_back_what_it_held() {
        let buffers = RequestBuffers::new(1000, 100);
        let connection = buffers.connection();
        let mut first = connection.count(body(&[60]));
        first.frame().await.unwrap().unwrap();
        let mut second = connection.count(body(&[30, 30]));
        second.frame().await.unwrap().unwrap();
        let err = second.frame().await.unwrap().unwrap_err();
        let status = err.downcast::<Status>().unwrap();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().contains("on this connection")
                && status.message().contains("100 bytes"),
            "{}",
            status.message()
        );
        assert_eq!(buffers.held(), 90);
        drop(second);
        drop(first);
        assert_eq!(buffers.held(), 0);
        // Another connection has a budget of its own.
        let mut other = buffers.connection().count(body(&[100]));
        other.frame().await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn the_server_bound_holds_over_all_connections() {
        let buffers = RequestBuffers::new(150, 100);
        let mut a = buffers.connection().count(body(&[100]));
        a.frame().await.unwrap().unwrap();
        let mut b = buffers.connection().count(body(&[60]));
        let status = b
            .frame()
            .await
            .unwrap()
            .unwrap_err()
            .downcast::<Status>()
            .unwrap();
        assert!(
            status.message().contains("on this server"),
            "{}",
            status.message()
        );
        assert_eq!(buffers.held(), 100);
    }
}
