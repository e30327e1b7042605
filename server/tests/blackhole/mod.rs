//! A TCP forwarder that can go silent, to play a peer that vanished without closing its
//! connection (its host died, its network was cut).
#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A TCP forwarder that can go silent: after `cut`, it forwards nothing more in either
/// direction but keeps both connections open, as a peer whose host died or whose network was
/// cut looks to the other side. Its tasks stop when it is dropped.
pub struct BlackHole {
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl BlackHole {
    pub async fn start(upstream: SocketAddr) -> BlackHole {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, cut_rx) = watch::channel(false);
        let accept = tokio::spawn(async move {
            let mut pumps = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(upstream).await.unwrap();
                // As tonic's own sockets: without it, Nagle's algorithm holds a small frame
                // back until the kernel acknowledges the last one, which on tokio's paused
                // clock lets a keepalive timeout fire while a ping's answer is on its way.
                for socket in [&client, &server] {
                    socket.set_nodelay(true).unwrap();
                }
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                pumps.spawn(pump(client_read, server_write, cut_rx.clone()));
                pumps.spawn(pump(server_read, client_write, cut_rx.clone()));
            }
            // Dropping the JoinSet (with this task, on abort) stops the pumps.
        });
        BlackHole { addr, cut, accept }
    }

    pub fn cut(&self) {
        self.cut.send_replace(true);
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn silenced(cut: &mut watch::Receiver<bool>) {
    let _ = cut.wait_for(|cut| *cut).await;
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            () = silenced(&mut cut) => {
                // Silent from now on, holding both sockets open.
                std::future::pending::<()>().await;
            }
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            },
        }
    }
}
