//! The server's background work — the suppression list's and the experiment
//! snapshots' refreshers — owned by the server instead of detached: on shutdown each
//! stops (a run in progress is cancelled, as a request would be) and
//! [`Background::shutdown`] returns once every task has ended.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The background tasks of one server.
pub struct Background {
    stop: watch::Sender<bool>,
    tasks: Mutex<JoinSet<()>>,
}

impl Default for Background {
    fn default() -> Self {
        Background {
            stop: watch::channel(false).0,
            tasks: Mutex::new(JoinSet::new()),
        }
    }
}

impl Background {
    /// Runs `run` every `period` (the first time at once, or after one period with
    /// `wait_first`) until shutdown. Missed periods are not made up.
    pub fn every<F, Fut>(&self, name: &'static str, period: Duration, wait_first: bool, mut run: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let mut stop = self.stop.subscribe();
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            if wait_first {
                tick.tick().await;
            }
            loop {
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => break,
                    _ = tick.tick() => {}
                }
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => break,
                    () = run() => {}
                }
            }
            tracing::debug!(task = name, "background task stopped");
        });
    }

    /// Stops every task and waits until they have ended.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        while tasks.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test]
    async fn tasks_run_until_shutdown_and_a_run_in_progress_is_cancelled() {
        let b = Background::default();
        let runs = Arc::new(AtomicU64::new(0));
        let r = runs.clone();
        b.every("count", Duration::from_millis(5), false, move || {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
            }
        });
        // A run that never ends on its own.
        b.every("stuck", Duration::from_millis(5), false, || {
            std::future::pending::<()>()
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        tokio::time::timeout(Duration::from_secs(5), b.shutdown())
            .await
            .expect("shutdown ends although a run was stuck");
        let n = runs.load(Ordering::SeqCst);
        assert!(n >= 2, "{n} runs");
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(runs.load(Ordering::SeqCst), n, "no run after shutdown");
    }
}
