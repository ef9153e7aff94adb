//! A scope index over a Cedar policy set, so that a decision evaluates only the
//! policies whose scope can match the request.
//!
//! # Why
//!
//! Cedar's `Authorizer::is_authorized` evaluates every policy of the set for every
//! request. Sharing grows a set by one small policy or template link per shared
//! object, so with tens of thousands of grants almost all of the time of a decision
//! goes into scopes that do not match (10 grants vs 10,000 grants: 280x slower).
//!
//! # How candidates are found
//!
//! At build time every static and template-linked policy is filed, in each of the
//! three scope dimensions (principal, action, resource), by what its scope pins:
//!
//! | scope                         | filed under                            |
//! |-------------------------------|----------------------------------------|
//! | `principal == E`              | `eq[E]`                                |
//! | `principal in E`              | `within[E]`                            |
//! | `principal is T in E`         | `within[E]` (the type is checked later)|
//! | `principal is T`              | `of_type[T]`                           |
//! | `principal`                   | `any`                                  |
//! | `action in [A, B]`            | `within[A]` and `within[B]`            |
//!
//! A linked policy is filed by its linked values: for `principal == ?principal` its
//! slot value is the `E` above, exactly as Cedar substitutes it when it evaluates.
//! A policy whose scope pins nothing sits in every dimension's `any` list (the
//! general bucket).
//!
//! Per request, each dimension yields the lists that can hold a policy matching the
//! request's entity `X` there: `eq[X]`, `within[X]`, `within[A]` for every ancestor
//! `A` of `X`, `of_type[type of X]` and `any`. Every policy whose scope matches is
//! in the lists of each of the three dimensions, so the lists of any one dimension
//! are enough. The index gathers each dimension's lists in one pass (`eq[E]` and
//! `within[E]` lie side by side under `E`, so each uid is hashed once), takes the
//! dimension whose lists are shortest (the most selective one for this request),
//! then filters those policies exactly: it checks
//! all three scope constraints of each with Cedar's semantics (below). What is left
//! is exactly the set of policies whose scope is satisfied by the request.
//!
//! Ancestors are read from the request's own `Entities`, for the action as well as
//! for the principal and the resource: Cedar evaluates `in` against that data and
//! nothing else, so an action group counts only when the entity data holds the
//! action entities (as it does when it is built with the schema).
//!
//! # Why the result is exactly Cedar's
//!
//! Cedar evaluates a policy as `principal_scope && action_scope && resource_scope &&
//! conditions`, and `&&` short-circuits. A scope constraint never errors: `==` and
//! `is` compare the request's entity uid, and `in` on an entity that is missing from
//! the data is plain equality (Cedar's `eval_in`). So a policy whose scope does not
//! match the request evaluates to `false` without error and without looking at its
//! `when`/`unless` body. Such a policy can therefore neither be satisfied (so it is
//! never among the determining policies and cannot change the decision) nor add an
//! error. The authorizer evaluates every policy, without short-circuiting across
//! policies, so leaving a non-matching policy out changes nothing else either.
//! The index hands Cedar every policy whose scope matches, and the very same
//! `Policy` values (a link is re-linked from the same template with the same
//! values and id), in the order of the original set. Cedar evaluates them exactly
//! as in the whole set: same satisfied policies, same determining policies, and the
//! same errors (equal as values, source locations included) in the same order.
//! A cached set is keyed by the exact candidate list, so it is the set that would
//! be built afresh.
//!
//! Cases that look special and why they need nothing more: an entity missing from
//! the data has no ancestors, so `in` reduces to `==` in the filter as in Cedar; a
//! linked policy's slots are read as its linked values, as Cedar substitutes them;
//! `action in []` matches nothing and is filed nowhere in the action dimension; a
//! template without links is not evaluated by Cedar and is not indexed. Cedar 4
//! has no unspecified principal or resource in a concrete request; a partial
//! request (`Request::principal()` and the like returning `None`) is decided over
//! the whole set. This argument rests on Cedar's evaluation order and scope
//! semantics (version pinned by the project); the differential test re-checks it
//! on every upgrade.
//!
//! The scope filter mirrors Cedar as follows, `X` being the request's entity:
//! `== E` is `X == E`; `in E` is `X == E` or `E` among the ancestors of `X` in the
//! entity data (none when `X` is missing from it); `is T` compares `X`'s type;
//! `is T in E` is both; `action in [A, B]` is `action in A || action in B`. The
//! differential test checks this against Cedar's own evaluation of scope-only copies
//! of the policies.
//!
//! A request whose principal, action or resource is unknown (a partial request) is
//! evaluated over the whole set, which the index rebuilds when it first needs it.
//!
//! # How the subset is evaluated
//!
//! First by the candidates' compiled conditions (`model::condition`): when each
//! evaluates to a boolean, Cedar's rule gives the decision and its reasons (a
//! satisfied forbid denies, else a satisfied permit allows), with no error to report;
//! Cedar's authorizer never runs. Any candidate whose conditions would error, or use
//! a form the compiler leaves to Cedar, sends the request to Cedar's authorizer over
//! the candidates, as follows.
//!
//! `Authorizer::is_authorized` needs a `PolicySet`, so the candidates are put into a
//! fresh set, in the order of `PolicySet::policies()` (the order Cedar evaluates
//! in, and so reports errors in): static policies with `PolicySet::add` (the clone
//! of a `Policy` is an `Arc` and the policy's text), links with
//! `PolicySet::add_template` once per template and `PolicySet::link`, because
//! `PolicySet::add` refuses a linked policy.
//!
//! Converting each link to a static policy with the link's id at build time (print
//! the linked policy, parse it back) was measured as well. Without the cache it
//! saved up to a fifth of a decision in one run and nothing in another (within the
//! noise of a shared machine); with the cache, which serves most requests, there is
//! nothing left to save. And the converted policy is parsed from other text, so the
//! source locations carried by its evaluation errors point into that text instead of
//! the template's: messages stay equal, the errors as values do not. Re-linking
//! keeps them equal, so links are re-linked.
//!
//! Sets are cached by their candidate list: most requests of a workload share a
//! few lists (the base policies alone, or with the grants of one user on one
//! object), and a hit replaces building the set (a third of the time of an indexed
//! decision in the bench) with one hash lookup under a read lock. The cache holds
//! at most `PolicyIndexOptions::cache_capacity` sets and is emptied when full, which
//! keeps it bounded without bookkeeping on the hot path.

use std::collections::{HashMap, HashSet};

/// Maps keyed by what the policies name (and lists of their positions): the keys are
/// the model's own, so a fast hasher serves; a request's uids only look up.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use std::fmt;
use std::sync::{Arc, OnceLock, RwLock};

use cedar_policy::{
    ActionConstraint, Authorizer, Decision, Effect, Entities, EntityTypeName, EntityUid, Policy,
    PolicyId, PolicySet, PrincipalConstraint, Request, ResourceConstraint, Response, SlotId,
    Template,
};

use ref_cast::RefCast;

use super::condition::{same_uid, Condition, Env, GiveUp, Known};
use super::entity_table::{Lookup, Residual, TypeCanon, UidKey, UidMap};

/// Options of a [`PolicyIndex`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyIndexOptions {
    /// How many per-request policy sets the index keeps, keyed by their candidate
    /// list. Zero disables the cache: every request then builds its own set.
    pub cache_capacity: usize,
    /// Decide with the policies' compiled conditions when every candidate evaluates
    /// without error (`model::condition`), Cedar's authorizer otherwise. Off, every
    /// decision goes through Cedar (for comparisons and measurements).
    pub compiled: bool,
}

impl Default for PolicyIndexOptions {
    fn default() -> Self {
        Self {
            cache_capacity: 4096,
            compiled: true,
        }
    }
}

/// Why a [`PolicyIndex`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PolicyIndexError {
    /// A template-linked policy names a template that the set does not hold.
    #[error(
        "policy `{link}` is linked to template `{template}`, which the policy set does not hold"
    )]
    MissingTemplate {
        /// The linked policy.
        link: PolicyId,
        /// The template it names.
        template: PolicyId,
    },
    /// The set holds more policies than the index's 32-bit positions can number.
    #[error("the policy set holds {0} policies, more than the index can number")]
    TooManyPolicies(usize),
}

/// What one scope constraint on the principal or the resource pins.
#[derive(Debug, Clone)]
enum EntityScope {
    Any,
    Eq(EntityUid),
    In(EntityUid),
    Is(EntityTypeName),
    IsIn(EntityTypeName, EntityUid),
}

impl EntityScope {
    fn from_principal(c: PrincipalConstraint) -> Self {
        match c {
            PrincipalConstraint::Any => Self::Any,
            PrincipalConstraint::Eq(e) => Self::Eq(e),
            PrincipalConstraint::In(e) => Self::In(e),
            PrincipalConstraint::Is(t) => Self::Is(t),
            PrincipalConstraint::IsIn(t, e) => Self::IsIn(t, e),
        }
    }

    fn from_resource(c: ResourceConstraint) -> Self {
        match c {
            ResourceConstraint::Any => Self::Any,
            ResourceConstraint::Eq(e) => Self::Eq(e),
            ResourceConstraint::In(e) => Self::In(e),
            ResourceConstraint::Is(t) => Self::Is(t),
            ResourceConstraint::IsIn(t, e) => Self::IsIn(t, e),
        }
    }

    /// The constraint with its type names on the shared instances of `types`.
    fn sharing(self, types: &TypeCanon) -> Self {
        match self {
            Self::Any => Self::Any,
            Self::Eq(e) => Self::Eq(types.api_uid(&e)),
            Self::In(e) => Self::In(types.api_uid(&e)),
            Self::Is(t) => Self::Is(types.api_type(&t)),
            Self::IsIn(t, e) => Self::IsIn(types.api_type(&t), types.api_uid(&e)),
        }
    }

    /// Whether this constraint can hold for some entity of type `ty` whose uid is
    /// not known: `== E` and `is T` by the type, `in E` kept.
    fn may_match_type(&self, ty: &EntityTypeName) -> bool {
        match self {
            Self::Any | Self::In(_) => true,
            Self::Eq(e) => e.type_name() == ty,
            Self::Is(t) | Self::IsIn(t, _) => t == ty,
        }
    }

    /// Cedar's value of this constraint for the request's entity.
    fn matches(&self, x: &Lineage<'_>) -> bool {
        match self {
            Self::Any => true,
            Self::Eq(e) => same_uid(x.uid.as_ref(), e.as_ref()),
            Self::In(e) => x.is_in(e),
            Self::Is(t) => x.uid.type_name() == t,
            Self::IsIn(t, e) => x.uid.type_name() == t && x.is_in(e),
        }
    }
}

/// What the scope constraint on the action pins.
#[derive(Debug, Clone)]
enum ActionScope {
    Any,
    Eq(EntityUid),
    In(Vec<EntityUid>),
}

impl ActionScope {
    fn from_constraint(c: ActionConstraint) -> Self {
        match c {
            ActionConstraint::Any => Self::Any,
            ActionConstraint::Eq(e) => Self::Eq(e),
            ActionConstraint::In(list) => Self::In(list),
        }
    }

    /// The constraint with its type names on the shared instances of `types`.
    fn sharing(self, types: &TypeCanon) -> Self {
        match self {
            Self::Any => Self::Any,
            Self::Eq(e) => Self::Eq(types.api_uid(&e)),
            Self::In(list) => Self::In(list.iter().map(|e| types.api_uid(e)).collect()),
        }
    }

    /// Cedar's value of this constraint for the request's action.
    fn matches(&self, x: &Lineage<'_>) -> bool {
        match self {
            Self::Any => true,
            Self::Eq(e) => same_uid(x.uid.as_ref(), e.as_ref()),
            Self::In(list) => list.iter().any(|e| x.is_in(e)),
        }
    }
}

/// How a candidate is put into a per-request policy set.
#[derive(Debug, Clone)]
enum Source {
    /// Boxed: a `Policy` is about 400 bytes, ten times a link's values.
    Static(Box<Policy>),
    /// Re-linked from the template with the link's own id and values, so that the
    /// per-request policy is the same as the original link.
    Link {
        template: PolicyId,
        values: HashMap<SlotId, EntityUid>,
    },
}

/// A policy's or template's compiled conditions: compiled on first use (most
/// policies of a large set are never a candidate), `None` when Cedar must evaluate.
type Compiled = OnceLock<Option<Arc<Condition>>>;

/// One policy of the set: its scope and how to rebuild it.
#[derive(Debug)]
struct Entry {
    id: PolicyId,
    effect: Effect,
    principal: EntityScope,
    action: ActionScope,
    resource: EntityScope,
    source: Source,
    condition: Compiled,
}

impl Entry {
    fn matches(&self, p: &Lineage<'_>, a: &Lineage<'_>, r: &Lineage<'_>) -> bool {
        self.principal.matches(p) && self.action.matches(a) && self.resource.matches(r)
    }
}

/// The policies of one scope dimension, filed by what their constraint pins.
/// Values are positions in `PolicyIndex::entries`, ascending.
#[derive(Debug, Default)]
struct Dimension {
    /// `eq[E]` and `within[E]` side by side, so that the request's own entity is
    /// hashed once for both.
    by_uid: UidMap<Pinned>,
    /// Whether any `within` list is filed: if not, ancestors need no lookups.
    has_within: bool,
    of_type: FastMap<EntityTypeName, Vec<u32>>,
    any: Vec<u32>,
}

/// The policies pinned to one entity: `== E` and `in E`.
#[derive(Debug, Default)]
struct Pinned {
    eq: Vec<u32>,
    within: Vec<u32>,
}

impl Dimension {
    fn file_entity(&mut self, scope: &EntityScope, at: u32) {
        match scope {
            EntityScope::Any => self.any.push(at),
            EntityScope::Eq(e) => self.pinned(e).eq.push(at),
            EntityScope::In(e) | EntityScope::IsIn(_, e) => self.pin_within(e, at),
            EntityScope::Is(t) => self.of_type.entry(t.clone()).or_default().push(at),
        }
    }

    fn file_action(&mut self, scope: &ActionScope, at: u32) {
        match scope {
            ActionScope::Any => self.any.push(at),
            ActionScope::Eq(e) => self.pinned(e).eq.push(at),
            ActionScope::In(list) => {
                // `action in [A, A]` is filed once: a list holds each position once.
                let distinct: HashSet<&EntityUid> = list.iter().collect();
                for e in distinct {
                    self.pin_within(e, at);
                }
            }
        }
    }

    fn pinned(&mut self, e: &EntityUid) -> &mut Pinned {
        let key = UidKey::new(e.as_ref().clone());
        self.by_uid.entry(key).or_default()
    }

    fn pin_within(&mut self, e: &EntityUid, at: u32) {
        self.has_within = true;
        self.pinned(e).within.push(at);
    }

    /// Calls `f` with each list that can hold a policy whose constraint in this
    /// dimension matches the request's entity `x` (empty lists left out).
    fn each_list<'s>(&'s self, x: &Lineage<'_>, mut f: impl FnMut(&'s [u32])) {
        let mut add = |list: &'s [u32]| {
            if !list.is_empty() {
                f(list);
            }
        };
        add(&self.any);
        if let Some(pinned) = self.by_uid.get(UidKey::of(x.uid.as_ref())) {
            add(&pinned.eq);
            add(&pinned.within);
        }
        if let Some(list) = self.of_type.get(x.uid.type_name()) {
            add(list);
        }
        if self.has_within {
            for a in x.ancestors() {
                if let Some(pinned) = self.by_uid.get(UidKey::of(a.as_ref())) {
                    add(&pinned.within);
                }
            }
        }
    }

    /// The lists of [`Self::each_list`], gathered in one pass.
    fn gather<'s>(&'s self, x: &Lineage<'_>) -> Lists<'s> {
        let mut lists = Lists {
            found: [&[]; Lists::HELD],
            held: 0,
            total: 0,
            spilled: false,
        };
        self.each_list(x, |list| {
            lists.total += list.len();
            match lists.found.get_mut(lists.held) {
                Some(slot) => {
                    *slot = list;
                    lists.held += 1;
                }
                None => lists.spilled = true,
            }
        });
        lists
    }
}

/// The lists one dimension yields for a request: the first [`Lists::HELD`] of them
/// kept (a request rarely yields more), and their total length.
struct Lists<'s> {
    found: [&'s [u32]; Lists::HELD],
    held: usize,
    total: usize,
    /// More lists than were kept: the dimension is walked again if it is chosen.
    spilled: bool,
}

impl Lists<'_> {
    const HELD: usize = 8;
}

/// The request's entity in one dimension together with its ancestors in the
/// request's entity data.
struct Lineage<'a> {
    uid: &'a EntityUid,
    /// Built only for long ancestor lists, where a linear search would cost more
    /// than hashing; short ones are read from the entity where they lie.
    lookup: Option<HashSet<&'a EntityUid, foldhash::fast::RandomState>>,
    /// The entity itself, for its ancestors and the compiled conditions (looked up
    /// once); `Err` when the data answers with a residual.
    entity: Result<Option<&'a cedar_policy_core::ast::Entity>, GiveUp>,
}

impl Known for Lineage<'_> {
    fn uid(&self) -> &EntityUid {
        self.uid
    }

    fn entity(&self) -> Result<Option<&cedar_policy_core::ast::Entity>, GiveUp> {
        self.entity
    }

    fn is_in(&self, e: &cedar_policy_core::ast::EntityUID) -> bool {
        Lineage::is_in(self, EntityUid::ref_cast(e))
    }
}

impl<'a> Lineage<'a> {
    const LINEAR_LIMIT: usize = 16;

    fn new(uid: &'a EntityUid, data: Lookup<'a>) -> Self {
        let entity = data.entity(uid.as_ref()).map_err(|Residual| GiveUp);
        let mut lineage = Self {
            uid,
            lookup: None,
            entity,
        };
        if lineage.ancestors().nth(Self::LINEAR_LIMIT).is_some() {
            lineage.lookup = Some(lineage.ancestors().collect());
        }
        lineage
    }

    /// The entity's ancestors in the data. An entity missing from the data has
    /// none: Cedar then reads `X in E` as `X == E`.
    fn ancestors(&self) -> impl Iterator<Item = &'a EntityUid> {
        let entity: Option<&'a cedar_policy_core::ast::Entity> = self.entity.ok().flatten();
        entity
            .into_iter()
            .flat_map(|e| e.ancestors().map(EntityUid::ref_cast))
    }

    /// Cedar's `X in E` for this entity `X`.
    fn is_in(&self, e: &EntityUid) -> bool {
        same_uid(self.uid.as_ref(), e.as_ref())
            || match &self.lookup {
                Some(set) => set.contains(e),
                None => self.ancestors().any(|a| same_uid(a.as_ref(), e.as_ref())),
            }
    }
}

/// The request's principal, action and resource with their ancestors; `None` for a
/// partial request (one of them unknown), which is decided over the whole set.
struct Lineages<'a> {
    principal: Lineage<'a>,
    action: Lineage<'a>,
    resource: Lineage<'a>,
}

impl<'a> Lineages<'a> {
    fn new(request: &'a Request, data: Lookup<'a>) -> Option<Self> {
        Some(Self {
            principal: Lineage::new(request.principal()?, data),
            action: Lineage::new(request.action()?, data),
            resource: Lineage::new(request.resource()?, data),
        })
    }
}

/// Per-request policy sets, keyed by their candidate positions.
struct SetCache {
    capacity: usize,
    sets: RwLock<FastMap<Box<[u32]>, Arc<PolicySet>>>,
}

impl SetCache {
    fn get(&self, key: &[u32]) -> Option<Arc<PolicySet>> {
        if self.capacity == 0 {
            return None;
        }
        // A poisoned lock only means that another thread panicked while holding
        // it; the cache is then skipped, never trusted half-written.
        self.sets.read().ok()?.get(key).cloned()
    }

    fn insert(&self, key: &[u32], set: Arc<PolicySet>) {
        if self.capacity == 0 {
            return;
        }
        let evicted = match self.sets.write() {
            Ok(mut sets) => {
                let evicted = if sets.len() >= self.capacity {
                    std::mem::take(&mut *sets)
                } else {
                    FastMap::default()
                };
                sets.insert(key.into(), set);
                evicted
            }
            Err(_) => FastMap::default(),
        };
        // Dropping thousands of sets takes a while: do it after the lock is released,
        // so that readers do not wait for it.
        drop(evicted);
    }

    fn len(&self) -> usize {
        self.sets.read().map(|s| s.len()).unwrap_or(0)
    }
}

/// A decision of the index: Cedar's response, or the decision of the compiled
/// conditions, which have no errors to report (they hand any request that would
/// have one to Cedar).
#[derive(Debug)]
pub enum Verdict {
    Compiled {
        allowed: bool,
        /// The determining policies, in the order of the set.
        reasons: Vec<PolicyId>,
    },
    Cedar(Response),
}

impl Verdict {
    /// As Cedar's response: the same decision, reasons and (no) errors.
    pub fn into_response(self) -> Response {
        match self {
            Verdict::Compiled { allowed, reasons } => Response::new(
                if allowed {
                    Decision::Allow
                } else {
                    Decision::Deny
                },
                reasons.into_iter().collect(),
                Vec::new(),
            ),
            Verdict::Cedar(response) => response,
        }
    }
}

/// Whether the entity data holds the request's principal and resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presence {
    pub principal: bool,
    pub resource: bool,
}

/// Counts that describe a built index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyIndexStats {
    /// Static and template-linked policies indexed.
    pub policies: usize,
    /// Policies whose scope pins nothing: candidates for every request.
    pub general: usize,
    /// Per-request policy sets currently cached.
    pub cached_sets: usize,
}

/// A policy set indexed by scope. Decisions through [`PolicyIndex::is_authorized`]
/// equal `Authorizer::is_authorized` over the whole set: decision, determining
/// policies and errors.
pub struct PolicyIndex {
    entries: Vec<Entry>,
    principal: Dimension,
    action: Dimension,
    resource: Dimension,
    /// Templates of the linked policies, for re-linking them in per-request sets,
    /// with their compiled conditions (a link's are its template's).
    templates: HashMap<PolicyId, (Template, Compiled)>,
    /// The whole set, rebuilt from `entries` when first needed: only requests with
    /// an unknown principal, action or resource use it. Building it eagerly would
    /// double the build time (a copy of a 100k-policy set costs as much as indexing
    /// it).
    whole: OnceLock<Option<Arc<PolicySet>>>,
    general: usize,
    cache: SetCache,
    compiled: bool,
    authorizer: Authorizer,
    /// The shared type names that scopes and compiled conditions use.
    types: Arc<TypeCanon>,
}

impl fmt::Debug for PolicyIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyIndex")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl PolicyIndex {
    /// Indexes every static and template-linked policy of `policies`, with the
    /// default options.
    pub fn build(policies: &PolicySet) -> Result<Self, PolicyIndexError> {
        Self::build_with_options(policies, PolicyIndexOptions::default())
    }

    /// Indexes every static and template-linked policy of `policies`.
    pub fn build_with_options(
        policies: &PolicySet,
        options: PolicyIndexOptions,
    ) -> Result<Self, PolicyIndexError> {
        Self::build_with_types(policies, options, Arc::new(TypeCanon::default()))
    }

    /// [`Self::build_with_options`], with the type names of scopes and conditions put
    /// on the shared instances of `types` (the schema's, which requests use).
    pub fn build_with_types(
        policies: &PolicySet,
        options: PolicyIndexOptions,
        types: Arc<TypeCanon>,
    ) -> Result<Self, PolicyIndexError> {
        let count = policies.num_of_policies();
        if u32::try_from(count).is_err() {
            return Err(PolicyIndexError::TooManyPolicies(count));
        }
        let mut entries = Vec::with_capacity(count);
        let mut templates = HashMap::new();
        for policy in policies.policies() {
            let source = match (policy.template_id(), policy.template_links()) {
                (Some(template), Some(values)) => {
                    if !templates.contains_key(template) {
                        let Some(t) = policies.template(template) else {
                            return Err(PolicyIndexError::MissingTemplate {
                                link: policy.id().clone(),
                                template: template.clone(),
                            });
                        };
                        templates.insert(template.clone(), (t.clone(), Compiled::new()));
                    }
                    Source::Link {
                        template: template.clone(),
                        values,
                    }
                }
                _ => Source::Static(Box::new(policy.clone())),
            };
            entries.push(Entry {
                id: policy.id().clone(),
                effect: policy.effect(),
                condition: Compiled::new(),
                // For a linked policy these accessors return the linked values in
                // place of the slots: the values Cedar evaluates the scope with.
                principal: EntityScope::from_principal(policy.principal_constraint())
                    .sharing(&types),
                action: ActionScope::from_constraint(policy.action_constraint()).sharing(&types),
                resource: EntityScope::from_resource(policy.resource_constraint()).sharing(&types),
                source,
            });
        }

        let mut principal = Dimension::default();
        let mut action = Dimension::default();
        let mut resource = Dimension::default();
        let mut general = 0;
        for (at, entry) in (0u32..).zip(&entries) {
            principal.file_entity(&entry.principal, at);
            action.file_action(&entry.action, at);
            resource.file_entity(&entry.resource, at);
            if matches!(
                (&entry.principal, &entry.action, &entry.resource),
                (EntityScope::Any, ActionScope::Any, EntityScope::Any)
            ) {
                general += 1;
            }
        }

        Ok(Self {
            entries,
            principal,
            action,
            resource,
            templates,
            whole: OnceLock::new(),
            general,
            cache: SetCache {
                capacity: options.cache_capacity,
                sets: RwLock::new(FastMap::default()),
            },
            compiled: options.compiled,
            authorizer: Authorizer::new(),
            types,
        })
    }

    /// Decides `request` as `Authorizer::is_authorized` over the whole set would,
    /// evaluating only the policies whose scope matches it.
    /// `data`: the entities (`&Entities`), or a [`Lookup`] that also holds their
    /// [`EntityTable`](super::entity_table::EntityTable).
    pub fn is_authorized<'a>(&self, request: &Request, data: impl Into<Lookup<'a>>) -> Response {
        self.is_authorized_noting(request, data.into())
            .0
            .into_response()
    }

    /// [`Self::is_authorized`] as a [`Verdict`], and whether the data holds the
    /// request's principal and resource (found while looking up their ancestors: a
    /// caller that must deny a request about a missing entity need not look them
    /// up again).
    pub fn is_authorized_noting(&self, request: &Request, data: Lookup<'_>) -> (Verdict, Presence) {
        let entities = data.entities();
        let Some(lineages) = Lineages::new(request, data) else {
            let held = |uid: Option<&EntityUid>| uid.is_some_and(|u| entities.get(u).is_some());
            let presence = Presence {
                principal: held(request.principal()),
                resource: held(request.resource()),
            };
            let response = self.by_cedar(None, request, entities);
            return (Verdict::Cedar(response), presence);
        };
        let presence = Presence {
            principal: matches!(lineages.principal.entity, Ok(Some(_))),
            resource: matches!(lineages.resource.entity, Ok(Some(_))),
        };
        let positions = self.candidate_positions(&lineages);
        if self.compiled {
            if let Some((allowed, reasons)) =
                self.by_conditions(&positions, &lineages, request, data)
            {
                return (Verdict::Compiled { allowed, reasons }, presence);
            }
        }
        let response = self.by_cedar(Some(&positions), request, entities);
        (Verdict::Cedar(response), presence)
    }

    /// The decision from the candidates' compiled conditions, when each of them
    /// evaluates to a boolean (`model::condition`); `None` hands the request to
    /// Cedar. Public so that tests can count how many requests it decides; the
    /// answer equals [`Self::is_authorized`]'s whenever it is `Some`.
    pub fn decide_compiled<'a>(
        &self,
        request: &Request,
        data: impl Into<Lookup<'a>>,
    ) -> Option<Response> {
        let data = data.into();
        let lineages = Lineages::new(request, data)?;
        let positions = self.candidate_positions(&lineages);
        self.by_conditions(&positions, &lineages, request, data)
            .map(|(allowed, reasons)| Verdict::Compiled { allowed, reasons }.into_response())
    }

    fn by_conditions(
        &self,
        positions: &[u32],
        lineages: &Lineages<'_>,
        request: &Request,
        data: Lookup<'_>,
    ) -> Option<(bool, Vec<PolicyId>)> {
        let env = Env::new(
            &lineages.principal,
            &lineages.action,
            &lineages.resource,
            request,
            data,
        );
        let mut permits = Vec::new();
        let mut forbids = Vec::new();
        // Every candidate is evaluated, even after a forbid holds: one that Cedar
        // would report an error for sends the whole request to Cedar.
        for &at in positions {
            let entry = self.entry(at)?;
            if self.condition(entry)?.holds(&env).ok()? {
                match entry.effect {
                    Effect::Permit => permits.push(entry.id.clone()),
                    Effect::Forbid => forbids.push(entry.id.clone()),
                };
            }
        }
        // Cedar's rule: a satisfied forbid denies, and the satisfied forbids are the
        // reasons; else a satisfied permit allows, with the satisfied permits.
        Some(if !forbids.is_empty() {
            (false, forbids)
        } else {
            (!permits.is_empty(), permits)
        })
    }

    /// The entry's compiled conditions, compiled on first use.
    fn condition<'e>(&self, entry: &'e Entry) -> Option<&'e Condition> {
        entry
            .condition
            .get_or_init(|| match &entry.source {
                Source::Static(policy) => {
                    Condition::from_est(&policy.to_json().ok()?, &self.types).map(Arc::new)
                }
                Source::Link { template, .. } => {
                    let (template, compiled) = self.templates.get(template)?;
                    compiled
                        .get_or_init(|| {
                            Condition::from_est(&template.to_json().ok()?, &self.types)
                                .map(Arc::new)
                        })
                        .clone()
                }
            })
            .as_deref()
    }

    /// Cedar's authorizer over the candidates at `positions`, or over the whole set.
    fn by_cedar(
        &self,
        positions: Option<&[u32]>,
        request: &Request,
        entities: &Entities,
    ) -> Response {
        let set = match positions {
            Some(positions) => self.set_for(positions),
            None => self.whole(),
        };
        match set {
            Some(set) => self.authorizer.is_authorized(request, &set, entities),
            // Unreachable: a fresh set takes every policy of the set the index was
            // built from (see `subset`). Deny is the safe answer if it ever were not.
            None => Response::new(Decision::Deny, HashSet::new(), Vec::new()),
        }
    }

    /// The ids of the policies whose scope matches `request`, in the order of the
    /// set: the policies that [`PolicyIndex::is_authorized`] hands to Cedar. `None`
    /// when the request's principal, action or resource is unknown, which is decided
    /// over the whole set.
    pub fn candidates(&self, request: &Request, entities: &Entities) -> Option<Vec<PolicyId>> {
        let positions = self.candidate_positions(&Lineages::new(request, entities.into())?);
        Some(
            positions
                .iter()
                .filter_map(|&at| self.entry(at))
                .map(|e| e.id.clone())
                .collect(),
        )
    }

    /// Number of static and template-linked policies indexed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// `true` when the set holds no static or template-linked policy.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Counts that describe the index.
    pub fn stats(&self) -> PolicyIndexStats {
        PolicyIndexStats {
            policies: self.entries.len(),
            general: self.general,
            cached_sets: self.cache.len(),
        }
    }

    /// The policies a query plan partially evaluates: those whose scope can match a
    /// request with this principal and action and some resource of `resource_type`.
    /// The principal's and the action's constraints are decided exactly, as for a
    /// decision (ancestors from `entities` and `actions`); the resource's by type
    /// alone (`== E` and `is T` by the type, `in E` kept), since its uid is unknown.
    /// A partial evaluation over this set equals one over the whole set: every other
    /// policy's scope is false, without error, for every such request, so it can
    /// neither hold nor leave a residual. `None` only if the set cannot be rebuilt.
    pub fn for_plan(
        &self,
        principal: &EntityUid,
        action: &EntityUid,
        resource_type: &EntityTypeName,
        entities: &Entities,
        actions: &Entities,
    ) -> Option<Arc<PolicySet>> {
        let p = Lineage::new(principal, entities.into());
        let a = Lineage::new(action, actions.into());
        self.set_where(|e| {
            e.principal.matches(&p)
                && e.action.matches(&a)
                && e.resource.may_match_type(resource_type)
        })
    }

    /// The policies the symmetric plan (subject search) partially evaluates: those
    /// whose scope can match a request with this action and resource and some
    /// principal of `principal_type`. As [`Self::for_plan`] with the roles swapped:
    /// the action's and the resource's constraints decided exactly (ancestors from
    /// `actions` and `entities`), the principal's by type alone.
    pub fn for_subject_plan(
        &self,
        principal_type: &EntityTypeName,
        action: &EntityUid,
        resource: &EntityUid,
        entities: &Entities,
        actions: &Entities,
    ) -> Option<Arc<PolicySet>> {
        let a = Lineage::new(action, actions.into());
        let r = Lineage::new(resource, entities.into());
        self.set_where(|e| {
            e.principal.may_match_type(principal_type)
                && e.action.matches(&a)
                && e.resource.matches(&r)
        })
    }

    /// The policy set of the entries `keep` holds for, in the set's order.
    fn set_where(&self, keep: impl Fn(&Entry) -> bool) -> Option<Arc<PolicySet>> {
        let positions: Vec<u32> = (0u32..)
            .zip(&self.entries)
            .filter(|(_, e)| keep(e))
            .map(|(at, _)| at)
            .collect();
        self.set_for(&positions)
    }

    fn entry(&self, at: u32) -> Option<&Entry> {
        self.entries.get(usize::try_from(at).ok()?)
    }

    /// Positions of the policies whose scope matches the request, ascending.
    fn candidate_positions(&self, lineages: &Lineages<'_>) -> Vec<u32> {
        let (p, a, r) = (&lineages.principal, &lineages.action, &lineages.resource);
        // Each dimension's lists hold every matching policy; the shortest are the
        // cheapest to filter. Ties go to the principal, then the resource.
        let gathered = [
            (&self.principal, p, self.principal.gather(p)),
            (&self.resource, r, self.resource.gather(r)),
            (&self.action, a, self.action.gather(a)),
        ];
        let Some((dimension, x, lists)) = gathered.iter().min_by_key(|(_, _, l)| l.total) else {
            return Vec::new();
        };

        let mut out: Vec<u32> = Vec::with_capacity(lists.total.min(64));
        let mut keep = |list: &[u32]| {
            for &at in list {
                if self.entry(at).is_some_and(|e| e.matches(p, a, r)) {
                    out.push(at);
                }
            }
        };
        if lists.spilled {
            dimension.each_list(x, keep);
        } else {
            lists.found.iter().take(lists.held).for_each(|l| keep(l));
        }
        // A policy is in one list per matching key, and `action in [A, B]` can
        // match through both `A` and `B`; sorting also restores the set's order,
        // which is the order Cedar reports errors in. One list is both already.
        if lists.held > 1 || lists.spilled {
            out.sort_unstable();
            out.dedup();
        }
        out
    }

    /// The policy set for these candidate positions: a cached set or a new one.
    fn set_for(&self, positions: &[u32]) -> Option<Arc<PolicySet>> {
        if let Some(set) = self.cache.get(positions) {
            return Some(set);
        }
        match self.subset(positions) {
            Some(set) => {
                let set = Arc::new(set);
                self.cache.insert(positions, Arc::clone(&set));
                Some(set)
            }
            None => self.whole(),
        }
    }

    /// The whole set, in the original order.
    fn whole(&self) -> Option<Arc<PolicySet>> {
        self.whole
            .get_or_init(|| {
                let all: Vec<u32> = (0u32..).take(self.entries.len()).collect();
                self.subset(&all).map(Arc::new)
            })
            .clone()
    }

    /// A fresh policy set holding the entries at `positions`, in that order.
    ///
    /// This cannot fail for positions of this index: the entries come from one
    /// policy set, so their ids are distinct; a static policy is added as it was;
    /// a link is re-linked from its own template (added first) with the values it
    /// was linked with, which filled that template's slots before.
    fn subset(&self, positions: &[u32]) -> Option<PolicySet> {
        let mut set = PolicySet::new();
        for &at in positions {
            let entry = self.entry(at)?;
            match &entry.source {
                Source::Static(policy) => set.add(Policy::clone(policy)).ok()?,
                Source::Link { template, values } => {
                    if set.template(template).is_none() {
                        set.add_template(self.templates.get(template)?.0.clone())
                            .ok()?;
                    }
                    set.link(template.clone(), entry.id.clone(), values.clone())
                        .ok()?;
                }
            }
        }
        Some(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn uid(s: &str) -> EntityUid {
        EntityUid::from_str(s).unwrap()
    }

    fn request(p: &str, a: &str, r: &str) -> Request {
        Request::new(uid(p), uid(a), uid(r), cedar_policy::Context::empty(), None).unwrap()
    }

    #[test]
    fn grants_are_filed_by_principal_and_resource() {
        let set = PolicySet::from_str(
            r#"
            permit (principal == User::"u1", action == Action::"view", resource == Doc::"d1");
            permit (principal == User::"u2", action == Action::"view", resource == Doc::"d1");
            permit (principal, action, resource) when { principal.admin };
            "#,
        )
        .unwrap();
        let index = PolicyIndex::build(&set).unwrap();
        let entities = Entities::empty();
        let req = request(r#"User::"u1""#, r#"Action::"view""#, r#"Doc::"d1""#);
        let ids = index.candidates(&req, &entities).unwrap();
        assert_eq!(
            ids,
            vec![PolicyId::new("policy0"), PolicyId::new("policy2")]
        );
        assert_eq!(index.stats().general, 1);
        let full = Authorizer::new().is_authorized(&req, &set, &entities);
        let indexed = index.is_authorized(&req, &entities);
        assert_eq!(full.decision(), indexed.decision());
        assert_eq!(
            full.diagnostics().errors().collect::<Vec<_>>(),
            indexed.diagnostics().errors().collect::<Vec<_>>()
        );
    }

    #[test]
    fn links_are_filed_by_their_values() {
        let mut set = PolicySet::from_str(
            r#"permit (principal == ?principal, action, resource in ?resource);"#,
        )
        .unwrap();
        let vals = |p: &str, r: &str| {
            HashMap::from([(SlotId::principal(), uid(p)), (SlotId::resource(), uid(r))])
        };
        set.link(
            PolicyId::new("policy0"),
            PolicyId::new("l1"),
            vals(r#"User::"u1""#, r#"Folder::"f""#),
        )
        .unwrap();
        set.link(
            PolicyId::new("policy0"),
            PolicyId::new("l2"),
            vals(r#"User::"u2""#, r#"Folder::"f""#),
        )
        .unwrap();
        let entities = Entities::from_json_str(
            r#"[{"uid": {"type": "Doc", "id": "d"}, "attrs": {},
                 "parents": [{"type": "Folder", "id": "f"}]}]"#,
            None,
        )
        .unwrap();
        let index = PolicyIndex::build(&set).unwrap();
        let req = request(r#"User::"u2""#, r#"Action::"any""#, r#"Doc::"d""#);
        assert_eq!(
            index.candidates(&req, &entities).unwrap(),
            vec![PolicyId::new("l2")]
        );
        let indexed = index.is_authorized(&req, &entities);
        assert_eq!(indexed.decision(), cedar_policy::Decision::Allow);
        assert_eq!(
            indexed.diagnostics().reason().collect::<Vec<_>>(),
            vec![&PolicyId::new("l2")]
        );
    }

    #[test]
    fn empty_set_denies() {
        let index = PolicyIndex::build(&PolicySet::new()).unwrap();
        assert!(index.is_empty());
        let req = request(r#"User::"u""#, r#"Action::"a""#, r#"Doc::"d""#);
        let response = index.is_authorized(&req, &Entities::empty());
        assert_eq!(response.decision(), cedar_policy::Decision::Deny);
    }
}
