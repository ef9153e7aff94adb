//! The model: the schema, policies, template links, gateway route table, AuthZEN
//! mapping and (for the file source) entity data, compiled into one immutable
//! [`Snapshot`] with every index the request path reads, and reloaded as one unit.
//!
//! - [`source`]: the source files and the problems found in them (`file:line:col`).
//! - [`compile`]: parse, link, validate and derive, into a [`Snapshot`].
//! - [`snapshot`]: the snapshot and what it knows about each policy.
//! - [`routes`], [`mapping`], [`schema_types`]: the indexes derived from the schema:
//!   the gateway route table, the AuthZEN mapping and attribute types.
//! - [`index`]: the policy index: per request, only the policies whose scope can
//!   match, so decisions stay flat in the number of grants; they are decided by
//!   their conditions compiled by `condition` when those evaluate without error,
//!   by Cedar's authorizer otherwise.
//! - [`entity_table`]: entity lookups with a cheaper hash than Cedar's store, for
//!   the compiled path over data served whole.
//! - [`conformance`]: why entity data does not fit the schema, named by uid,
//!   attribute and expected type.
//! - [`lint`]: warnings about a valid model (forbids that missing data would skip).
//! - [`reload`]: the serving [`Model`], the reload task (SIGHUP, file changes, settling)
//!   and the atomic swap.
//! - [`watch`]: which paths the model is read from, links followed, and the file
//!   watcher that reports their changes and nothing else.
//!
//! Nothing here does network I/O or knows HTTP; data held outside the model is
//! checked through the [`Gate`] the entity layer implements.

pub mod compile;
pub(crate) mod condition;
pub mod conformance;
pub mod entity_table;
pub mod index;
pub mod lint;
pub mod mapping;
pub mod reload;
pub mod routes;
pub mod schema_types;
pub mod snapshot;
pub mod source;
pub mod watch;

pub use compile::{
    compile, condition_literals, entity_data, lean_entity_data, load, misfits, parse_schema,
    TemplateLink,
};
pub use mapping::{Mapping, Precedence, SearchConfig, UnknownActions};
pub use reload::{Gate, Model, ReloadOptions, ReloadOutcome, ReloadStatus, ReloadTask, Trigger};
pub use routes::RouteTable;
pub use schema_types::SchemaTypes;
pub use snapshot::{
    EntityData, Links, PolicyInfo, PolicyKind, Snapshot, StoredEntity, WHOLE_SET_MAX_BYTES,
};
pub use source::{
    confirms_empty, embedded, line_col, policy_files, EntityFile, Problem, Problems, SourceFile,
    Sources,
};
