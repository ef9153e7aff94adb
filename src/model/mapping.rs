//! The mapping from AuthZEN names to Cedar names: entity types, actions, where action
//! properties go, and how request properties meet stored entities. Read from a YAML
//! or JSON file (the portal's mapping is the shipped default) and compiled against the
//! schema with the rest of the model, so a reload that breaks the mapping is rejected
//! like a bad policy.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{EntityId, EntityTypeName, EntityUid, Schema};
use serde::Deserialize;

use super::source::{self, Problem, Problems, SourceFile};

/// Which side wins when a request carries properties for an entity the entity store
/// also holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precedence {
    /// The stored entity is used as stored and the request's properties for it are
    /// ignored, so a caller cannot raise its own privileges by claiming attributes.
    #[default]
    Store,
    /// Each declared property replaces the stored attribute of the same name; the
    /// stored parents and tags stay. For deployments whose PEP is the authority on
    /// attributes.
    Request,
    /// Properties are never used, not even for entities the store does not hold: only
    /// stored data reaches policies.
    Ignore,
}

/// `properties_precedence` as written: one precedence for every type, or a default
/// with overrides per AuthZEN type (or Cedar type name), e.g.
/// `{default: store, types: {todo: request}}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PrecedenceFile {
    All(Precedence),
    PerType(PerTypePrecedence),
}

impl Default for PrecedenceFile {
    fn default() -> Self {
        Self::All(Precedence::default())
    }
}

/// A default precedence and the types that differ from it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerTypePrecedence {
    #[serde(default)]
    pub default: Precedence,
    #[serde(default)]
    pub types: BTreeMap<String, Precedence>,
}

/// How the AuthZEN API answers an action name the mapping and schema do not know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownActions {
    /// A deny (`decision: false`, the reason in its `context`), and nothing found by a
    /// search: a PEP asking about an action the policies never mention is answered,
    /// not failed.
    #[default]
    Deny,
    /// A 400 `unknown_action`, for deployments that want a misspelt name to fail
    /// loudly.
    Reject,
}

/// Limits of the search endpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// Results per page when the request gives no `page.limit` (or 0).
    pub default_page_size: usize,
    /// Largest `page.limit` honoured; larger ones are cut to it.
    pub max_page_size: usize,
    /// Most candidates one search call evaluates. A call that reaches it returns what
    /// it found so far with a `next_token`, so one request never scans a whole store.
    pub max_candidates: usize,
    /// How many candidate uids are fetched from the entity source at a time.
    pub fetch_size: usize,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            default_page_size: 50,
            max_page_size: 1000,
            max_candidates: 1000,
            fetch_size: 100,
        }
    }
}

/// How AuthZEN action names become Cedar actions.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionsFile {
    /// Namespace of the Cedar actions (`Portal` gives `Portal::Action::"<name>"`);
    /// absent for actions outside any namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// AuthZEN action names that differ from the Cedar action id: name -> id.
    #[serde(default)]
    pub names: BTreeMap<String, String>,
}

/// The mapping file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingFile {
    /// AuthZEN `type` -> Cedar entity type name.
    #[serde(default)]
    pub entity_types: BTreeMap<String, String>,
    #[serde(default)]
    pub actions: ActionsFile,
    #[serde(default)]
    pub properties_precedence: PrecedenceFile,
    /// The context attribute that receives the action's properties (when the
    /// action's context type declares it).
    #[serde(default = "default_action_properties_key")]
    pub action_properties_key: String,
    #[serde(default)]
    pub unknown_actions: UnknownActions,
    #[serde(default)]
    pub search: SearchConfig,
}

fn default_action_properties_key() -> String {
    "actionProperties".to_string()
}

/// A checked mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub source: String,
    types: BTreeMap<String, EntityTypeName>,
    action_type: EntityTypeName,
    action_names: BTreeMap<String, String>,
    /// The precedence of types without an override.
    pub precedence: Precedence,
    /// Overrides by the AuthZEN or Cedar type name as written; resolved against the
    /// schema into `precedence_of`.
    precedence_written: BTreeMap<String, Precedence>,
    precedence_of: HashMap<EntityTypeName, Precedence>,
    pub action_properties_key: String,
    pub unknown_actions: UnknownActions,
    pub search: SearchConfig,
}

impl Mapping {
    /// Reads a mapping source and checks it against the schema. A mapping the operator
    /// named must name only declared types and actions; the shipped mapping's entries
    /// that the schema lacks are dropped, so it works with any schema.
    pub fn compile(source: &source::Mapping, schema: &Schema) -> Result<Self, Problems> {
        let (file, strict) = match source {
            source::Mapping::Shipped(f) => (f, false),
            source::Mapping::File(f) => (f, true),
        };
        let mut mapping = Self::parse(file)?;
        let mut problems = mapping.problems(schema, file);
        for written in mapping.precedence_written.keys() {
            if mapping.cedar_type(written, schema).is_none() {
                let offset = file.text.find(&format!("{written}:"));
                problems.push(Problem::at(
                    file,
                    offset,
                    format!(
                        "`properties_precedence.types.{written}`: `{written}` is neither an AuthZEN type of `entity_types` nor an entity type the schema declares"
                    ),
                ));
            }
        }
        if strict && !problems.is_empty() {
            return Err(Problems(problems));
        }
        let overrides = std::mem::take(&mut mapping.precedence_written);
        for (written, precedence) in overrides {
            // A name that is no type was a problem above (the shipped mapping has no
            // overrides).
            if let Some(ty) = mapping.cedar_type(&written, schema) {
                mapping.precedence_of.insert(ty, precedence);
            }
        }
        if !strict {
            let declared: HashSet<&EntityTypeName> = schema.entity_types().collect();
            mapping.types.retain(|_, ty| declared.contains(ty));
            let kept: BTreeMap<String, String> = mapping
                .action_names
                .iter()
                .filter(|(name, id)| {
                    let uid = EntityUid::from_type_name_and_id(
                        mapping.action_type.clone(),
                        EntityId::new(id.as_str()),
                    );
                    schema.actions().any(|a| a == &uid)
                        && mapping.shadowed(name, &uid, schema).is_none()
                })
                .map(|(name, id)| (name.clone(), id.clone()))
                .collect();
            mapping.action_names = kept;
        }
        Ok(mapping)
    }

    /// Parses a mapping: JSON when the name ends in `.json`, YAML otherwise.
    fn parse(source: &SourceFile) -> Result<Self, Problems> {
        let name = source.name.as_str();
        let text = source.text.as_str();
        let err = |message: String| Problems::single(Problem::file(name, message));
        let file: MappingFile = if name.ends_with(".json") {
            serde_json::from_str(text).map_err(|e| {
                Problems::single(Problem::at_line(
                    source,
                    Some(e.line()),
                    Some(e.column()),
                    format!("invalid mapping: {e}"),
                ))
            })?
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| {
                let (line, column) = e
                    .location()
                    .map_or((None, None), |l| (Some(l.line()), Some(l.column())));
                Problems::single(Problem::at_line(
                    source,
                    line,
                    column,
                    format!("invalid mapping: {e}"),
                ))
            })?
        };
        let mut types = BTreeMap::new();
        for (authzen, cedar) in &file.entity_types {
            let ty = EntityTypeName::from_str(cedar).map_err(|e| {
                err(format!(
                    "`entity_types.{authzen}`: `{cedar}` is not a Cedar entity type name: {e}"
                ))
            })?;
            types.insert(authzen.clone(), ty);
        }
        let action_type = match &file.actions.namespace {
            Some(ns) if !ns.is_empty() => format!("{ns}::Action"),
            _ => "Action".to_string(),
        };
        let action_type = EntityTypeName::from_str(&action_type)
            .map_err(|e| err(format!("`actions.namespace`: not a Cedar namespace: {e}")))?;
        let s = &file.search;
        if s.max_page_size == 0 || s.max_candidates == 0 || s.fetch_size == 0 {
            return Err(err(
                "`search`: `max_page_size`, `max_candidates` and `fetch_size` must be at least 1"
                    .to_string(),
            ));
        }
        let (precedence, precedence_written) = match file.properties_precedence {
            PrecedenceFile::All(p) => (p, BTreeMap::new()),
            PrecedenceFile::PerType(p) => (p.default, p.types),
        };
        Ok(Self {
            source: name.to_string(),
            types,
            action_type,
            action_names: file.actions.names,
            precedence,
            precedence_written,
            precedence_of: HashMap::new(),
            action_properties_key: file.action_properties_key,
            unknown_actions: file.unknown_actions,
            search: file.search,
        })
    }

    /// Entries that name types or actions the schema does not declare, placed at the
    /// entry's line.
    fn problems(&self, schema: &Schema, file: &SourceFile) -> Vec<Problem> {
        let at = |key: &str, message: String| {
            let offset = file
                .text
                .find(&format!("{key}:"))
                .or_else(|| file.text.find(&format!("\"{key}\"")));
            Problem::at(file, offset, message)
        };
        let mut out = Vec::new();
        for (authzen, ty) in &self.types {
            if !schema.entity_types().any(|t| t == ty) {
                out.push(at(
                    authzen,
                    format!(
                        "`entity_types.{authzen}`: entity type `{ty}` is not declared in the schema"
                    ),
                ));
            }
        }
        for (name, id) in &self.action_names {
            let uid = EntityUid::from_type_name_and_id(self.action_type.clone(), EntityId::new(id));
            if !schema.actions().any(|a| a == &uid) {
                out.push(at(
                    name,
                    format!("`actions.names.{name}`: action `{uid}` is not declared in the schema"),
                ));
            } else if let Some(named) = self.shadowed(name, &uid, schema) {
                out.push(at(
                    name,
                    format!(
                        "`actions.names.{name}`: the alias names action `{named}` already, so it cannot stand for `{uid}`"
                    ),
                ));
            }
        }
        out
    }

    /// The other action `alias` names without any alias (an action id of the
    /// namespace, or a full action uid), when it is not `target`. Such an alias would
    /// make action search answer a name that a PEP sending it back gets another action
    /// for.
    fn shadowed(&self, alias: &str, target: &EntityUid, schema: &Schema) -> Option<EntityUid> {
        let declared = |uid: &EntityUid| schema.actions().any(|a| a == uid);
        let in_namespace =
            EntityUid::from_type_name_and_id(self.action_type.clone(), EntityId::new(alias));
        let named = if declared(&in_namespace) {
            Some(in_namespace)
        } else {
            EntityUid::from_str(alias).ok().filter(declared)
        };
        named.filter(|n| n != target)
    }

    /// Which side wins for entities of `ty`: its override, or the default.
    pub fn precedence_for(&self, ty: &EntityTypeName) -> Precedence {
        self.precedence_of
            .get(ty)
            .copied()
            .unwrap_or(self.precedence)
    }

    /// The Cedar entity type of an AuthZEN type: the mapped one, or the type itself
    /// when it already names a Cedar type the schema declares (the generic fallback
    /// that lets any schema work without entries).
    pub fn cedar_type(&self, authzen: &str, schema: &Schema) -> Option<EntityTypeName> {
        if let Some(t) = self.types.get(authzen) {
            return Some(t.clone());
        }
        let t = EntityTypeName::from_str(authzen).ok()?;
        schema.entity_types().any(|d| d == &t).then_some(t)
    }

    /// The Cedar action of an AuthZEN action name: an alias from `actions.names`, the
    /// name as an action id in the configured namespace, or a full action uid.
    pub fn cedar_action(&self, name: &str, schema: &Schema) -> Option<EntityUid> {
        let id = self.action_names.get(name).map_or(name, String::as_str);
        let uid = EntityUid::from_type_name_and_id(self.action_type.clone(), EntityId::new(id));
        if schema.actions().any(|a| a == &uid) {
            return Some(uid);
        }
        let full = EntityUid::from_str(name).ok()?;
        schema.actions().any(|a| a == &full).then_some(full)
    }

    /// The AuthZEN name of a Cedar action, for action search: its alias when one is
    /// configured, its id when it is in the configured namespace, else its full uid.
    pub fn authzen_action(&self, action: &EntityUid) -> String {
        let id = action.id().unescaped();
        if action.type_name() == &self.action_type {
            if let Some((alias, _)) = self.action_names.iter().find(|(_, v)| v.as_str() == id) {
                return alias.clone();
            }
            return id.to_string();
        }
        action.to_string()
    }

    /// Maps an entity reference's type written by a caller (an AuthZEN type or a Cedar
    /// type name) to the Cedar type name, as a string for Cedar's JSON format.
    pub fn reference_type(&self, written: &str) -> String {
        self.types
            .get(written)
            .map_or_else(|| written.to_string(), ToString::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::source::{embedded, Mapping as MappingSource};

    fn schema() -> Schema {
        crate::model::parse_schema(&SourceFile::new(embedded::SCHEMA.0, embedded::SCHEMA.1))
            .unwrap()
    }

    fn file(name: &str, text: &str) -> MappingSource {
        MappingSource::File(SourceFile::new(name, text))
    }

    #[test]
    fn the_shipped_portal_mapping_matches_the_portal_schema() {
        let shipped = SourceFile::new(embedded::MAPPING.0, embedded::MAPPING.1);
        let mapping = Mapping::compile(&MappingSource::File(shipped), &schema()).unwrap();
        let schema = schema();
        assert_eq!(
            mapping
                .cedar_type("invoice", &schema)
                .map(|t| t.to_string()),
            Some("Portal::Invoice".to_string())
        );
        assert_eq!(
            mapping
                .cedar_action("PayInvoice", &schema)
                .map(|a| a.to_string()),
            Some(r#"Portal::Action::"PayInvoice""#.to_string())
        );
    }

    #[test]
    fn a_json_mapping_reads_like_yaml() {
        let m = Mapping::compile(
            &file(
                "m.json",
                r#"{"entity_types": {"inv": "Portal::Invoice"}, "properties_precedence": "request", "search": {"max_candidates": 5}}"#,
            ),
            &schema(),
        )
        .unwrap();
        assert_eq!(m.precedence, Precedence::Request);
        assert_eq!(m.unknown_actions, UnknownActions::Deny);
        let reject = Mapping::compile(&file("m.yaml", "unknown_actions: reject\n"), &schema());
        assert_eq!(reject.unwrap().unknown_actions, UnknownActions::Reject);
        assert!(Mapping::compile(&file("m.yaml", "unknown_actions: allow\n"), &schema()).is_err());
        assert_eq!(m.search.max_candidates, 5);
        assert_eq!(m.search.default_page_size, 50);
        assert_eq!(m.reference_type("inv"), "Portal::Invoice");
        assert!(Mapping::compile(&file("m.yaml", "search: {fetch_size: 0}\n"), &schema()).is_err());
    }

    #[test]
    fn precedence_is_one_for_every_type_or_a_default_with_overrides_per_type() {
        let ty = |name: &str| EntityTypeName::from_str(name).unwrap();
        let plain = Mapping::compile(
            &file("m.yaml", "properties_precedence: request\n"),
            &schema(),
        )
        .unwrap();
        assert_eq!(
            plain.precedence_for(&ty("Portal::User")),
            Precedence::Request
        );
        let per_type = Mapping::compile(
            &file(
                "m.yaml",
                "entity_types:\n  bill: Portal::Invoice\nproperties_precedence:\n  default: store\n  types:\n    bill: request\n    Portal::Ticket: ignore\n",
            ),
            &schema(),
        )
        .unwrap();
        assert_eq!(
            per_type.precedence_for(&ty("Portal::User")),
            Precedence::Store
        );
        assert_eq!(
            per_type.precedence_for(&ty("Portal::Invoice")),
            Precedence::Request
        );
        assert_eq!(
            per_type.precedence_for(&ty("Portal::Ticket")),
            Precedence::Ignore
        );
        let unknown = Mapping::compile(
            &file(
                "m.yaml",
                "properties_precedence:\n  default: store\n  types:\n    robot: request\n",
            ),
            &schema(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            unknown.contains("m.yaml:4:5: `properties_precedence.types.robot`"),
            "{unknown}"
        );
        assert!(Mapping::compile(
            &file("m.yaml", "properties_precedence: {default: maybe}\n"),
            &schema()
        )
        .is_err());
    }

    #[test]
    fn unknown_keys_and_undeclared_names_are_problems_with_their_place() {
        let e = Mapping::compile(&file("m.yaml", "entity_typez: {}\n"), &schema())
            .err()
            .unwrap();
        assert_eq!(e.0.first().and_then(|p| p.line), Some(1), "{e}");
        let e = Mapping::compile(
            &file(
                "m.yaml",
                "entity_types:\n  user: Portal::User\n  bot: Portal::Bot\nactions:\n  namespace: Portal\n  names:\n    fly: Fly\n",
            ),
            &schema(),
        )
        .err()
        .unwrap();
        let text = e.to_string();
        assert!(text.contains("m.yaml:3:3: `entity_types.bot`"), "{text}");
        assert!(text.contains("m.yaml:7:5: `actions.names.fly`"), "{text}");
    }

    /// The `authzen_mapping` fuzz target's property (the name action search answers
    /// reads back as the same action) failed on `ViewInvoice: PayInvoice`: action
    /// search answered `ViewInvoice` for the Cedar action `ViewInvoice`, and a PEP
    /// sending that name back was evaluated on `PayInvoice`.
    #[test]
    fn an_alias_may_not_take_the_name_of_another_action() {
        let schema = schema();
        // (text, where the problem is placed: the entry's line when the key is written
        // plainly).
        let shadowing = [
            (
                "actions:\n  namespace: Portal\n  names:\n    ViewInvoice: PayInvoice\n",
                "m.yaml:4:5: `actions.names.ViewInvoice`",
            ),
            (
                "actions:\n  namespace: Portal\n  names:\n    'Portal::Action::\"ViewInvoice\"': PayInvoice\n",
                "m.yaml: `actions.names.Portal::Action::\"ViewInvoice\"`",
            ),
        ];
        for (text, place) in shadowing {
            let e = Mapping::compile(&file("m.yaml", text), &schema)
                .err()
                .unwrap_or_else(|| panic!("accepted {text}"));
            let message = e.to_string();
            assert!(
                message.contains(place)
                    && message.contains(
                        "already, so it cannot stand for `Portal::Action::\"PayInvoice\"`"
                    ),
                "{message}"
            );
            // Tolerated as the shipped mapping is, the alias is dropped: every action's
            // answered name reads back as that action.
            let tolerant = Mapping::compile(
                &MappingSource::Shipped(SourceFile::new("m.yaml", text)),
                &schema,
            )
            .unwrap();
            for action in schema.actions() {
                let name = tolerant.authzen_action(action);
                assert_eq!(tolerant.cedar_action(&name, &schema).as_ref(), Some(action));
            }
        }
        // An alias that only renames its own action is fine.
        let own = "actions:\n  namespace: Portal\n  names:\n    PayInvoice: PayInvoice\n    pay: PayInvoice\n";
        assert!(Mapping::compile(&file("m.yaml", own), &schema).is_ok());
    }
}
