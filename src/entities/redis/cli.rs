//! `portcullis entities`: the tool the portal backend's sync job and operators use to
//! write entities to Redis. Every write is checked against the schema before anything
//! is written, and publishes its invalidations; the command returns once every
//! subscribed Portcullis has acknowledged them (or the acknowledgement timeout passes,
//! which is an error of its own, [`UNACKNOWLEDGED`]).

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Duration;

use cedar_policy::{Entities, Entity, EntityUid, Schema};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use super::invalidation::{ack_channel, encode};
use super::store::{self, Conn, Target};
use crate::config::{EntitiesArgs, EntitiesCommand};
use crate::model::{EntityFile, SchemaTypes, Snapshot};

/// Above this many entities, import shows a progress bar.
const PROGRESS_THRESHOLD: usize = 1000;
/// Commands per pipeline while writing.
const CHUNK: usize = 1000;
/// Above this many uids, a write publishes "everything changed" instead of a list.
const FLUSH_THRESHOLD: usize = 10_000;

/// Exit status of a write that landed in Redis but that fewer subscribers
/// acknowledged than received its invalidation: some Portcullis may still serve the
/// old data. (1 is every other error, after which nothing was written; 2 is a usage
/// error.)
pub const UNACKNOWLEDGED: u8 = 3;

/// The write landed and its invalidation was published, but not every subscriber
/// that received it acknowledged it in time.
#[derive(Debug, thiserror::Error)]
#[error(
    "the write landed, but only {acked} of {receivers} subscribers acknowledged the invalidation within {timeout_ms} ms: a Portcullis that did not may serve the old data until its liveness check flushes its cache"
)]
pub struct UnacknowledgedError {
    /// What the write reported (`wrote 1 entities`, `deleted ...`).
    pub done: String,
    pub acked: i64,
    pub receivers: i64,
    pub timeout_ms: u128,
}

/// Entry point of `portcullis entities`.
pub async fn run(args: EntitiesArgs) -> anyhow::Result<ExitCode> {
    match execute(&args).await {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => match e.downcast_ref::<UnacknowledgedError>() {
            Some(short) => {
                println!("{}", short.done);
                eprintln!("error: {short}");
                Ok(ExitCode::from(UNACKNOWLEDGED))
            }
            None => {
                eprintln!("error: {e:#}");
                Ok(ExitCode::from(1))
            }
        },
    }
}

/// Runs one subcommand and returns what it prints.
pub async fn execute(args: &EntitiesArgs) -> anyhow::Result<String> {
    let target = super::target(&args.redis)?;
    match &args.command {
        EntitiesCommand::Get { uid } => {
            let uid = parse_uid(uid)?;
            let mut conn = target.connect(args.redis.timeout()).await?;
            let mut cmd = redis::cmd("GET");
            cmd.arg(store::entity_key(&args.redis.redis_prefix, &uid));
            let value: Option<String> = conn.query(&cmd).await?;
            value.ok_or_else(|| anyhow::anyhow!("entity `{uid}` is not in Redis"))
        }
        EntitiesCommand::Delete { uid } => {
            let uid = parse_uid(uid)?;
            let mut conn = target.connect(args.redis.timeout()).await?;
            let prefix = &args.redis.redis_prefix;
            // The schema says which attributes are references with index sets.
            let snapshot = crate::model::load(&args.model, &EntityFile::External)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let types = &snapshot.types;
            let removed = match &target {
                Target::Single(client) => delete_atomic(client, prefix, types, &uid).await?,
                Target::Cluster { .. } => delete_in_order(&mut conn, prefix, types, &uid).await?,
            };
            let done = format!("{} `{uid}`", if removed { "deleted" } else { "absent" });
            publish(
                args,
                &target,
                &mut conn,
                Some(std::slice::from_ref(&uid)),
                done,
            )
            .await
        }
        EntitiesCommand::Put { json, file } => {
            let text = match (json, file) {
                (Some(j), _) => j.clone(),
                (None, Some(f)) => std::fs::read_to_string(f)
                    .map_err(|e| anyhow::anyhow!("`{}`: {e}", f.display()))?,
                (None, None) => anyhow::bail!("give the entity JSON or `--file`"),
            };
            let value: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("the entity JSON does not parse: {e}"))?;
            let value = match value {
                serde_json::Value::Array(_) => value,
                one => serde_json::Value::Array(vec![one]),
            };
            write_file(args, value, "input").await
        }
        EntitiesCommand::Import { file } => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("`{}`: {e}", file.display()))?;
            let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                anyhow::anyhow!("{}:{}:{}: {e}", file.display(), e.line(), e.column())
            })?;
            write_file(args, value, &file.display().to_string()).await
        }
    }
}

fn parse_uid(s: &str) -> anyhow::Result<EntityUid> {
    s.parse()
        .map_err(|e| anyhow::anyhow!("invalid entity uid `{s}`: {e}"))
}

/// Validates a whole array of entities against the schema, then writes it.
async fn write_file(
    args: &EntitiesArgs,
    value: serde_json::Value,
    name: &str,
) -> anyhow::Result<String> {
    Writer::open(args).await?.write(value, name).await
}

/// A connected writer with the schema loaded: what a long-running sync job (or the
/// revocation benchmark) keeps between writes.
pub struct Writer {
    args: EntitiesArgs,
    target: Target,
    conn: Conn,
    snapshot: Snapshot,
}

impl Writer {
    pub async fn open(args: &EntitiesArgs) -> anyhow::Result<Self> {
        let snapshot = crate::model::load(&args.model, &EntityFile::External)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let target = super::target(&args.redis)?;
        let conn = target.connect(args.redis.timeout()).await?;
        Ok(Self {
            args: args.clone(),
            target,
            conn,
            snapshot,
        })
    }

    /// Validates `value` (an array of entities in Cedar JSON) whole, writes it all or
    /// nothing, publishes the invalidation and waits for the acknowledgements.
    pub async fn write(&mut self, value: serde_json::Value, name: &str) -> anyhow::Result<String> {
        let records = records(value, &self.snapshot.schema, &self.snapshot.types, name)?;
        let prefix = &self.args.redis.redis_prefix;
        let count = records.len();
        let written = match &self.target {
            Target::Single(client) => {
                write_atomic(client, prefix, &self.snapshot.types, &records).await
            }
            Target::Cluster { .. } => {
                write_compensated(&mut self.conn, prefix, &self.snapshot.types, &records).await
            }
        };
        let uids: Vec<EntityUid> = records.into_iter().map(|(u, _)| u).collect();
        let listed = (uids.len() <= FLUSH_THRESHOLD).then_some(uids.as_slice());
        match written {
            Ok(()) => {}
            Err(WriteError::Nothing(m)) => anyhow::bail!("nothing was written: {m}"),
            Err(WriteError::Undone(m)) => {
                // Readers may have cached what was briefly there.
                let _ = publish(
                    &self.args,
                    &self.target,
                    &mut self.conn,
                    listed,
                    String::new(),
                )
                .await;
                anyhow::bail!("nothing was written (the partial write was undone): {m}");
            }
            Err(WriteError::Partial(m)) => {
                // Whatever landed must not stay hidden behind cached old data.
                let published = publish(
                    &self.args,
                    &self.target,
                    &mut self.conn,
                    listed,
                    String::new(),
                )
                .await;
                let note = match published {
                    Ok(_) => "the invalidation of every entity of the input was published",
                    Err(_) => "publishing the invalidation of every entity of the input was not acknowledged by every subscriber",
                };
                anyhow::bail!("{m}: the store may hold part of the input ({note}); write it again");
            }
        }
        let done = format!("wrote {count} entities");
        publish(&self.args, &self.target, &mut self.conn, listed, done).await
    }
}

/// What an import or put writes: `value` (an array of entities in Cedar JSON)
/// validated whole against the schema, as (uid, stored JSON) pairs; action entities
/// are the schema's and are not stored. The error starts with `name`, the input's.
pub fn records(
    value: serde_json::Value,
    schema: &Schema,
    types: &SchemaTypes,
    name: &str,
) -> anyhow::Result<Vec<(EntityUid, String)>> {
    let entities = Entities::from_json_value(value.clone(), Some(schema)).map_err(|e| {
        let found = crate::model::misfits(&value, types, &e);
        anyhow::anyhow!("{name}: {}", found.join(&format!("\n{name}: ")))
    })?;
    let actions: HashSet<EntityUid> = schema.actions().cloned().collect();
    let mut records: Vec<(EntityUid, String)> = Vec::new();
    for entity in entities.iter() {
        let uid = entity.uid();
        if actions.contains(&uid) {
            continue;
        }
        records.push((uid, entity_json(entity)?));
    }
    Ok(records)
}

/// An entity's JSON as stored: Cedar's own serialization, so references are explicit.
fn entity_json(entity: &Entity) -> anyhow::Result<String> {
    let v = entity
        .to_json_value()
        .map_err(|e| anyhow::anyhow!("entity `{}`: {e}", entity.uid()))?;
    Ok(v.to_string())
}

fn progress(count: usize, what: &str) -> ProgressBar {
    if count < PROGRESS_THRESHOLD {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(count as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)")
    {
        bar.set_style(style);
    }
    bar.set_message(what.to_string());
    bar
}

/// The set keys an entity in stored JSON belongs to: the index set of each reference
/// attribute that holds an entity (see [`store::ref_key`]) and, when its type has
/// parents, the member set of each of its parents (see [`store::member_key`]).
fn set_keys(
    prefix: &str,
    types: &SchemaTypes,
    uid: &EntityUid,
    json: &serde_json::Value,
) -> Vec<String> {
    let ty = uid.type_name();
    let mut keys: Vec<String> = types
        .reference_attributes(&ty.to_string())
        .into_iter()
        .filter_map(|attr| {
            let target = crate::entities::uid_of_json(json.get("attrs")?.get(attr)?)?;
            Some(store::ref_key(prefix, ty, attr, &target))
        })
        .collect();
    if has_parents(types, uid) {
        let parents = crate::entities::parents_and_references(json).0;
        keys.extend(
            parents
                .iter()
                .map(|parent| store::member_key(prefix, ty, parent)),
        );
    }
    keys
}

/// The set entries one write changes: the sets the entity leaves (its previous
/// version's that its new one is not in) and all it is in now (adding is idempotent,
/// and heals sets written before this layout). Each version is parsed once.
fn set_changes(
    prefix: &str,
    types: &SchemaTypes,
    uid: &EntityUid,
    old: Option<&[u8]>,
    new: Option<&str>,
) -> (Vec<String>, Vec<String>) {
    let keys = |json: Option<serde_json::Value>| {
        json.map(|j| set_keys(prefix, types, uid, &j))
            .unwrap_or_default()
    };
    let before = keys(old.and_then(|b| serde_json::from_slice(b).ok()));
    let after = keys(new.and_then(|t| serde_json::from_str(t).ok()));
    let leave = before.into_iter().filter(|k| !after.contains(k)).collect();
    (leave, after)
}

/// The commands that write one entity, each with the key it writes: its key, its
/// type's index, its index-set and member-set changes against its previous version
/// `old`, and its place in the ledgers of those sets.
fn write_commands(
    prefix: &str,
    types: &SchemaTypes,
    uid: &EntityUid,
    json: &str,
    old: Option<&[u8]>,
) -> Vec<(String, redis::Cmd)> {
    let id = uid.id().unescaped();
    let key = store::entity_key(prefix, uid);
    let mut set = redis::cmd("SET");
    set.arg(&key).arg(json);
    let mut out = vec![(key, set)];
    let (leave, join) = set_changes(prefix, types, uid, old, Some(json));
    zset(&mut out, "ZREM", leave, id);
    let type_key = store::type_key(prefix, uid.type_name());
    let joined = std::iter::once(type_key)
        .chain(join)
        .chain(ledger_keys(prefix, types, uid));
    zset(&mut out, "ZADD", joined, id);
    out
}

/// The commands that remove one entity: its key, its type-index entry, the index-set
/// and member-set entries of its stored version `old`, and its ledger entries.
fn delete_commands(
    prefix: &str,
    types: &SchemaTypes,
    uid: &EntityUid,
    old: Option<&[u8]>,
) -> Vec<(String, redis::Cmd)> {
    let id = uid.id().unescaped();
    let key = store::entity_key(prefix, uid);
    let mut del = redis::cmd("DEL");
    del.arg(&key);
    let mut out = vec![(key, del)];
    let (leave, _) = set_changes(prefix, types, uid, old, None);
    let left = std::iter::once(store::type_key(prefix, uid.type_name()))
        .chain(leave)
        .chain(ledger_keys(prefix, types, uid));
    zset(&mut out, "ZREM", left, id);
    out
}

/// `ZADD key 0 id` or `ZREM key id` on each of `keys`, each with its key.
fn zset(
    out: &mut Vec<(String, redis::Cmd)>,
    command: &str,
    keys: impl IntoIterator<Item = String>,
    id: &str,
) {
    for key in keys {
        let mut cmd = redis::cmd(command);
        cmd.arg(&key);
        if command == "ZADD" {
            cmd.arg(0);
        }
        cmd.arg(id);
        out.push((key, cmd));
    }
}

/// The ledgers an entity of `uid`'s type is kept in: one per reference attribute,
/// and the member ledger when the type has parents.
fn ledger_keys(prefix: &str, types: &SchemaTypes, uid: &EntityUid) -> Vec<String> {
    let ty = uid.type_name();
    let mut keys: Vec<String> = types
        .reference_attributes(&ty.to_string())
        .into_iter()
        .map(|attr| store::ledger_key(prefix, ty, attr))
        .collect();
    if has_parents(types, uid) {
        keys.push(store::member_ledger_key(prefix, ty));
    }
    keys
}

/// Whether the schema lets entities of `uid`'s type have parents: those keep member
/// sets.
fn has_parents(types: &SchemaTypes, uid: &EntityUid) -> bool {
    types
        .parent_types(&uid.type_name().to_string())
        .is_some_and(|p| !p.is_empty())
}

/// Why a write failed: nothing of it landed, or (rarely) part of it may have.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("nothing was written: {0}")]
    Nothing(String),
    /// Part of it was written, readable for a while, and then put back.
    #[error("nothing was written (the partial write was undone): {0}")]
    Undone(String),
    #[error("{0}")]
    Partial(String),
}

impl From<redis::RedisError> for WriteError {
    fn from(e: redis::RedisError) -> Self {
        WriteError::Nothing(format!("Redis: {e}"))
    }
}

/// The type a key of the layout must have, or `none` when it does not exist yet.
fn expected_type(prefix: &str, key: &str) -> &'static str {
    let zset = ["t:", "r:", "x:", "m:"];
    if zset
        .iter()
        .any(|tag| key.strip_prefix(prefix).is_some_and(|k| k.starts_with(tag)))
    {
        "zset"
    } else {
        "string"
    }
}

/// Every key a write touches, once each, in the order first touched.
fn keys_of(commands: &[(String, redis::Cmd)]) -> Vec<String> {
    let mut seen = HashSet::new();
    commands
        .iter()
        .filter(|(k, _)| seen.insert(k.as_str()))
        .map(|(k, _)| k.clone())
        .collect()
}

/// The first key holding something other than what the layout puts there.
fn misfit(prefix: &str, keys: &[String], types: &[String]) -> Option<String> {
    keys.iter().zip(types).find_map(|(key, ty)| {
        let expected = expected_type(prefix, key);
        (ty != "none" && ty != expected).then(|| {
            format!("key `{key}` holds a {ty}, where the layout has a {expected}; remove or rename it and write again")
        })
    })
}

/// A single server: one `MULTI`/`EXEC` transaction, sent in chunks on a connection of
/// its own. The entities' previous versions are read under `WATCH` first, so that the
/// transaction moves each out of the index sets it leaves (an overwrite that changes
/// a reference) and is void if another writer changes one of them before `EXEC`.
/// Redis runs every queued command at `EXEC`, but a command that fails there (a key
/// of the wrong type) does not undo the others; so every key's type is checked
/// under `WATCH` too, and a key of the wrong type means nothing is written.
async fn write_atomic(
    client: &redis::Client,
    prefix: &str,
    types: &SchemaTypes,
    records: &[(EntityUid, String)],
) -> Result<(), WriteError> {
    use redis::aio::ConnectionLike;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let entity_keys: Vec<String> = records
        .iter()
        .map(|(u, _)| store::entity_key(prefix, u))
        .collect();
    let mut previous: Vec<Option<Vec<u8>>> = Vec::with_capacity(records.len());
    for chunk in entity_keys.chunks(CHUNK) {
        let mut pipe = redis::pipe();
        pipe.cmd("WATCH").arg(chunk).ignore();
        pipe.cmd("MGET").arg(chunk);
        let (values,): (Vec<Option<Vec<u8>>>,) = pipe.query_async(&mut conn).await?;
        previous.extend(values);
    }
    let commands: Vec<(String, redis::Cmd)> = records
        .iter()
        .zip(&previous)
        .flat_map(|((uid, json), old)| write_commands(prefix, types, uid, json, old.as_deref()))
        .collect();
    let keys = keys_of(&commands);
    let mut found: Vec<String> = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(CHUNK) {
        let mut pipe = redis::pipe();
        pipe.cmd("WATCH").arg(chunk).ignore();
        for key in chunk {
            pipe.cmd("TYPE").arg(key);
        }
        found.extend(pipe.query_async::<Vec<String>>(&mut conn).await?);
    }
    if let Some(problem) = misfit(prefix, &keys, &found) {
        let _ = redis::cmd("UNWATCH").query_async::<()>(&mut conn).await;
        return Err(WriteError::Nothing(problem));
    }
    let bar = progress(commands.len(), "writing");
    redis::cmd("MULTI").query_async::<()>(&mut conn).await?;
    for chunk in commands.chunks(CHUNK) {
        let mut pipe = redis::pipe();
        for (_, cmd) in chunk {
            pipe.add_command(cmd.clone()).ignore();
        }
        if let Err(e) = pipe.query_async::<()>(&mut conn).await {
            let _ = redis::cmd("DISCARD").query_async::<()>(&mut conn).await;
            return Err(WriteError::Nothing(format!("Redis: {e}")));
        }
        bar.inc(chunk.len() as u64);
    }
    let exec = conn.req_packed_command(&redis::cmd("EXEC")).await;
    bar.finish_and_clear();
    exec_outcome(exec, &commands, "a key of the input")
}

/// What `EXEC` answered for `commands`: applied, void (a watched key changed), or
/// applied but for a command Redis refused (named by its key).
fn exec_outcome(
    exec: redis::RedisResult<redis::Value>,
    commands: &[(String, redis::Cmd)],
    watched: &str,
) -> Result<(), WriteError> {
    match exec {
        Ok(redis::Value::Nil) => Err(WriteError::Nothing(format!(
            "another writer changed {watched} while it was written; write it again"
        ))),
        Ok(redis::Value::ServerError(e)) => Err(WriteError::Nothing(format!("Redis: {e}"))),
        Ok(redis::Value::Array(replies)) => {
            let failed = replies.iter().enumerate().find_map(|(i, r)| match r {
                redis::Value::ServerError(e) => Some((i, e.to_string())),
                _ => None,
            });
            match failed {
                None => Ok(()),
                Some((i, e)) => {
                    let key = commands.get(i).map(|(k, _)| k.as_str()).unwrap_or_default();
                    Err(WriteError::Partial(format!(
                        "Redis refused a command of the transaction on key `{key}` ({e}) after checking the types; the other commands were applied"
                    )))
                }
            }
        }
        Ok(other) => Err(WriteError::Partial(format!(
            "Redis answered EXEC with {other:?}; the write may have been applied in part"
        ))),
        Err(e) => Err(WriteError::Partial(format!(
            "the connection failed at EXEC ({e}); the write may or may not have been applied"
        ))),
    }
}

/// Deletes one entity on a single server: its key, its type-index entry and its
/// index-set entries in one transaction, under `WATCH` of the key whose stored
/// version names those sets. Whether the entity was there.
async fn delete_atomic(
    client: &redis::Client,
    prefix: &str,
    types: &SchemaTypes,
    uid: &EntityUid,
) -> anyhow::Result<bool> {
    use redis::aio::ConnectionLike;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let key = store::entity_key(prefix, uid);
    let mut pipe = redis::pipe();
    pipe.cmd("WATCH").arg(&key).ignore();
    pipe.cmd("GET").arg(&key);
    let (old,): (Option<Vec<u8>>,) = pipe.query_async(&mut conn).await?;
    let commands = delete_commands(prefix, types, uid, old.as_deref());
    redis::cmd("MULTI").query_async::<()>(&mut conn).await?;
    let mut pipe = redis::pipe();
    for (_, cmd) in &commands {
        pipe.add_command(cmd.clone()).ignore();
    }
    if let Err(e) = pipe.query_async::<()>(&mut conn).await {
        let _ = redis::cmd("DISCARD").query_async::<()>(&mut conn).await;
        anyhow::bail!("nothing was deleted: Redis: {e}");
    }
    let exec = conn.req_packed_command(&redis::cmd("EXEC")).await;
    exec_outcome(exec, &commands, &format!("`{uid}`")).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(old.is_some())
}

/// Deletes one entity on a cluster, whose keys live in different slots: the key
/// first, so a reader never finds an indexed uid that still resolves after the
/// delete is reported, then its index entries.
async fn delete_in_order(
    conn: &mut Conn,
    prefix: &str,
    types: &SchemaTypes,
    uid: &EntityUid,
) -> anyhow::Result<bool> {
    let old = conn.mget(&[store::entity_key(prefix, uid)]).await?;
    let old = old.into_iter().next().flatten();
    let commands = delete_commands(prefix, types, uid, old.as_deref());
    let mut removed = false;
    for (i, (_, cmd)) in commands.iter().enumerate() {
        let n: i64 = conn.query(cmd).await?;
        if i == 0 {
            removed = n > 0;
        }
    }
    Ok(removed)
}

/// A cluster cannot run one transaction across slots. The previous values are read
/// first; if any write fails, they are put back (and new keys removed) before the
/// error is reported, so the file lands whole or not at all once the command
/// returns. Readers may see part of the file while the import runs.
async fn write_compensated(
    conn: &mut Conn,
    prefix: &str,
    types: &SchemaTypes,
    records: &[(EntityUid, String)],
) -> Result<(), WriteError> {
    let bar = progress(records.len() * 2, "writing");
    let mut previous: Vec<Option<Vec<u8>>> = Vec::with_capacity(records.len());
    for chunk in records.chunks(CHUNK) {
        let keys: Vec<String> = chunk
            .iter()
            .map(|(u, _)| store::entity_key(prefix, u))
            .collect();
        previous.extend(conn.mget(&keys).await?);
        bar.inc(chunk.len() as u64);
    }
    let per_record: Vec<Vec<(String, redis::Cmd)>> = records
        .iter()
        .zip(&previous)
        .map(|((uid, json), old)| write_commands(prefix, types, uid, json, old.as_deref()))
        .collect();
    // A key of the wrong type would fail its write; found first, nothing is written.
    let all: Vec<(String, redis::Cmd)> = per_record.iter().flatten().cloned().collect();
    let keys = keys_of(&all);
    let found: Vec<String> = futures_util::stream::iter(&keys)
        .map(|key| {
            let mut conn = conn.clone();
            let mut cmd = redis::cmd("TYPE");
            cmd.arg(key);
            async move { conn.query::<String>(&cmd).await }
        })
        .buffered(256)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<redis::RedisResult<_>>()?;
    if let Some(problem) = misfit(prefix, &keys, &found) {
        bar.finish_and_clear();
        return Err(WriteError::Nothing(problem));
    }
    let mut written = 0;
    let mut failure = None;
    for chunk in per_record.chunks(CHUNK) {
        let cmds: Vec<redis::Cmd> = chunk.iter().flatten().map(|(_, c)| c.clone()).collect();
        if let Err(e) = each(conn, cmds).await {
            failure = Some(e);
            break;
        }
        written += chunk.len();
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let Some(e) = failure else {
        return Ok(());
    };
    // Undo everything up to and including the chunk that failed: each entity is
    // written back as it was (or removed), index entries with it.
    let end = (written + CHUNK).min(records.len());
    let mut undo = Vec::new();
    for ((uid, json), old) in records.iter().zip(&previous).take(end) {
        let commands = match old {
            Some(v) => write_commands(
                prefix,
                types,
                uid,
                &String::from_utf8_lossy(v),
                Some(json.as_bytes()),
            ),
            None => delete_commands(prefix, types, uid, Some(json.as_bytes())),
        };
        undo.extend(commands.into_iter().map(|(_, c)| c));
    }
    match each(conn, undo).await {
        Ok(()) => Err(WriteError::Undone(e.to_string())),
        Err(undo) => Err(WriteError::Partial(format!(
            "the write failed ({e}) and undoing it failed too ({undo})"
        ))),
    }
}

/// Sends commands one by one but many at a time: a cluster pipeline cannot cross
/// slots, while single commands on the multiplexed connection are routed each to its
/// node and still share the round trips.
async fn each(conn: &Conn, cmds: Vec<redis::Cmd>) -> redis::RedisResult<()> {
    let results: Vec<redis::RedisResult<()>> = futures_util::stream::iter(cmds)
        .map(|cmd| {
            let mut conn = conn.clone();
            async move { conn.query::<()>(&cmd).await }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Publishes the invalidation and waits for every subscriber that received it to
/// acknowledge. Returns `done` with the count of acknowledgements, or an
/// [`UnacknowledgedError`] when some subscriber did not acknowledge in time.
async fn publish(
    args: &EntitiesArgs,
    target: &Target,
    conn: &mut Conn,
    uids: Option<&[EntityUid]>,
    done: String,
) -> anyhow::Result<String> {
    let id = uuid::Uuid::new_v4().to_string();
    let channel = &args.redis.redis_channel;
    let message = encode(&id, uids);
    // Listen for acknowledgements before publishing, so none is missed. On a cluster,
    // `PUBLISH` counts the subscribers of the node it is sent to; the first seed is
    // the node Portcullis subscribes through, so publishing there counts them.
    let client = target
        .pubsub_clients()
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no Redis node to publish to"))?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(ack_channel(channel)).await?;
    let receivers: i64 = if target.is_cluster() {
        let mut direct = client.get_multiplexed_async_connection().await?;
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(&message)
            .query_async(&mut direct)
            .await?
    } else {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(&message);
        conn.query(&cmd).await?
    };
    let mut acked = 0i64;
    let wait = async {
        let mut stream = pubsub.on_message();
        while acked < receivers {
            match stream.next().await {
                Some(msg) if msg.get_payload_bytes() == id.as_bytes() => acked += 1,
                Some(_) => {}
                None => break,
            }
        }
    };
    let timeout = Duration::from_millis(args.ack_timeout_ms);
    let finished = tokio::time::timeout(timeout, wait).await.is_ok();
    if !finished || acked < receivers {
        return Err(UnacknowledgedError {
            done,
            acked,
            receivers,
            timeout_ms: timeout.as_millis(),
        }
        .into());
    }
    Ok(format!(
        "{done}; invalidation acknowledged by {acked} of {receivers} subscribers"
    ))
}
