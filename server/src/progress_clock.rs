//! [`ProgressClock`]: when watch streams look whether they owe their client a progress notice.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{interval_at, Instant, MissedTickBehavior};

use crate::shutdown::Shutdown;
use crate::store::Store;

/// When watch streams look whether they owe their client a progress notice: one clock for all
/// of them. It ticks every `--progress-interval-ms` while the store's revision moves, and once
/// more after it stops (a stream that still had an event on its way at the last change's tick
/// gets its answer then); after that no stream's answer (`Subscription::progress`) can change,
/// so a quiet store wakes no watcher. One clock rather than a timer per stream: ten thousand
/// idle watchers would otherwise mean ten thousand timers firing every period, and more memory
/// per watcher.
#[derive(Clone)]
pub struct ProgressClock {
    /// `None` when notices are off.
    ticks: Option<watch::Receiver<()>>,
}

impl ProgressClock {
    /// Starts the clock's task, which ends on shutdown, once no stream or service holds the
    /// clock any more, or with the store (it does not keep the store open). A zero `period`
    /// turns notices off.
    pub fn start(store: &Store, period: Duration, mut shutdown: Shutdown) -> ProgressClock {
        if period.is_zero() {
            return ProgressClock { ticks: None };
        }
        let (tx, rx) = watch::channel(());
        let mut last = store.revision();
        let store = store.downgrade();
        tokio::spawn(async move {
            let mut ticker = interval_at(Instant::now() + period, period);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            // Whether the revision moved in the period before the last tick; at the start, as
            // if it had, so that a stream opened on a quiet store gets one look.
            let mut moved_before = true;
            loop {
                tokio::select! {
                    () = shutdown.wait() => break,
                    () = tx.closed() => break,
                    _ = ticker.tick() => {}
                }
                let Some(now) = store.revision() else { break };
                let moved = now != last;
                if moved || moved_before {
                    tx.send_replace(());
                }
                (last, moved_before) = (now, moved);
            }
        });
        ProgressClock { ticks: Some(rx) }
    }

    /// This stream's own view of the clock, counting ticks from now.
    pub fn for_stream(&self) -> ProgressClock {
        let mut ticks = self.ticks.clone();
        if let Some(ticks) = &mut ticks {
            ticks.mark_unchanged();
        }
        ProgressClock { ticks }
    }

    /// The next tick; never, when notices are off or the clock has stopped.
    pub async fn tick(&mut self) {
        if let Some(ticks) = &mut self.ticks {
            if ticks.changed().await.is_ok() {
                return;
            }
        }
        std::future::pending().await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::Config;
    use crate::store::Store;

    /// Lets one period go by (on tokio's paused clock) and says whether the clock ticked for
    /// `stream` meanwhile.
    async fn ticked(stream: &mut ProgressClock) -> bool {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let ticks = stream.ticks.as_mut().unwrap();
        let ticked = ticks.has_changed().unwrap();
        ticks.mark_unchanged();
        ticked
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_ticks_while_the_store_changes_and_once_after() {
        let store = Store::in_memory(&Config::default());
        let (_trigger, shutdown) = crate::shutdown::channel();
        let clock = ProgressClock::start(&store, Duration::from_secs(1), shutdown);
        let mut stream = clock.for_stream();
        // Half a period off the clock's beat, so each wait spans exactly one tick.
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Quiet from the start: the one tick after, then none.
        assert!(ticked(&mut stream).await);
        assert!(!ticked(&mut stream).await);
        assert!(!ticked(&mut stream).await);
        store.put("k".into(), json!(1), None).await.unwrap();
        assert!(ticked(&mut stream).await, "the store changed");
        assert!(ticked(&mut stream).await, "once after");
        assert!(!ticked(&mut stream).await);
    }
}
