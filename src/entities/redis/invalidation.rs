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
use super::{Shared, LIVE};

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

/// Why a live subscription ended.
enum Ended {
    /// The connection closed (Redis restarted, a reset from the network).
    Closed,
    /// A liveness `PING` went unanswered while the connection stayed open: a NAT or
    /// load balancer dropped the flow, or Redis hangs.
    Unanswered,
}

/// The subscriber task: the one owner of the invalidation subscription and of the
/// command connection.
///
/// Failure handling: when the subscription cannot be made, its stream ends (Redis
/// restarted, network cut), or a liveness `PING` on it goes unanswered within the
/// deadline (a flow dropped silently: the socket stays open but nothing arrives), the
/// failure is counted, the state becomes `DOWN` and `/readyz` fails naming why. With
/// no allowed staleness the cache is flushed at once, so decisions read Redis
/// uncached until the subscription is back; with some, cached entries serve until the
/// staleness runs out. The command connection is made anew too, as it likely shared
/// the subscription's fate; one that stops answering `PING` on its own makes the
/// service unready and is replaced. Every successful (re)subscription flushes
/// the cache *before* the state becomes `LIVE` again, because messages published
/// while no subscription existed are lost. Retries back off from 100 ms to 5 s. The
/// task ends only when the source is dropped (it is aborted).
pub(crate) async fn run(shared: Arc<Shared>, target: Target, settings: Settings) {
    let mut backoff = Duration::from_millis(100);
    let max_backoff = Duration::from_secs(5);
    let keyspace_pattern = format!("__keyspace@*__:{}e:*", shared.prefix);
    loop {
        if shared.conn.load().is_none() {
            match tokio::time::timeout(shared.timeout * 4, target.connect(shared.timeout)).await {
                Ok(Ok(c)) => {
                    shared.conn.store(Some(Arc::new(c)));
                    shared.store_problem.store(None);
                }
                outcome => {
                    let why = match outcome {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".to_string(),
                    };
                    tracing::warn!(error = %why, "cannot connect to Redis; retrying");
                    shared.metrics.errors.inc();
                    shared.set_down(format!("cannot connect to Redis: {why}; retrying"));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(max_backoff);
                    continue;
                }
            }
        }
        let mut subscribed = None;
        let mut why = String::from("no Redis node to subscribe through");
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
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot subscribe to Redis invalidations");
                    why = e.to_string();
                }
                Err(_) => {
                    tracing::warn!("subscribing to Redis invalidations timed out");
                    why = "timed out".to_string();
                }
            }
        }
        let Some(pubsub) = subscribed else {
            shared.metrics.errors.inc();
            shared.set_down(format!(
                "cannot subscribe to Redis invalidations: {why}; retrying"
            ));
            if shared.max_staleness.is_zero() {
                shared.flush();
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(max_backoff);
            continue;
        };
        // Messages sent before this subscription existed were missed.
        shared.flush();
        shared.set_state(LIVE);
        backoff = Duration::from_millis(100);
        tracing::info!(channel = %settings.channel, "Redis invalidation subscription live");
        let ended = listen(&shared, &target, pubsub, &settings).await;
        shared.metrics.errors.inc();
        let (how, reason) = match ended {
            Ended::Closed => (
                "closed",
                "the Redis invalidation subscription closed; resubscribing".to_string(),
            ),
            Ended::Unanswered => (
                "unanswered",
                format!(
                    "the Redis invalidation subscription did not answer PING within {} ms; resubscribing",
                    shared.liveness_timeout.as_millis()
                ),
            ),
        };
        tracing::warn!(how, "{reason}");
        shared
            .metrics
            .subscription_failures
            .with_label_values(&[how])
            .inc();
        // Down first, then flush: a decision that starts after the flush no longer
        // fills the cache.
        shared.set_down(reason);
        if shared.max_staleness.is_zero() {
            shared.flush();
        }
        // The command connection likely shares the fate of the subscription's (a
        // restarted Redis, a flow dropped by the same NAT): it is made anew before
        // resubscribing.
        shared.conn.store(None);
        tokio::time::sleep(backoff).await;
    }
}

/// A `PING` on the subscription and one on the command connection, each within the
/// liveness deadline. `Err` when the subscription did not answer; the command
/// connection's answer is recorded in `store_problem`.
async fn ping_both(shared: &Shared, mut sink: redis::aio::PubSubSink) -> Result<(), Ended> {
    let deadline = shared.liveness_timeout;
    let store = async {
        let mut conn = shared.conn().ok()?;
        let cmd = redis::cmd("PING");
        let ping = tokio::time::timeout(deadline, conn.query::<redis::Value>(&cmd));
        Some(match ping.await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(format!("Redis answered PING with an error: {e}")),
            Err(_) => Some(format!(
                "Redis did not answer PING within {} ms",
                deadline.as_millis()
            )),
        })
    };
    let subscription = tokio::time::timeout(deadline, sink.ping::<redis::Value>());
    let (store, subscription) = tokio::join!(store, subscription);
    if let Some(problem) = store {
        if problem.is_some() {
            shared.metrics.errors.inc();
        }
        shared.store_problem.store(problem.map(Arc::new));
    }
    match subscription {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => Err(Ended::Closed),
        Err(_) => Err(Ended::Unanswered),
    }
}

/// Applies messages until the subscription ends, sending the liveness `PING`s
/// meanwhile. Messages keep being applied while a `PING` waits for its answer.
async fn listen(
    shared: &Arc<Shared>,
    target: &Target,
    pubsub: redis::aio::PubSub,
    settings: &Settings,
) -> Ended {
    let (sink, mut stream) = pubsub.split();
    let mut tick = tokio::time::interval(shared.liveness_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the subscription just answered.
    tick.tick().await;
    let mut ping: Option<futures_util::future::BoxFuture<'_, Result<(), Ended>>> = None;
    loop {
        let pinging = ping.is_some();
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else { return Ended::Closed };
                let channel = msg.get_channel_name();
                if channel == settings.channel {
                    let payload = String::from_utf8_lossy(msg.get_payload_bytes()).to_string();
                    apply(shared, decode(&payload), &settings.channel).await;
                } else if let Some(key) = channel.split_once("__:").map(|(_, k)| k) {
                    match store::uid_of_key(&shared.prefix, key) {
                        Some(uid) => shared.evict(&uid, "keyspace").await,
                        None => shared.flush(),
                    }
                }
            }
            result = async {
                match ping.as_mut() {
                    Some(p) => p.await,
                    None => std::future::pending().await,
                }
            }, if pinging => {
                ping = None;
                if let Err(ended) = result {
                    return ended;
                }
                if shared.store_problem.load().is_some() {
                    reconnect_store(shared, target).await;
                }
            }
            _ = tick.tick(), if !pinging => {
                ping = Some(Box::pin(ping_both(shared, sink.clone())));
            }
        }
    }
}

/// Replaces a command connection that stopped answering while the subscription
/// still does. The old one keeps failing requests by its response timeout until
/// then, which denies them (503); it never allows.
async fn reconnect_store(shared: &Shared, target: &Target) {
    match tokio::time::timeout(shared.timeout * 4, target.connect(shared.timeout)).await {
        Ok(Ok(mut c)) => {
            // Ready again as soon as the new connection answers, not a tick later.
            let cmd = redis::cmd("PING");
            let answered =
                tokio::time::timeout(shared.liveness_timeout, c.query::<redis::Value>(&cmd)).await;
            shared.conn.store(Some(Arc::new(c)));
            if matches!(answered, Ok(Ok(_))) {
                shared.store_problem.store(None);
            }
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot reconnect the Redis command connection"),
        Err(_) => tracing::warn!("reconnecting the Redis command connection timed out"),
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
    let Some(id) = id else { return };
    let mut cmd = redis::cmd("PUBLISH");
    cmd.arg(ack_channel(channel)).arg(id);
    // A second try: a command connection that lost its server reconnects on the
    // first failed command, and a writer that misses an acknowledgement fails.
    for attempt in 0..2 {
        let Ok(mut conn) = shared.conn() else { return };
        match tokio::time::timeout(shared.timeout, conn.query::<i64>(&cmd)).await {
            Ok(Ok(_)) => return,
            Ok(Err(e)) if attempt > 0 => {
                tracing::warn!(error = %e, "cannot acknowledge an invalidation")
            }
            Err(_) if attempt > 0 => tracing::warn!("acknowledging an invalidation timed out"),
            _ => {}
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
