//! Login throttling: failed attempts per account and per IP in a sliding
//! window. One trait; in-process now, Redis when instances share it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::revocation::BoxFuture;

/// Counts failed logins and says when a key must wait.
pub trait LoginThrottle: Send + Sync + 'static {
    /// If any of `keys` is over the limit at `now`, the seconds to wait.
    fn blocked_for<'a>(&'a self, keys: &'a [String], now: i64) -> BoxFuture<'a, Option<u64>>;
    /// Records one failed attempt for each of `keys`.
    fn record_failure<'a>(&'a self, keys: &'a [String], now: i64) -> BoxFuture<'a, ()>;
}

/// The single-process throttle.
pub struct InProcessThrottle {
    max_failures: usize,
    window: i64,
    failures: Mutex<HashMap<String, VecDeque<i64>>>,
}

impl InProcessThrottle {
    /// At most `max_failures` failures per key within `window` seconds.
    pub fn new(max_failures: u32, window: i64) -> Self {
        InProcessThrottle {
            max_failures: max_failures as usize,
            window: window.max(1),
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn prune(&self, times: &mut VecDeque<i64>, now: i64) {
        while times.front().is_some_and(|t| *t <= now - self.window) {
            times.pop_front();
        }
    }
}

impl LoginThrottle for InProcessThrottle {
    fn blocked_for<'a>(&'a self, keys: &'a [String], now: i64) -> BoxFuture<'a, Option<u64>> {
        Box::pin(async move {
            let Ok(mut map) = self.failures.lock() else {
                return Some(1);
            };
            keys.iter()
                .filter_map(|key| {
                    let times = map.get_mut(key)?;
                    self.prune(times, now);
                    if times.len() >= self.max_failures {
                        let oldest = *times.front()?;
                        Some(
                            u64::try_from(oldest + self.window - now)
                                .unwrap_or(1)
                                .max(1),
                        )
                    } else {
                        None
                    }
                })
                .max()
        })
    }

    fn record_failure<'a>(&'a self, keys: &'a [String], now: i64) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Ok(mut map) = self.failures.lock() else {
                return;
            };
            if map.len() > 100_000 {
                map.retain(|_, times| times.back().is_some_and(|t| *t > now - self.window));
            }
            for key in keys {
                let times = map.entry(key.clone()).or_default();
                self.prune(times, now);
                times.push_back(now);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blocks_after_max_failures_until_the_window_passes() {
        let t = InProcessThrottle::new(3, 60);
        let keys = vec!["acct:a".to_owned(), "ip:1".to_owned()];
        for i in 0..3 {
            assert_eq!(t.blocked_for(&keys, 100 + i).await, None);
            t.record_failure(&keys, 100 + i).await;
        }
        assert_eq!(t.blocked_for(&keys, 110).await, Some(50));
        assert_eq!(t.blocked_for(&["acct:b".to_owned()], 110).await, None);
        assert_eq!(
            t.blocked_for(&keys, 160).await,
            None,
            "oldest failure left the window"
        );
    }
}
