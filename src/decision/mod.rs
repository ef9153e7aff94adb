//! The decision: a request checked against the schema ([`request`]), decided by the
//! one pipeline ([`pipeline::decide`]: fetch the entities, lay described entities
//! over them, evaluate with Cedar) into one [`Outcome`], recorded in one place
//! ([`record`]: metrics and the decision log). No HTTP; the only I/O is the entity
//! source's.

pub mod pipeline;
pub mod record;
pub mod request;

pub use pipeline::{decide, Decision, Described, Outcome};
pub use record::{Call, Recorder, Surface, TraceContext};
pub use request::{
    check, check_uids, check_uids_with_pairs, is_plain, parse_uid, plain_uid_parts, uid_text,
    CheckedRequest, Field, FieldNames, RawRequest, RequestError, AUTHZEN_NAMES, CEDAR_NAMES,
};
