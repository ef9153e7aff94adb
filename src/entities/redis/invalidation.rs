//! Live invalidation: the subscriber task and the message format.
//!
//! Writers `PUBLISH` on the channel (default `portcullis:invalidate`) either
//! - plain text: one uid in Cedar syntax per line (`Portal::User::"bea"`), or `*` for
//!   "everything may have changed"; or
//! - JSON: `{"id": "<nonce>", "uids": ["Portal::User::\"bea\""]}` or
//!   `{"id": "<nonce>", "all": true}`. A message with an `id` is acknowledged on
//!   `<channel>:ack` with the id as payload once the cache has dropped those uids;
//!   `portcullis entities` waits for these acknowledgements, so when it returns, the
//!   revoked data is gone from every subscribed cache.
//!
//! A message that cannot be understood flushes the whole cache: dropping too much
//! costs a few Redis reads, keeping a revoked grant costs a breach.

use std::time::Duration;

use cedar_policy::EntityUid;
use futures_util::StreamExt;
use std::sync::Arc;

use super::store::{self, Target};
use super::{Shared, DOWN, LIVE};

/// What the subscriber listens to.
pub struct Settings {
    pub channel: String,
    pub keyspace: bool,
}

/// The channel acknowledgements go to.
pub fn ack_channel(channel: &str) -> String {
    format!("{channel}:ack")
}

/// A parsed invalidation message.
#[derive(Debug, PartialEq)]
pub enum Message {
    Uids {
        id: Option<String>,
        uids: Vec<EntityUid>,
    },
    All {
        id: Option<String>,
    },
}

/// Builds the JSON message `portcullis entities` publishes.
pub fn encode(id: &str, uids: Option<&[EntityUid]>) -> String {
    match uids {
        Some(uids) => serde_json::json!({
            "id": id,
            "uids": uids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })
        .to_string(),
        None => serde_json::json!({ "id": id, "all": true }).to_string(),
    }
}

/// Parses a message; anything not understood means "flush everything".
pub fn decode(payload: &str) -> Message {
    let text = payload.trim();
    if text.starts_with('{') {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
            return Message::All { id: None };
        };
        let id = v.get("id").and_then(|i| i.as_str()).map(str::to_string);
        if v.get("all").and_then(|a| a.as_bool()) == Some(true) {
            return Message::All { id };
        }
        let Some(items) = v.get("uids").and_then(|u| u.as_array()) else {
            return Message::All { id };
        };
        let mut uids = Vec::with_capacity(items.len());
        for item in items {
            match item.as_str().and_then(|s| s.parse::<EntityUid>().ok()) {
                Some(uid) => uids.push(uid),
                None => return Message::All { id },
            }
        }
        return Message::Uids { id, uids };
    }
    let mut uids = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.parse::<EntityUid>() {
            Ok(uid) if line != "*" => uids.push(uid),
            _ => return Message::All { id: None },
        }
    }
    Message::Uids { id: None, uids }
}

/// The subscriber task: the one owner of the invalidation subscription and of the
/// command connection.
///
/// Failure handling: when the subscription cannot be made or its stream ends (Redis
/// restarted, network cut), the state becomes `DOWN` and `/readyz` fails. With no
/// allowed staleness the cache is flushed at once; with some, cached entries serve
/// until the staleness runs out and uncached ones need Redis. Every successful
/// (re)subscription flushes the cache *before* the state becomes `LIVE` again, because
/// messages published while no subscription existed are lost. Retries back off from
/// 100 ms to 5 s. The task ends only when the source is dropped (it is aborted).
pub(crate) async fn run(shared: Arc<Shared>, target: Target, settings: Settings) {
    let mut backoff = Duration::from_millis(100);
    let max_backoff = Duration::from_secs(5);
    let keyspace_pattern = format!("__keyspace@*__:{}e:*", shared.prefix);
    loop {
        if shared.conn.load().is_none() {
            match target.connect(shared.timeout).await {
                Ok(c) => shared.conn.store(Some(Arc::new(c))),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot connect to Redis; retrying");
                    shared.metrics.errors.inc();
                    shared.set_state(DOWN);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(max_backoff);
                    continue;
                }
            }
        }
        let mut subscribed = None;
        for client in target.pubsub_clients() {
            let attempt = async {
                let mut ps = client.get_async_pubsub().await?;
                ps.subscribe(&settings.channel).await?;
                if settings.keyspace {
                    ps.psubscribe(&keyspace_pattern).await?;
                }
                Ok::<_, redis::RedisError>(ps)
            };
            match tokio::time::timeout(shared.timeout * 4, attempt).await {
                Ok(Ok(ps)) => {
                    subscribed = Some(ps);
                    break;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot subscribe to Redis invalidations"),
                Err(_) => tracing::warn!("subscribing to Redis invalidations timed out"),
            }
        }
        let Some(mut pubsub) = subscribed else {
            shared.metrics.errors.inc();
            if shared.max_staleness.is_zero() {
                shared.flush();
            }
            shared.set_state(DOWN);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(max_backoff);
            continue;
        };
        // Messages sent before this subscription existed were missed.
        shared.flush();
        shared.set_state(LIVE);
        backoff = Duration::from_millis(100);
        tracing::info!(channel = %settings.channel, "Redis invalidation subscription live");
        {
            let mut stream = pubsub.on_message();
            while let Some(msg) = stream.next().await {
                let channel = msg.get_channel_name();
                if channel == settings.channel {
                    let payload = String::from_utf8_lossy(msg.get_payload_bytes()).to_string();
                    apply(&shared, decode(&payload), &settings.channel).await;
                } else if let Some(key) = channel.split_once("__:").map(|(_, k)| k) {
                    match store::uid_of_key(&shared.prefix, key) {
                        Some(uid) => shared.evict(&uid, "keyspace").await,
                        None => shared.flush(),
                    }
                }
            }
        }
        tracing::warn!("Redis invalidation subscription dropped; resubscribing");
        shared.metrics.errors.inc();
        if shared.max_staleness.is_zero() {
            shared.flush();
        }
        shared.set_state(DOWN);
        tokio::time::sleep(backoff).await;
    }
}

/// Applies one message and acknowledges it when it asks to be.
async fn apply(shared: &Shared, message: Message, channel: &str) {
    let id = match message {
        Message::Uids { id, uids } => {
            for uid in &uids {
                shared.evict(uid, "channel").await;
            }
            id
        }
        Message::All { id } => {
            shared.flush();
            id
        }
    };
    if let (Some(id), Ok(mut conn)) = (id, shared.conn()) {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(ack_channel(channel)).arg(id);
        if let Ok(Err(e)) = tokio::time::timeout(shared.timeout, conn.query::<i64>(&cmd)).await {
            tracing::warn!(error = %e, "cannot acknowledge an invalidation");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_unknown_ones_flush() {
        let bea: EntityUid = r#"Portal::User::"bea""#.parse().unwrap();
        let encoded = encode("n1", Some(std::slice::from_ref(&bea)));
        assert_eq!(
            decode(&encoded),
            Message::Uids {
                id: Some("n1".into()),
                uids: vec![bea.clone()]
            }
        );
        assert_eq!(
            decode(&encode("n2", None)),
            Message::All {
                id: Some("n2".into())
            }
        );
        assert_eq!(
            decode("Portal::User::\"bea\"\n"),
            Message::Uids {
                id: None,
                uids: vec![bea]
            }
        );
        for junk in ["*", "not a uid", "{broken", r#"{"uids": [42]}"#] {
            assert!(
                matches!(decode(junk), Message::All { .. }),
                "`{junk}` flushes"
            );
        }
    }
}
