//! Announcements between instances over Redis pub/sub: "the signing keys
//! changed", so that every instance reloads them at once instead of at its
//! next 2-second database sync (which stays, as the fallback when Redis
//! is away). Revocations need no announcement: they are read from the
//! shared denylist itself.
//!
//! The channel is `<redis_prefix>events`; a message is one word (`keys`).
//! A lost message costs at most the sync interval, never correctness.

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt as _;
use secrecy::ExposeSecret as _;

use crate::infra::config::Settings;

/// How long a publish may take before it is given up (and logged).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest wait between attempts to subscribe again.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// What an announcement says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announcement {
    /// A key was rotated in: reload the key set.
    KeysChanged,
}

impl Announcement {
    fn word(self) -> &'static str {
        match self {
            Announcement::KeysChanged => "keys",
        }
    }

    fn parse(word: &str) -> Option<Self> {
        (word == "keys").then_some(Announcement::KeysChanged)
    }
}

/// Publishes and listens for announcements on the deployment's channel.
#[derive(Clone)]
pub struct Announcer {
    client: redis::Client,
    channel: String,
}

impl std::fmt::Debug for Announcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client holds the URL, password included.
        f.debug_struct("Announcer")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Announcer {
    /// The announcer of a deployment with Redis; `None` without one. A URL
    /// the client cannot parse has already been refused by the denylist.
    pub fn from_settings(settings: &Settings) -> Option<Announcer> {
        let url = settings.redis_url.as_ref()?;
        match redis::Client::open(url.expose_secret()) {
            Ok(client) => Some(Announcer {
                client,
                channel: format!("{}events", settings.redis_prefix),
            }),
            Err(e) => {
                tracing::error!(cause = ?e.kind(), "redis_url: announcements off");
                None
            }
        }
    }

    /// Tells every instance; a failure is logged (the others then learn it
    /// from their periodic reload).
    pub async fn publish(&self, what: Announcement) {
        let sending = async {
            let mut conn = self.client.get_multiplexed_async_connection().await?;
            redis::cmd("PUBLISH")
                .arg(&self.channel)
                .arg(what.word())
                .query_async::<i64>(&mut conn)
                .await
        };
        match tokio::time::timeout(PUBLISH_TIMEOUT, sending).await {
            Ok(Ok(listeners)) => {
                tracing::info!(announcement = what.word(), listeners, "announced");
            }
            Ok(Err(e)) => tracing::warn!(
                announcement = what.word(),
                cause = ?e.kind(),
                "announcement not sent; other instances reload at their next sync"
            ),
            Err(_) => tracing::warn!(
                announcement = what.word(),
                "announcement timed out; other instances reload at their next sync"
            ),
        }
    }

    /// Listens for ever, calling `on` for each announcement; subscribes
    /// again after a lost connection, waiting 1 s, 2 s, 4 s … up to 30 s.
    pub async fn listen<F, Fut>(self, on: F)
    where
        F: Fn(Announcement) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut retry = Duration::from_secs(1);
        loop {
            match self.client.get_async_pubsub().await {
                Ok(mut pubsub) => match pubsub.subscribe(&self.channel).await {
                    Ok(()) => {
                        tracing::info!(channel = %self.channel, "listening for announcements");
                        retry = Duration::from_secs(1);
                        let mut messages = pubsub.into_on_message();
                        while let Some(message) = messages.next().await {
                            let word: String = message.get_payload().unwrap_or_default();
                            match Announcement::parse(&word) {
                                Some(what) => {
                                    tracing::info!(
                                        announcement = what.word(),
                                        "announcement received"
                                    );
                                    on(what).await;
                                }
                                None => tracing::debug!("unknown announcement ignored"),
                            }
                        }
                        tracing::warn!("announcement channel lost; subscribing again");
                    }
                    Err(e) => {
                        tracing::warn!(cause = ?e.kind(), "cannot subscribe to announcements")
                    }
                },
                Err(e) => tracing::warn!(cause = ?e.kind(), "cannot reach Redis for announcements"),
            }
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(MAX_RETRY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_are_one_known_word() {
        assert_eq!(
            Announcement::parse(Announcement::KeysChanged.word()),
            Some(Announcement::KeysChanged)
        );
        for other in ["", "KEYS", "keys ", "revoke", "ké"] {
            assert_eq!(Announcement::parse(other), None, "{other:?}");
        }
    }
}
