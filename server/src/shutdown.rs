//! `Shutdown`: the signal every long-lived loop listens to. Cloned into each watch stream; the
//! server flips it once, and every stream ends with UNAVAILABLE.

use tokio::sync::watch;

/// Sending half, owned by the server.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Receiving half, cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// Completes once shutdown has been triggered (at once if it already was), or when the
    /// trigger is gone, since nobody could trigger it any more.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}
