//! Compiling the sources into a [`Snapshot`], in four steps, each returning every
//! problem it finds rather than the first (so a policy author fixes them in one round):
//!
//! 1. [`parse`]: the schema, each policy file (naming every policy by its `@id`) and
//!    the links file;
//! 2. [`link`]: policies, templates and template links into one Cedar `PolicySet`;
//! 3. [`validate`]: strict validation against the schema; links that can never apply;
//! 4. [`derive`]: every index the request path reads — the route table, the AuthZEN
//!    mapping, the schema's types, type and action sets, action entities, the entity
//!    data — each checked against the schema.
//!
//! Every step is linear in the size of the sources: ids and link places are looked up
//! in maps, and a policy's text is searched for from where the previous one ended.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use cedar_policy::{
    Entities, EntityUid, PolicyId, PolicySet, Schema, SlotId, ValidationMode, ValidationWarning,
    Validator,
};
use miette::Diagnostic;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::index::{PolicyIndex, PolicyIndexOptions};
use super::mapping::Mapping;
use super::schema_types::SchemaTypes;
use super::snapshot::{EntityData, PolicyInfo, PolicyKind, Snapshot, StoredEntity};
use super::source::{self, line_col, Problem, Problems, SourceFile, Sources};

/// Builds and strictly validates a snapshot.
pub fn compile(sources: &Sources) -> Result<Snapshot, Problems> {
    let mut problems = Vec::new();
    let parsed = parse(sources, &mut problems);
    let linked = link(sources, parsed, &mut problems);
    let Some(schema) = linked.schema.as_ref() else {
        return Err(Problems(problems));
    };
    validate(sources, schema, &linked, &mut problems);
    let derived = derive(sources, schema, &mut problems);
    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    let Linked {
        schema, set, info, ..
    } = linked;
    let (Some(schema), Some(derived)) = (schema, derived) else {
        return Err(Problems(problems));
    };
    let types = Arc::new(super::snapshot::type_canon(&schema));
    let index = PolicyIndex::build_with_types(&set, PolicyIndexOptions::default(), types.clone())
        .map_err(|e| {
        Problems::single(Problem::file(
            sources.schema.name.clone(),
            format!("policy index: {e}"),
        ))
    })?;
    let files = sources.files();
    let entities = derived.entities.map(|mut data| {
        data.literals = condition_literals(&set, &data);
        Arc::new(data)
    });
    Ok(Snapshot {
        hash: sources.content_hash(),
        schema_hash: sha256_hex(&[&sources.schema.text]),
        loaded_at: SystemTime::now(),
        paths: files.iter().filter_map(|f| f.path.clone()).collect(),
        policies: set,
        index,
        info,
        routes: derived.routes,
        mapping: derived.mapping,
        types: derived.types,
        entity_types: schema.entity_types().cloned().collect(),
        actions: schema.actions().cloned().collect(),
        empty_context: super::snapshot::empty_context(&schema),
        type_names: super::snapshot::type_names(&schema),
        type_canon: types,
        action_entities: derived.action_entities,
        entities,
        schema,
        plan_memo: Default::default(),
        context_shapes: Default::default(),
    })
}

/// One policy or template as parsed, with its id and place.
struct Parsed {
    id: String,
    item: Item,
    file: usize,
    offset: usize,
    line: usize,
}

enum Item {
    Policy(cedar_policy::Policy),
    Template(cedar_policy::Template),
}

impl Item {
    /// The `N` of the parser's default id `policyN`.
    fn parser_index(&self) -> usize {
        let id = match self {
            Item::Policy(p) => p.id().to_string(),
            Item::Template(t) => t.id().to_string(),
        };
        id.trim_start_matches("policy")
            .parse()
            .unwrap_or(usize::MAX)
    }

    fn text(&self) -> String {
        match self {
            Item::Policy(p) => p.to_string(),
            Item::Template(t) => t.to_string(),
        }
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        match self {
            Item::Policy(p) => p.annotation(key),
            Item::Template(t) => t.annotation(key),
        }
    }
}

/// What parsing found: the schema, the policies in file order, the links.
struct ParsedSources {
    schema: Option<Schema>,
    items: Vec<Parsed>,
    links: Vec<TemplateLink>,
}

/// Step 1: the schema, the policy files and the links file.
fn parse(sources: &Sources, problems: &mut Vec<Problem>) -> ParsedSources {
    let schema = match parse_schema(&sources.schema) {
        Ok(s) => Some(s),
        Err(e) => {
            problems.extend(e.0);
            None
        }
    };
    let mut items = Vec::new();
    for (file_index, file) in sources.policies.iter().enumerate() {
        let parsed = match PolicySet::from_str(&file.text) {
            Ok(p) => p,
            Err(e) => {
                problems.extend(problems_of(file, &e));
                continue;
            }
        };
        // The parser names policies and templates `policy0`, `policy1`, ... in file
        // order; keep that order, and find each one's text in the file from where the
        // previous one ended, for its line.
        let mut in_file: Vec<Item> = parsed
            .policies()
            .map(|p| Item::Policy(p.clone()))
            .chain(parsed.templates().map(|t| Item::Template(t.clone())))
            .collect();
        in_file.sort_by_key(Item::parser_index);
        let mut cursor = 0;
        let mut lines = LineCounter::default();
        for item in in_file {
            let text = item.text();
            let offset = file
                .text
                .get(cursor..)
                .and_then(|rest| rest.find(&text))
                .map_or(cursor, |at| cursor + at);
            cursor = offset + text.len().min(file.text.len().saturating_sub(offset));
            let line = lines.line_of(&file.text, offset);
            let id = item
                .annotation("id")
                .map(str::to_string)
                .unwrap_or_else(|| format!("{}:{}", file.name, line));
            items.push(Parsed {
                id,
                item,
                file: file_index,
                offset,
                line,
            });
        }
    }
    let links = match &sources.links {
        None => Vec::new(),
        Some(file) => match parse_links(file) {
            Ok(l) => l,
            Err(e) => {
                problems.extend(e.0);
                Vec::new()
            }
        },
    };
    ParsedSources {
        schema,
        items,
        links,
    }
}

/// Lines of offsets that only move forward, counted once for the whole file.
#[derive(Default)]
struct LineCounter {
    offset: usize,
    /// Newlines before `offset`.
    newlines: usize,
}

impl LineCounter {
    /// The 1-based line of `offset`, which must not lie before the previous one.
    fn line_of(&mut self, text: &str, offset: usize) -> usize {
        if offset < self.offset {
            return line_col(text, offset).0;
        }
        let between = text.get(self.offset..offset).unwrap_or_default();
        self.newlines += between.bytes().filter(|b| *b == b'\n').count();
        self.offset = offset;
        self.newlines + 1
    }
}

/// What linking produced.
struct Linked {
    schema: Option<Schema>,
    set: PolicySet,
    info: Vec<PolicyInfo>,
    /// Index of the policy file each policy id came from.
    origin: HashMap<String, usize>,
    /// Where each link's id stands in the links file.
    link_places: HashMap<String, usize>,
}

/// Step 2: every policy, template and link into one set, ids unique.
fn link(sources: &Sources, parsed: ParsedSources, problems: &mut Vec<Problem>) -> Linked {
    let mut set = PolicySet::new();
    let mut info: Vec<PolicyInfo> = Vec::with_capacity(parsed.items.len());
    let mut origin: HashMap<String, usize> = HashMap::with_capacity(parsed.items.len());
    let mut places: HashMap<String, (String, usize)> = HashMap::new();
    for p in parsed.items {
        let Some(file) = sources.policies.get(p.file) else {
            continue;
        };
        if let Some((prev_file, prev_line)) = places.get(&p.id) {
            problems.push(Problem::at(
                file,
                Some(p.offset),
                format!(
                    "duplicate policy id `{}`: already used at {prev_file}:{prev_line}",
                    p.id
                ),
            ));
            continue;
        }
        let pid = PolicyId::new(&p.id);
        let (kind, text, added) = match p.item {
            Item::Policy(policy) => {
                let policy = policy.new_id(pid);
                let text = policy.to_string();
                (
                    PolicyKind::Static,
                    text,
                    set.add(policy).map_err(|e| e.to_string()),
                )
            }
            Item::Template(t) => {
                let t = t.new_id(pid);
                let text = t.to_string();
                (
                    PolicyKind::Template,
                    text,
                    set.add_template(t).map_err(|e| e.to_string()),
                )
            }
        };
        if let Err(e) = added {
            problems.push(Problem::at(file, Some(p.offset), e));
            continue;
        }
        places.insert(p.id.clone(), (file.name.clone(), p.line));
        origin.insert(p.id.clone(), p.file);
        info.push(PolicyInfo {
            id: p.id,
            kind,
            file: file.name.clone(),
            line: Some(p.line),
            hash: sha256_hex(&[&text]),
        });
    }

    let link_places = sources.links.as_ref().map(link_offsets).unwrap_or_default();
    if let Some(links_file) = &sources.links {
        for l in parsed.links {
            let offset = link_places.get(&l.link_id).copied();
            if let Err(p) = add_link(&mut set, &l, links_file, offset) {
                problems.push(p);
                continue;
            }
            info.push(PolicyInfo {
                id: l.link_id.clone(),
                kind: PolicyKind::Link,
                file: links_file.name.clone(),
                line: offset.map(|o| line_col(&links_file.text, o).0),
                hash: sha256_hex(&[
                    &l.template_id,
                    &serde_json::to_string(&l.args).unwrap_or_default(),
                ]),
            });
        }
    }
    Linked {
        schema: parsed.schema,
        set,
        info,
        origin,
        link_places,
    }
}

/// Step 3: strict validation; links that can never apply are errors.
fn validate(sources: &Sources, schema: &Schema, linked: &Linked, problems: &mut Vec<Problem>) {
    let kinds: HashMap<&str, PolicyKind> = linked
        .info
        .iter()
        .map(|p| (p.id.as_str(), p.kind))
        .collect();
    // Validate what did parse even when other files did not, so that one round of
    // fixes can address every problem.
    let result = Validator::new(schema.clone()).validate(&linked.set, ValidationMode::Strict);
    for err in result.validation_errors() {
        let id = err.policy_id().to_string();
        let (message, offset) = describe(err);
        let (file, offset) = if kinds.get(id.as_str()) == Some(&PolicyKind::Link) {
            (sources.links.as_ref(), linked.link_places.get(&id).copied())
        } else {
            (
                linked
                    .origin
                    .get(&id)
                    .and_then(|i| sources.policies.get(*i)),
                offset,
            )
        };
        let file = file.unwrap_or(&sources.schema);
        // Cedar's validation messages already name the policy.
        let message = if message.contains(&format!("`{id}`")) {
            message
        } else {
            format!("policy `{id}`: {message}")
        };
        problems.push(Problem::at(file, offset, message));
    }
    // A link whose entities can never meet its template's actions (a contact linked
    // into a grant only users can use, an account where an invoice belongs) is only a
    // warning to the validator. A link is written to grant something, so here it is
    // an error.
    for warning in result.validation_warnings() {
        let id = warning.policy_id().to_string();
        let is_link = kinds.get(id.as_str()) == Some(&PolicyKind::Link);
        let never_applies = matches!(
            warning,
            ValidationWarning::InvalidActionApplication(_) | ValidationWarning::ImpossiblePolicy(_)
        );
        if let (true, true, Some(file)) = (is_link, never_applies, sources.links.as_ref()) {
            problems.push(Problem::at(
                file,
                linked.link_places.get(&id).copied(),
                format!("link `{id}` can never apply: {warning}"),
            ));
        }
    }
}

/// What the request path reads besides the policies.
struct Derived {
    routes: Option<super::routes::RouteTable>,
    mapping: Mapping,
    types: SchemaTypes,
    action_entities: Vec<cedar_policy::Entity>,
    entities: Option<EntityData>,
}

/// Step 4: every index the request path reads, each checked against the schema.
fn derive(sources: &Sources, schema: &Schema, problems: &mut Vec<Problem>) -> Option<Derived> {
    let before = problems.len();
    let routes = match &sources.routes {
        None => None,
        Some(file) => match super::routes::compile(file, schema) {
            Ok(t) => Some(t),
            Err(e) => {
                problems.extend(e.0);
                None
            }
        },
    };
    let types = SchemaTypes::from_source(&sources.schema);
    let mapping = match Mapping::compile(&sources.mapping, schema) {
        Ok(m) => Some(m),
        Err(e) => {
            problems.extend(e.0);
            None
        }
    };
    let action_entities = match schema.action_entities() {
        Ok(entities) => {
            // Action entities matter to a decision only through their parents (action
            // groups, for `action in Group`); a request's own action needs no entity
            // for `==` or `in [..]`. Without groups, none are added.
            let grouped = entities
                .iter()
                .any(|e| !e.clone().into_inner().2.is_empty());
            if grouped {
                entities.iter().cloned().collect()
            } else {
                Vec::new()
            }
        }
        Err(e) => {
            problems.push(Problem::file(
                sources.schema.name.clone(),
                format!("action entities: {}", crate::error_chain(&e)),
            ));
            Vec::new()
        }
    };
    let entities = match &sources.entities {
        None => None,
        Some(file) => match lean_entity_data(file, schema, &types).and_then(|data| {
            if file.text.len() > super::snapshot::WHOLE_SET_MAX_BYTES {
                return Ok(data);
            }
            data.serving_whole(schema)
                .map_err(|m| vec![Problem::file(file.name.clone(), m)])
        }) {
            Ok(e) => Some(e),
            Err(mut found) => {
                if file.path.is_none() {
                    if let Some(last) = found.last_mut() {
                        last.message.push_str(
                            " (this is the shipped demo data: name the data of your schema with `--entities` or `--redis-url`)",
                        );
                    }
                }
                problems.extend(found);
                None
            }
        },
    };
    if problems.len() > before {
        return None;
    }
    Some(Derived {
        routes,
        mapping: mapping?,
        types,
        action_entities,
        entities,
    })
}

/// Reads an entity file and validates it against the schema. A file that does not
/// conform gets one problem per misfit, each naming the entity's uid, the attribute
/// or parent, and the type the schema expects.
pub fn entity_data(
    file: &SourceFile,
    schema: &Schema,
    types: &SchemaTypes,
) -> Result<Entities, Vec<Problem>> {
    let json: serde_json::Value = serde_json::from_str(&file.text).map_err(|e| {
        vec![Problem::at_line(
            file,
            Some(e.line()),
            Some(e.column()),
            format!("invalid JSON: {e}"),
        )]
    })?;
    Entities::from_json_value(json.clone(), Some(schema)).map_err(|e| {
        misfits(&json, types, &e)
            .into_iter()
            .map(|m| Problem::file(file.name.clone(), m))
            .collect()
    })
}

/// Reads an entity file into the lean form the file source serves
/// ([`EntityData`]), checking every entity against the schema, and accepting exactly
/// the data [`entity_data`] (Cedar's reader of a whole data set) accepts. Entities are
/// checked on all cores; whatever this check cannot settle alone (a misfit, JSON that
/// is not an array of entities, a uid written twice, a cycle in the hierarchy) goes to
/// [`entity_data`], whose verdict and messages stand, so a file is rejected with the
/// same problems as ever.
pub fn lean_entity_data(
    file: &SourceFile,
    schema: &Schema,
    types: &SchemaTypes,
) -> Result<EntityData, Vec<Problem>> {
    if let Some(data) = lean_checked(&file.text, schema) {
        return Ok(data);
    }
    let whole = entity_data(file, schema, types)?;
    EntityData::new(whole).map_err(|m| vec![Problem::file(file.name.clone(), m)])
}

/// One entity of a file, checked against the schema. Uids are keys `type id` here
/// (types are normalized in accepted data, so equal uids have equal keys).
struct CheckedEntity {
    ty: cedar_policy::EntityTypeName,
    id: Box<str>,
    key: Box<str>,
    parents: Vec<Box<str>>,
    json: Box<str>,
}

/// The parents of an entity in Cedar's JSON form, read without its attributes.
#[derive(Deserialize)]
struct ParentsOnly {
    parents: Vec<serde_json::Value>,
}

fn uid_key(ty: &str, id: &str) -> Box<str> {
    format!("{ty} {id}").into()
}

/// The lean data of `text` when every entity fits the schema on its own and the set
/// has no duplicate uid and no cycle; `None` otherwise (the whole-set reader decides).
fn lean_checked(text: &str, schema: &Schema) -> Option<EntityData> {
    let raw: Vec<&serde_json::value::RawValue> = serde_json::from_str(text).ok()?;
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let chunk = raw.len().div_ceil(threads).max(1);
    let parts: Vec<Option<Vec<CheckedEntity>>> = std::thread::scope(|s| {
        let running: Vec<_> = raw
            .chunks(chunk)
            .map(|part| s.spawn(move || check_entities(part, schema)))
            .collect();
        running
            .into_iter()
            .map(|t| t.join().ok().flatten())
            .collect()
    });
    let mut checked = Vec::with_capacity(raw.len());
    for part in parts {
        checked.extend(part?);
    }
    drop(raw);
    let mut parents: HashMap<&str, &[Box<str>], foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(checked.len(), foldhash::fast::RandomState::default());
    for c in &checked {
        if parents.insert(&c.key, &c.parents).is_some() {
            return None;
        }
    }
    if has_cycle(&parents) {
        return None;
    }
    drop(parents);
    let mut by_type: HashMap<cedar_policy::EntityTypeName, Vec<StoredEntity>> = HashMap::new();
    for c in checked {
        // The schema's own actions stand for any the data writes (Cedar checked that
        // they match).
        if super::snapshot::is_action_type(&c.ty) {
            continue;
        }
        by_type.entry(c.ty).or_default().push(StoredEntity {
            id: c.id,
            json: c.json,
        });
    }
    Some(EntityData::from_stored(by_type))
}

/// Each entity of `part` parsed and checked against the schema, as Cedar checks one
/// entity of a data set; `None` at the first that does not fit. Cedar reads the text
/// itself, so a key written twice is refused here (the whole-set reader, through a
/// JSON value, keeps the last one and decides).
fn check_entities(
    part: &[&serde_json::value::RawValue],
    schema: &Schema,
) -> Option<Vec<CheckedEntity>> {
    part.iter()
        .map(|raw| {
            let entity = cedar_policy::Entity::from_json_str(raw.get(), Some(schema)).ok()?;
            let uid = entity.uid();
            let ty = uid.type_name().clone();
            let id: Box<str> = uid.id().unescaped().into();
            let key = uid_key(&ty.to_string(), &id);
            let parents = serde_json::from_str::<ParentsOnly>(raw.get())
                .ok()?
                .parents
                .iter()
                .map(|p| {
                    let p = p.get("__entity").unwrap_or(p);
                    Some(uid_key(p.get("type")?.as_str()?, p.get("id")?.as_str()?))
                })
                .collect::<Option<Vec<_>>>()?;
            // Kept in Cedar's explicit form (`__entity`, `__extn`), which reads back
            // to the same entity without the schema: a decision's parse then skips the
            // schema's type lookups, the costly part of reading an entity.
            let json = entity.to_json_string().ok()?;
            Some(CheckedEntity {
                ty,
                id,
                key,
                parents,
                json: json.into(),
            })
        })
        .collect()
}

/// Whether some entity is its own ancestor through the parents the data gives.
/// Parents the data does not hold end a path.
fn has_cycle(parents: &HashMap<&str, &[Box<str>], foldhash::fast::RandomState>) -> bool {
    // 1: on the current path, 2: done.
    let mut state: HashMap<&str, u8, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(parents.len(), foldhash::fast::RandomState::default());
    for &start in parents.keys() {
        if state.contains_key(start) {
            continue;
        }
        state.insert(start, 1);
        let mut stack: Vec<(&str, usize)> = vec![(start, 0)];
        while let Some((node, next)) = stack.last_mut() {
            let children: &[Box<str>] = parents.get(*node).copied().unwrap_or(&[]);
            let Some(child) = children.get(*next) else {
                state.insert(*node, 2);
                stack.pop();
                continue;
            };
            *next += 1;
            let Some((&child, _)) = parents.get_key_value(&**child) else {
                continue;
            };
            match state.get(child) {
                Some(1) => return true,
                Some(_) => {}
                None => {
                    state.insert(child, 1);
                    stack.push((child, 0));
                }
            }
        }
    }
    false
}

/// Entities that policy conditions (`when`, `unless`) name as literals and the data
/// holds. A condition may read such an entity's attributes or ancestors
/// (`Account::"acme".owner`, `Group::"ops" in resource.groups`), so every decision on
/// the file source reads them. Scope literals need no entity: `==` compares uids and
/// `in` reads the request's own ancestors. Links add nothing: their slots are in the
/// scope.
pub fn condition_literals(set: &PolicySet, data: &EntityData) -> Vec<EntityUid> {
    let mut found: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    let conditional = set
        .policies()
        .filter(|p| p.template_id().is_none() && p.has_non_scope_constraint())
        .filter_map(|p| p.to_json().ok())
        .chain(
            set.templates()
                .filter(|t| t.has_non_scope_constraint())
                .filter_map(|t| t.to_json().ok()),
        );
    for est in conditional {
        let mut uids = Vec::new();
        if let Some(conditions) = est.get("conditions") {
            entity_literals(conditions, &mut uids);
        }
        for uid in uids {
            if data.json_of(&uid).is_some() && found.insert(uid.to_string()) {
                out.push(uid);
            }
        }
    }
    out
}

/// Every `{"__entity": {"type", "id"}}` inside a policy's JSON form.
fn entity_literals(v: &serde_json::Value, out: &mut Vec<EntityUid>) {
    match v {
        serde_json::Value::Object(map) => {
            if let Some(uid) = map.get("__entity").and_then(|e| {
                let ty = e.get("type")?.as_str()?.parse().ok()?;
                let id = e.get("id")?.as_str()?;
                Some(EntityUid::from_type_name_and_id(
                    ty,
                    cedar_policy::EntityId::new(id),
                ))
            }) {
                out.push(uid);
                return;
            }
            for inner in map.values() {
                entity_literals(inner, out);
            }
        }
        serde_json::Value::Array(items) => {
            for inner in items {
                entity_literals(inner, out);
            }
        }
        _ => {}
    }
}

/// The messages for entity data Cedar rejected: each misfit [`conformance::explain`]
/// names, or Cedar's own message when it names none.
pub fn misfits(
    data: &serde_json::Value,
    types: &SchemaTypes,
    cedar: &dyn std::error::Error,
) -> Vec<String> {
    const PREFIX: &str = "entity data does not conform to the schema";
    let explained = super::conformance::explain(data, types);
    if explained.is_empty() {
        vec![format!("{PREFIX}: {}", crate::error_chain(cedar))]
    } else {
        explained
            .into_iter()
            .map(|m| format!("{PREFIX}: {m}"))
            .collect()
    }
}

/// The message of a miette diagnostic, with its help, and the offset of its first label.
fn describe(d: &dyn Diagnostic) -> (String, Option<usize>) {
    let mut message = d.to_string();
    if let Some(help) = d.help() {
        message.push_str(&format!(" (help: {help})"));
    }
    let offset = d
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|l| l.offset());
    (message, offset)
}

/// Every diagnostic of an error: itself, or its related diagnostics when it only
/// gathers them.
fn problems_of(file: &SourceFile, d: &dyn Diagnostic) -> Vec<Problem> {
    let related: Vec<Problem> = d
        .related()
        .map(|r| {
            r.map(|inner| {
                let (m, o) = describe(inner);
                Problem::at(file, o, m)
            })
            .collect()
        })
        .unwrap_or_default();
    if related.is_empty() {
        let (m, o) = describe(d);
        vec![Problem::at(file, o, m)]
    } else {
        related
    }
}

pub(crate) fn sha256_hex(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses a schema in the Cedar schema syntax, or the JSON schema format when the file
/// name ends in `.json`.
pub fn parse_schema(file: &SourceFile) -> Result<Schema, Problems> {
    if file.name.ends_with(".json") {
        Schema::from_json_str(&file.text).map_err(|e| Problems(problems_of(file, &e)))
    } else {
        Schema::from_cedarschema_str(&file.text)
            .map(|(schema, _warnings)| schema)
            .map_err(|e| Problems(problems_of(file, &e)))
    }
}

/// One link of the links file, in the format of the cedar CLI's `--template-linked`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateLink {
    pub template_id: String,
    pub link_id: String,
    pub args: BTreeMap<String, String>,
}

/// Parses a links file: a JSON array of [`TemplateLink`].
pub fn parse_links(file: &SourceFile) -> Result<Vec<TemplateLink>, Problems> {
    serde_json::from_str(&file.text).map_err(|e| {
        Problems::single(Problem::at_line(
            file,
            Some(e.line()),
            Some(e.column()),
            format!("invalid template links: {e}"),
        ))
    })
}

fn add_link(
    set: &mut PolicySet,
    link: &TemplateLink,
    file: &SourceFile,
    offset: Option<usize>,
) -> Result<(), Problem> {
    let mut vals = HashMap::new();
    for (slot, uid) in &link.args {
        let slot_id = match slot.as_str() {
            "?principal" => SlotId::principal(),
            "?resource" => SlotId::resource(),
            other => {
                return Err(Problem::at(
                    file,
                    offset,
                    format!(
                        "link `{}`: unknown slot `{other}` (expected `?principal` or `?resource`)",
                        link.link_id
                    ),
                ))
            }
        };
        let uid = EntityUid::from_str(uid).map_err(|e| {
            Problem::at(
                file,
                offset,
                format!(
                    "link `{}`: invalid entity uid `{uid}` for `{slot}`: {e}",
                    link.link_id
                ),
            )
        })?;
        vals.insert(slot_id, uid);
    }
    set.link(
        PolicyId::new(&link.template_id),
        PolicyId::new(&link.link_id),
        vals,
    )
    .map_err(|e| {
        // The linking error names only the failure; its causes name the template or
        // slot at fault.
        Problem::at(
            file,
            offset,
            format!("link `{}`: {}", link.link_id, crate::error_chain(&e)),
        )
    })
}

/// Where each link's `"link_id": "<id>"` value stands in its links file, found in one
/// pass over the text.
fn link_offsets(file: &SourceFile) -> HashMap<String, usize> {
    let text = &file.text;
    let mut out = HashMap::new();
    for (key_at, key) in text.match_indices("\"link_id\"") {
        let after = key_at + key.len();
        let Some(rest) = text.get(after..) else {
            continue;
        };
        let trimmed = rest.trim_start();
        let Some(value) = trimmed.strip_prefix(':') else {
            continue;
        };
        let value = value.trim_start();
        let value_at = text.len() - value.len();
        let mut stream = serde_json::Deserializer::from_str(value).into_iter::<String>();
        if let Some(Ok(id)) = stream.next() {
            out.entry(id).or_insert(value_at);
        }
    }
    out
}

/// Reads the sources a configuration names and compiles them.
pub fn load(
    args: &crate::config::ModelArgs,
    entities: &source::EntityFile,
) -> Result<Snapshot, Problems> {
    compile(&Sources::read(args, entities)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::source::Mapping as MappingSource;

    #[test]
    fn shipped_model_compiles_strictly() {
        let snap = compile(&Sources::embedded());
        assert!(
            snap.is_ok(),
            "{}",
            snap.err().map(|e| e.to_string()).unwrap_or_default()
        );
    }

    /// Compiles the shipped model with another links file.
    fn with_links(links: &str) -> Result<Snapshot, Problems> {
        let mut sources = Sources::embedded();
        sources.links = Some(SourceFile::new("links.json", links));
        compile(&sources)
    }

    fn link(principal: &str, resource: &str) -> String {
        serde_json::json!([{
            "template_id": "resource-grant-view",
            "link_id": "grant",
            "args": {"?principal": principal, "?resource": resource},
        }])
        .to_string()
    }

    #[test]
    fn links_that_can_never_apply_are_rejected_with_their_place() {
        let cases = [
            // A grant meant for users given to a contact.
            (
                r#"Portal::Contact::"carl""#,
                r#"Portal::Quote::"q-4001""#,
                "can never apply",
            ),
            // A view grant on the account itself, which no view action applies to.
            (
                r#"Portal::User::"walt""#,
                r#"Portal::Account::"acme""#,
                "can never apply",
            ),
            // An entity type the schema does not know.
            (
                r#"Portal::Robot::"r2""#,
                r#"Portal::Quote::"q-4001""#,
                "Robot",
            ),
        ];
        for (principal, resource, expected) in cases {
            let err = with_links(&link(principal, resource)).err().unwrap();
            let text = err.to_string();
            assert!(text.contains(expected), "{principal} {resource}: {text}");
            assert!(text.starts_with("links.json:1:"), "{text}");
        }
    }

    #[test]
    fn a_link_to_a_missing_template_names_the_template() {
        let links = r#"[{"template_id": "nope", "link_id": "l", "args": {}}]"#;
        let text = with_links(links).err().unwrap().to_string();
        assert!(text.contains("`nope`"), "{text}");
    }

    #[test]
    fn a_good_link_is_listed_with_its_line() {
        let links = "[\n  {\n    \"template_id\": \"resource-grant-view\",\n    \"link_id\": \"g\",\n    \"args\": {\"?principal\": \"Portal::User::\\\"walt\\\"\", \"?resource\": \"Portal::Ticket::\\\"t-2001\\\"\"}\n  }\n]";
        let snap = with_links(links).unwrap();
        let info = snap.info.iter().find(|p| p.id == "g").unwrap();
        assert_eq!(info.kind, PolicyKind::Link);
        assert_eq!(info.line, Some(4));
    }

    #[test]
    fn policies_are_placed_at_their_line_and_ids_are_unique() {
        let mut sources = Sources::embedded();
        sources.policies = vec![SourceFile::new(
            "p.cedar",
            "@id(\"a\")\npermit (principal, action, resource);\n\n// b\npermit (principal, action, resource);\n@id(\"a\")\nforbid (principal, action, resource);\n",
        )];
        sources.links = None;
        let err = compile(&sources).err().unwrap();
        assert_eq!(err.0.len(), 1, "{err}");
        let problem = err.0.first().unwrap();
        assert_eq!(
            (
                problem.line,
                problem.message.contains("duplicate policy id `a`")
            ),
            (Some(6), true),
            "{err}"
        );
        sources.policies.truncate(0);
        sources.policies.push(SourceFile::new(
            "p.cedar",
            "permit (principal, action, resource);\n\npermit (principal, action, resource);\n",
        ));
        let snap = compile(&sources).unwrap();
        let ids: Vec<&str> = snap.info.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["p.cedar:1", "p.cedar:3"]);
    }

    #[test]
    fn an_operators_mapping_must_fit_the_schema_but_the_shipped_one_is_tolerated() {
        let mut sources = Sources::embedded();
        sources.mapping = MappingSource::File(SourceFile::new(
            "authzen.yaml",
            "entity_types:\n  robot: Portal::Robot\n",
        ));
        let err = compile(&sources).err().unwrap().to_string();
        assert!(err.starts_with("authzen.yaml"), "{err}");
        assert!(err.contains("`Portal::Robot`"), "{err}");

        let mut other = Sources::embedded();
        other.schema = SourceFile::new(
            "app.cedarschema",
            "entity Doc; action view appliesTo { principal: Doc, resource: Doc };",
        );
        other.policies = vec![SourceFile::new(
            "p.cedar",
            "permit (principal, action, resource);",
        )];
        other.links = None;
        other.routes = None;
        other.entities = None;
        assert!(compile(&other).is_ok());
    }

    #[test]
    fn entity_data_that_does_not_fit_the_schema_is_a_problem_of_its_file() {
        let mut sources = Sources::embedded();
        sources.entities = Some(SourceFile::new(
            "data.json",
            r#"[{"uid": {"type": "Portal::User", "id": "x"}, "attrs": {"email": 3}, "parents": []}]"#,
        ));
        let err = compile(&sources).err().unwrap().to_string();
        assert!(
            err.starts_with("data.json: entity data does not conform to the schema"),
            "{err}"
        );
    }
}
