//! Subject, resource and action search.
//!
//! Subject and resource search walk the candidates of the searched type that the
//! entity source lists, in its stable order, and keep those the policies allow.
//! Action search evaluates the schema's actions that apply to the pair of types. Work
//! per call is bounded by `search.max_candidates`; a call that stops early, for a full
//! page or the bound, answers with an opaque `next_token` that says where to resume:
//! the source cursor the current chunk was fetched with and how many of that chunk
//! were already examined. The token also carries a fingerprint of the request, so a
//! token replayed with a changed request is refused as the spec asks, and is sealed
//! with the service's key ([`super::token`]).
//!
//! A search about something the PDP does not know (a type it does not recognise, an
//! entity neither stored nor described) finds nothing: an empty result, never an
//! error and never a guess from policies that allow any principal or resource.

use cedar_policy::{EntityId, EntityUid};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::token::PageTokenKey;
use super::wire::{Search, SearchKind, SearchOut, WireError};
use super::{AuthzenError, Scope};
use crate::decision::Described;
use crate::entities::{uid_of_json, EntitySourceError, Referrers, UidPage};
use crate::plan::subject::{self, Subjects};
use crate::plan::{plan_from_source, Filter, PlanError, PlanKind, PlanRequest};

/// Where a search resumes. Sealed by the service's key (see [`super::token`]), so a
/// caller can hand back only what this PDP wrote; each field is still bounded again
/// when the token comes back, so that a token of an earlier configuration (or a
/// leaked key) cannot make one call do more than the limits allow.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Token {
    /// The model the token was issued under (a prefix of the snapshot hash): paging
    /// does not continue across a reload, whose policies or limits may differ.
    m: String,
    /// Fingerprint of the request (and endpoint) the token belongs to.
    f: String,
    /// Source cursor the current chunk was fetched with (`None`: from the start).
    c: Option<String>,
    /// Candidates of that chunk already examined.
    s: usize,
    /// Chunk size the chunk was fetched with, so a resumed call fetches the same chunk.
    n: usize,
    /// The page limit in force, cut to `max_page_size`. The spec asks for identical
    /// parameters on follow-ups, but its own example sends only the token, so a
    /// follow-up without a limit keeps this one.
    l: usize,
}

impl Token {
    fn seal(&self, key: &PageTokenKey) -> String {
        // Writing these plain fields cannot fail; were it to, the empty payload seals
        // a token that does not read back, so the follow-up fails loudly rather than
        // the search ending silently.
        key.seal(&serde_json::to_vec(self).unwrap_or_default())
    }

    fn open(text: &str, key: &PageTokenKey) -> Option<Self> {
        serde_json::from_slice(&key.open(text)?).ok()
    }
}

/// The model a token belongs to: enough of the snapshot hash to tell models apart.
fn model_id(scope: &Scope<'_>) -> String {
    scope.snapshot.hash.chars().take(16).collect()
}

/// A fingerprint of the endpoint and everything in a search request but `page`.
fn fingerprint(kind: SearchKind, body: &Value) -> String {
    let mut body = body.clone();
    if let Some(o) = body.as_object_mut() {
        // Paging parameters are checked apart: the limit travels in the token.
        o.remove("page");
    }
    let mut h = Sha256::new();
    h.update(format!("{kind:?}\n").as_bytes());
    h.update(canonical(&body).as_bytes());
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// JSON with object keys sorted, so that key order does not change a fingerprint.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        Value::String(k.clone()),
                        o.get(k).map(canonical).unwrap_or_default()
                    )
                })
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// The page limit in force and where to start: from the beginning, or where a token
/// this PDP issued for the same request under the same model says.
fn start(
    scope: &Scope<'_>,
    req: &Search,
    kind: SearchKind,
    body: &Value,
) -> Result<(usize, Token), AuthzenError> {
    let cfg = &scope.snapshot.mapping.search;
    let cut = |l: usize| l.min(cfg.max_page_size).max(1);
    let asked = req.page.limit.filter(|l| *l > 0).map(cut);
    let f = fingerprint(kind, body);
    let m = model_id(scope);
    let Some(text) = &req.page.token else {
        let token = Token {
            m,
            f,
            c: None,
            s: 0,
            n: cfg.fetch_size,
            l: asked.unwrap_or_else(|| cut(cfg.default_page_size)),
        };
        return Ok((token.l, token));
    };
    let invalid = |reason| Err(AuthzenError::InvalidPageToken { reason });
    let Some(t) = Token::open(text, &scope.az.page_tokens) else {
        return invalid(TOKEN_NOT_OURS);
    };
    if t.m != m {
        return invalid(TOKEN_OTHER_MODEL);
    }
    if t.f != f || asked.is_some_and(|l| l != t.l) {
        return invalid(TOKEN_OTHER_REQUEST);
    }
    // Bounded again although the tag verified: the limits are what this snapshot
    // allows, whatever a token says.
    // Action search bounds `s` by the schema's actions (see `actions`).
    let in_bounds = (1..=cfg.fetch_size).contains(&t.n)
        && (1..=cfg.max_page_size).contains(&t.l)
        && match kind {
            SearchKind::Action => t.c.is_none(),
            _ => t.s < t.n,
        };
    if !in_bounds {
        return invalid(TOKEN_OUT_OF_BOUNDS);
    }
    Ok((t.l, t))
}

const TOKEN_NOT_OURS: &str =
    "not a token this PDP issued (it is malformed, altered, truncated or signed with another key)";
const TOKEN_OTHER_MODEL: &str =
    "issued under a model that has since been reloaded; start the search again without a token";
const TOKEN_OTHER_REQUEST: &str = "issued for a different request (every field but `page.token` must be identical to the first request's)";
const TOKEN_OUT_OF_BOUNDS: &str = "outside the search limits of this PDP";

fn source_error(e: EntitySourceError) -> AuthzenError {
    // Listing reads only uids; an unreadable listing is the store failing.
    match e {
        EntitySourceError::Unavailable(m) => {
            AuthzenError::StoreUnavailable(format!("entity store unavailable: {m}"))
        }
        EntitySourceError::InvalidData { message, .. } => {
            AuthzenError::StoreUnavailable(format!("entity store listing unreadable: {message}"))
        }
    }
}

/// Whether the entity source holds `uid`, or the request describes it with properties
/// the decisions will use. A search about an entity nobody holds finds nothing, rather
/// than what policies allow any principal or resource.
async fn held_or_described(
    scope: &Scope<'_>,
    uid: &EntityUid,
    described: &[Described],
) -> Result<bool, AuthzenError> {
    if described
        .iter()
        .any(|d| &d.uid == uid && !d.attrs.is_empty())
    {
        return Ok(true);
    }
    match scope
        .source
        .entities_for(std::slice::from_ref(uid), scope.snapshot)
        .await
    {
        Ok(fetched) => Ok(fetched.entities.get(uid).is_some()),
        Err(EntitySourceError::Unavailable(m)) => Err(AuthzenError::StoreUnavailable(format!(
            "entity store unavailable: {m}"
        ))),
        // Stored but unusable: each decision denies, naming the entity.
        Err(EntitySourceError::InvalidData { .. }) => Ok(true),
    }
}

/// The answer of a search that can find nothing.
fn nothing(req: &Search) -> SearchOut {
    SearchOut::new(req, Vec::new(), String::new())
}

/// Subject or resource search.
pub async fn entities(
    scope: &Scope<'_>,
    req: &Search,
    kind: SearchKind,
    body: &Value,
) -> Result<SearchOut, AuthzenError> {
    let action_ref = req.action.as_ref().ok_or_else(|| {
        AuthzenError::Wire(WireError {
            code: "missing_field",
            message: "`action` is required".to_string(),
        })
    })?;
    let action = match scope.action(action_ref, "action") {
        Ok(action) => action,
        // No entity may do an action the PDP does not know.
        Err(_) if scope.unknown_actions_deny() => return Ok(nothing(req)),
        Err(unknown) => return Err(unknown),
    };
    let (searched, searched_field, fixed, fixed_field) = match kind {
        SearchKind::Subject => (&req.subject, "subject", &req.resource, "resource"),
        _ => (&req.resource, "resource", &req.subject, "subject"),
    };
    // A type the PDP does not recognise, searched for or given, has no entity that
    // could be found: the answer is empty, not an error.
    let (Ok(searched_type), Ok(fixed_uid)) = (
        scope.cedar_type(&searched.ty, searched_field),
        scope.uid(fixed, fixed_field),
    ) else {
        return Ok(nothing(req));
    };
    let context = scope.context(
        &action,
        req.context.as_ref(),
        action_ref.properties.as_ref(),
    )?;
    let request_for = |candidate: EntityUid| match kind {
        SearchKind::Subject => (candidate, fixed_uid.clone()),
        _ => (fixed_uid.clone(), candidate),
    };
    // The types and context are the same for every candidate: check them once, so a
    // request that can never match is a 400 rather than an empty result.
    let probe = EntityUid::from_type_name_and_id(searched_type.clone(), EntityId::new(""));
    let (p, r) = request_for(probe);
    scope.check(p, action.clone(), r, context.clone())?;

    let (limit, mut at) = start(scope, req, kind, body)?;
    let key = &scope.az.page_tokens;
    let budget = scope.snapshot.mapping.search.max_candidates;
    let fixed_described: Vec<Described> = scope
        .described(
            &fixed_uid,
            fixed.properties.as_ref(),
            fixed_field_static(kind),
        )?
        .into_iter()
        .collect();
    if !held_or_described(scope, &fixed_uid, &fixed_described).await? {
        return Ok(nothing(req));
    }
    let candidates = match kind {
        SearchKind::Resource if fixed_described.is_empty() => {
            from_plan(scope, &fixed_uid, &action, &searched_type, &context).await?
        }
        SearchKind::Subject if fixed_described.is_empty() => {
            from_subject_plan(scope, &searched_type, &action, &fixed_uid, &context).await?
        }
        // A fixed entity described by properties is not the one a plan would read
        // from the store.
        _ => Candidates::All,
    };
    if matches!(candidates, Candidates::None) {
        return Ok(nothing(req));
    }
    let mut results = Vec::new();
    let mut examined = 0usize;
    let next_token = loop {
        let page = candidates
            .page(scope, &searched_type, at.c.as_deref(), at.n)
            .await
            .map_err(source_error)?;
        let candidates: Vec<&EntityUid> = page.uids.iter().skip(at.s).collect();
        // One fetch for the whole chunk; each decision below then reads the cache.
        let mut uids: Vec<EntityUid> = candidates.iter().map(|u| (*u).clone()).collect();
        uids.push(fixed_uid.clone());
        scope.source.prefetch(&uids, scope.snapshot).await;
        let mut stopped = None;
        for (i, candidate) in candidates.into_iter().enumerate() {
            if results.len() >= limit || examined >= budget {
                stopped = Some(at.s + i);
                break;
            }
            examined += 1;
            let (p, r) = request_for(candidate.clone());
            let Ok(checked) = scope.check(p, action.clone(), r, context.clone()) else {
                continue;
            };
            let d = scope.decide(&checked, &fixed_described).await?;
            if d.allowed {
                results.push(serde_json::json!({
                    "type": searched.ty,
                    "id": candidate.id().unescaped(),
                }));
            }
        }
        if let Some(s) = stopped {
            break Token { s, ..at }.seal(key);
        }
        match page.next {
            None => break String::new(),
            Some(next) => {
                at = Token {
                    c: Some(next),
                    s: 0,
                    ..at
                };
                if results.len() >= limit || examined >= budget {
                    break at.seal(key);
                }
            }
        }
    };
    scope.az.count_candidates(
        if kind == SearchKind::Subject {
            "subject"
        } else {
            "resource"
        },
        examined,
    );
    Ok(SearchOut::new(req, results, next_token))
}

/// Where a subject or resource search takes its candidates from. Each is still
/// decided by the pipeline, so the plan only narrows what is examined: the results
/// are the decisions either way. Every kind pages in id order with the last id as
/// the cursor, so a page token means the same under each.
enum Candidates {
    /// Every entity of the searched type, as the source lists them.
    All,
    /// None: the plan is `always_deny`.
    None,
    /// The entities whose reference attribute `attr` is one of `targets`, read from
    /// the source's index sets: the plan's filter requires it of every resource it
    /// selects.
    Referring {
        attr: String,
        targets: Vec<EntityUid>,
    },
    /// The subjects the symmetric plan names (sorted by id): no other can be allowed.
    Listed(Vec<EntityUid>),
}

impl Candidates {
    async fn page(
        &self,
        scope: &Scope<'_>,
        ty: &cedar_policy::EntityTypeName,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<UidPage, EntitySourceError> {
        if let Candidates::Listed(uids) = self {
            return Ok(crate::entities::page_of(uids, cursor, limit));
        }
        if let Candidates::Referring { attr, targets } = self {
            let page = scope
                .source
                .referrers(ty, attr, targets, cursor, limit, scope.snapshot)
                .await?;
            // Without trusted index sets, every entity of the type is a candidate.
            if let Referrers::Page(page) = page {
                return Ok(page);
            }
        }
        scope.source.list(ty, cursor, limit, scope.snapshot).await
    }
}

/// The candidates of a subject search, from the symmetric plan of the action,
/// resource and context (`plan::subject`): none, the subjects it names, or every
/// subject of the type when it names none or cannot be made.
async fn from_subject_plan(
    scope: &Scope<'_>,
    ty: &cedar_policy::EntityTypeName,
    action: &EntityUid,
    resource: &EntityUid,
    context: &Value,
) -> Result<Candidates, AuthzenError> {
    match subject::subjects(scope.snapshot, scope.source, ty, action, resource, context).await {
        Ok(Subjects::Nobody) => Ok(Candidates::None),
        Ok(Subjects::Only(uids)) => Ok(Candidates::Listed(uids)),
        Ok(Subjects::Every(reason)) => {
            tracing::debug!(%reason, "subject search enumerates");

            Ok(Candidates::All)
        }
        Err(PlanError::Unavailable(m)) => Err(AuthzenError::StoreUnavailable(format!(
            "entity store unavailable: {m}"
        ))),
        // What a plan cannot do, enumeration still can.
        Err(e) => {
            tracing::debug!(error = %e, "subject search enumerates");

            Ok(Candidates::All)
        }
    }
}

/// The candidates of a resource search, from the query plan of the subject, action
/// and resource type (docs/query-plan.md): none when it is `always_deny`; the
/// referrers of the pinned entities when its filter pins a reference attribute at
/// its top level (`eq`/`in` on a path of one attribute, alone or as a conjunct);
/// otherwise, and whenever the plan cannot be made, every entity of the type.
async fn from_plan(
    scope: &Scope<'_>,
    subject: &EntityUid,
    action: &EntityUid,
    ty: &cedar_policy::EntityTypeName,
    context: &Value,
) -> Result<Candidates, AuthzenError> {
    let request = PlanRequest {
        principal: subject.clone(),
        action: action.clone(),
        resource_type: ty.clone(),
        context: context.clone(),
    };
    let plan = match plan_from_source(scope.snapshot, scope.source, &request).await {
        Ok(plan) => plan,
        Err(PlanError::Unavailable(m)) => {
            return Err(AuthzenError::StoreUnavailable(format!(
                "entity store unavailable: {m}"
            )))
        }
        // What a plan cannot do, enumeration still can.
        Err(_) => return Ok(Candidates::All),
    };
    Ok(match (plan.kind, &plan.filter) {
        (PlanKind::AlwaysDeny, _) => Candidates::None,
        (PlanKind::Conditional, Some(filter)) => {
            pinned(filter, scope, ty).unwrap_or(Candidates::All)
        }
        _ => Candidates::All,
    })
}

/// A reference attribute of `ty` that `filter` pins at its top level, and the
/// entities it pins it to. A value that is not an entity never equals a reference,
/// so it pins nothing.
fn pinned(
    filter: &Filter,
    scope: &Scope<'_>,
    ty: &cedar_policy::EntityTypeName,
) -> Option<Candidates> {
    let conjuncts: Vec<&Filter> = match filter {
        Filter::And(parts) => parts.iter().collect(),
        f => vec![f],
    };
    let references = scope.snapshot.types.reference_attributes(&ty.to_string());
    conjuncts.into_iter().find_map(|f| {
        let (path, values): (&Vec<String>, Vec<&Value>) = match f {
            Filter::Eq(p, v) => (p, vec![v]),
            Filter::In(p, vs) => (p, vs.iter().collect()),
            _ => return None,
        };
        let [attr] = path.as_slice() else {
            return None;
        };
        if !references.contains(&attr.as_str()) {
            return None;
        }
        Some(Candidates::Referring {
            attr: attr.clone(),
            targets: values.into_iter().filter_map(uid_of_json).collect(),
        })
    })
}

/// The query plan request of a resource search body: its subject, action, searched
/// type and context, converted and checked as a search converts them. The plan reads
/// the subject from the entity store, so a subject described by properties is
/// refused rather than planned for another entity than the one described.
pub fn plan_request(scope: &Scope<'_>, req: &Search) -> Result<PlanRequest, AuthzenError> {
    let action_ref = req.action.as_ref().ok_or_else(|| {
        AuthzenError::Wire(WireError {
            code: "missing_field",
            message: "`action` is required".to_string(),
        })
    })?;
    if req
        .subject
        .properties
        .as_ref()
        .is_some_and(|p| !p.is_empty())
    {
        return Err(AuthzenError::Wire(WireError {
            code: "invalid_field",
            message: "`subject.properties`: a plan reads the subject from the entity store; leave them out".to_string(),
        }));
    }
    let action = scope.action(action_ref, "action")?;
    let resource_type = scope.cedar_type(&req.resource.ty, "resource")?;
    let principal = scope.uid(&req.subject, "subject")?;
    let context = scope.context(
        &action,
        req.context.as_ref(),
        action_ref.properties.as_ref(),
    )?;
    let probe = EntityUid::from_type_name_and_id(resource_type.clone(), EntityId::new(""));
    scope.check(principal.clone(), action.clone(), probe, context.clone())?;
    Ok(PlanRequest {
        principal,
        action,
        resource_type,
        context,
    })
}

/// The field name of the fixed entity of a subject or resource search.
fn fixed_field_static(kind: SearchKind) -> &'static str {
    match kind {
        SearchKind::Subject => "resource",
        _ => "subject",
    }
}

/// Action search: the schema's actions for the pair of types, those allowed.
pub async fn actions(
    scope: &Scope<'_>,
    req: &Search,
    body: &Value,
) -> Result<SearchOut, AuthzenError> {
    let (Ok(principal), Ok(resource)) = (
        scope.uid(&req.subject, "subject"),
        scope.uid(&req.resource, "resource"),
    ) else {
        return Ok(nothing(req));
    };
    let schema = &scope.snapshot.schema;
    let mut candidates: Vec<EntityUid> = schema
        .actions_for_principal_and_resource(principal.type_name(), resource.type_name())
        .cloned()
        .collect();
    candidates.sort_by_key(ToString::to_string);
    let (limit, at) = start(scope, req, SearchKind::Action, body)?;
    if req.page.token.is_some() && at.s >= candidates.len() {
        return Err(AuthzenError::InvalidPageToken {
            reason: TOKEN_OUT_OF_BOUNDS,
        });
    }
    let described: Vec<Described> = [
        scope.described(&principal, req.subject.properties.as_ref(), "subject")?,
        scope.described(&resource, req.resource.properties.as_ref(), "resource")?,
    ]
    .into_iter()
    .flatten()
    .collect();
    for uid in [&principal, &resource] {
        if !held_or_described(scope, uid, &described).await? {
            return Ok(nothing(req));
        }
    }
    let budget = scope.snapshot.mapping.search.max_candidates;
    let mut results = Vec::new();
    let mut next_token = String::new();
    let mut end = candidates.len();
    for (i, action) in candidates.iter().enumerate().skip(at.s) {
        if results.len() >= limit || i - at.s >= budget {
            next_token = Token { s: i, ..at.clone() }.seal(&scope.az.page_tokens);
            end = i;
            break;
        }
        let context = scope.context(action, req.context.as_ref(), None)?;
        // An action whose context the request cannot satisfy is not permitted.
        let Ok(checked) = scope.check(principal.clone(), action.clone(), resource.clone(), context)
        else {
            continue;
        };
        let d = scope.decide(&checked, &described).await?;
        if d.allowed {
            results
                .push(serde_json::json!({"name": scope.snapshot.mapping.authzen_action(action)}));
        }
    }
    scope
        .az
        .count_candidates("action", end.saturating_sub(at.s));
    Ok(SearchOut::new(req, results, next_token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_fingerprint_ignores_key_order_and_paging_but_not_the_endpoint() {
        let kind = SearchKind::Resource;
        let a =
            json!({"subject": {"type": "user", "id": "bea"}, "page": {"limit": 2, "token": "x"}});
        let b =
            json!({"page": {"token": "y", "limit": 2}, "subject": {"id": "bea", "type": "user"}});
        assert_eq!(fingerprint(kind, &a), fingerprint(kind, &b));
        assert_ne!(fingerprint(kind, &a), fingerprint(SearchKind::Subject, &a));
        let c = json!({"page": {"limit": 3}, "subject": {"id": "bob", "type": "user"}});
        assert_ne!(fingerprint(kind, &a), fingerprint(kind, &c));
        let first = json!({"subject": {"type": "user"}});
        let next = json!({"subject": {"type": "user"}, "page": {"token": "t"}});
        assert_eq!(fingerprint(kind, &first), fingerprint(kind, &next));
    }
}
