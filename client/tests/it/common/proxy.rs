//! A TCP proxy whose connections can be cut at once, to break a client's connection the way a
//! crash or a network failure does (no gRPC status, no HTTP/2 GOAWAY), while the server lives on;
//! or frozen, so that bytes stop flowing but every connection stays open, the way a hung server
//! or a black-holed network looks to a client.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Proxy {
    addr: SocketAddr,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
    frozen: watch::Sender<bool>,
}

impl Proxy {
    /// Listens on a free port and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (frozen, _) = watch::channel(false);
        let accept = tokio::spawn({
            let connections = connections.clone();
            let frozen = frozen.clone();
            async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    let (up, down) = (frozen.subscribe(), frozen.subscribe());
                    let forward = tokio::spawn(async move {
                        if let Ok(outbound) = TcpStream::connect(target).await {
                            let (from_client, to_client) = inbound.into_split();
                            let (from_server, to_server) = outbound.into_split();
                            tokio::join!(
                                pump(from_client, to_server, up),
                                pump(from_server, to_client, down)
                            );
                        }
                    });
                    connections.lock().unwrap().push(forward);
                }
            }
        });
        Proxy {
            addr,
            connections,
            accept,
            frozen,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops every open connection on the floor; new ones are still accepted.
    pub fn cut(&self) {
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    /// Stops forwarding, in both directions, on every connection (open or new): what is sent is
    /// read and held, and nothing reaches the other side until [`Proxy::thaw`].
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

/// Copies `from` to `to` until either side closes, holding bytes back while frozen.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if frozen.wait_for(|frozen| !frozen).await.is_err() {
            break;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    // Pass the close on, as copy_bidirectional would.
    let _ = to.shutdown().await;
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
