//! Policy verification: proves properties of a policy set over every possible request
//! and entity data, with Cedar's symbolic compiler (`cedar-policy-symcc`) and the cvc5
//! SMT solver, and reviews what a policy change newly allows.
//!
//! - [`invariants`]: the YAML invariant files and their reference policy sets.
//! - [`counterexample`]: a solver's counterexample in the API's JSON shapes, replayed
//!   through the real authorizer.
//! - [`report`]: the text and JSON reports.
//!
//! Verification is a command-line and CI feature: the decision server never links a
//! solver into the request path. Each check runs once per request environment
//! (principal type, action, resource type) of the schema that an invariant covers.

pub mod cli;
pub mod counterexample;
pub mod invariants;
pub mod report;

use std::collections::HashMap;
use std::time::Instant;

use cedar_policy::{Policy, PolicySet, RequestEnv};
use cedar_policy_symcc::solver::{Decision as SolverDecision, LocalSolver, Solver};
use cedar_policy_symcc::{CedarSymCompiler, CompiledPolicy, CompiledPolicySet, Env};
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::model::Snapshot;
pub use counterexample::{Counterexample, Expectation, Replay};
pub use invariants::{Invariant, PropertyKind};

/// The wall-clock limit the solver gets for each query, in milliseconds. Passed as
/// `--tlimit-per`, a per-query limit, because one solver process serves every query of
/// a run (cvc5's `--tlimit` would bound the whole process).
pub const SOLVER_QUERY_LIMIT_MS: u64 = 60_000;

/// A failure that stops verification before any answer: the solver cannot start or
/// does not answer a trivial query.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(
        "cannot start the SMT solver (`{program}`): {message}. Install cvc5 1.3.1 and set \
         CVC5=/path/to/cvc5, or run `bash scripts/deps/cvc5.sh` and put `.tools/bin` on PATH \
         (see docs/verify.md)"
    )]
    SolverUnavailable { program: String, message: String },
    #[error("cannot turn template link `{link}` into a static policy for the solver: {message}")]
    Link { link: String, message: String },
}

/// A request environment, as shown in reports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct EnvName {
    pub principal_type: String,
    pub action: String,
    pub resource_type: String,
}

impl EnvName {
    pub fn of(env: &RequestEnv) -> Self {
        Self {
            principal_type: env.principal().to_string(),
            action: env.action().to_string(),
            resource_type: env.resource().to_string(),
        }
    }
}

impl std::fmt::Display for EnvName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} / {} / {}",
            self.principal_type, self.action, self.resource_type
        )
    }
}

/// One request environment where a property does not hold.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    pub environment: EnvName,
    /// For `never_errors`: the policy that can error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    pub counterexample: Counterexample,
    pub replay: Replay,
}

/// A request environment the solver could not decide (time limit, solver failure).
#[derive(Debug, Clone, Serialize)]
pub struct Undecided {
    pub environment: EnvName,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    pub message: String,
}

/// The outcome of one invariant over the environments it covers.
#[derive(Debug, Clone, Serialize)]
pub struct InvariantResult {
    pub name: String,
    pub description: String,
    pub file: String,
    pub property: &'static str,
    pub environments_checked: usize,
    pub holds: bool,
    pub violations: Vec<Violation>,
    pub undecided: Vec<Undecided>,
}

/// What changed in one request environment between the old and the new policies.
#[derive(Debug, Clone, Serialize)]
pub struct EnvChange {
    pub environment: EnvName,
    /// A request the new policies allow and the old ones denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newly_allowed: Option<Witness>,
    /// A request the old policies allowed and the new ones deny.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_longer_allowed: Option<Witness>,
}

/// A counterexample and its replay.
#[derive(Debug, Clone, Serialize)]
pub struct Witness {
    pub counterexample: Counterexample,
    pub replay: Replay,
}

/// The change review of `--against`.
#[derive(Debug, Clone, Serialize)]
pub struct Review {
    pub against: String,
    pub environments_checked: usize,
    /// Environments where the decisions differ, in schema order; the others are
    /// unchanged.
    pub changes: Vec<EnvChange>,
    pub undecided: Vec<Undecided>,
}

/// Everything one `portcullis verify` run found.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub invariants: Vec<InvariantResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review: Option<Review>,
    pub elapsed_ms: u128,
}

impl Outcome {
    /// True when every invariant was proved.
    pub fn all_hold(&self) -> bool {
        self.invariants.iter().all(|i| i.holds)
    }
}

/// Runs symcc queries on one solver process, and compiles each policy set once per
/// request environment.
pub struct Verifier<'a> {
    snapshot: &'a Snapshot,
    /// The snapshot's policies with every template link written out as the static
    /// policy it stands for: symcc compiles static policies only.
    policies: PolicySet,
    envs: Vec<RequestEnv>,
    compiler: CedarSymCompiler<LocalSolver>,
    /// The policies under check, compiled per environment (index into `envs`), reused
    /// by every invariant.
    compiled: HashMap<usize, CompiledPolicySet>,
}

/// The static policy set equivalent to `set`: static policies as they are, and each
/// template-linked policy as its template with the slots filled in, under the link's
/// id. Templates themselves decide nothing and are left out.
pub fn static_policies(set: &PolicySet) -> Result<PolicySet, VerifyError> {
    let mut out = PolicySet::new();
    for p in set.policies() {
        let link_error = |message: String| VerifyError::Link {
            link: p.id().to_string(),
            message,
        };
        let policy = match (p.template_id(), p.template_links()) {
            (Some(template_id), Some(values)) => {
                let template = set
                    .template(template_id)
                    .ok_or_else(|| link_error(format!("no template `{template_id}`")))?;
                let mut json = template.to_json().map_err(|e| link_error(e.to_string()))?;
                let values: HashMap<String, serde_json::Value> = values
                    .iter()
                    .map(|(slot, uid)| {
                        (
                            slot.to_string(),
                            serde_json::json!({
                                "type": uid.type_name().to_string(),
                                "id": uid.id().unescaped(),
                            }),
                        )
                    })
                    .collect();
                fill_slots(&mut json, &values);
                Policy::from_json(Some(p.id().clone()), json)
                    .map_err(|e| link_error(e.to_string()))?
            }
            _ => p.clone(),
        };
        out.add(policy).map_err(|e| VerifyError::Link {
            link: p.id().to_string(),
            message: e.to_string(),
        })?;
    }
    Ok(out)
}

/// Replaces `{"slot": "?principal"}`-style scope constraints of a template's JSON with
/// `{"entity": {...}}` for the linked uid.
fn fill_slots(v: &mut serde_json::Value, values: &HashMap<String, serde_json::Value>) {
    match v {
        serde_json::Value::Object(map) => {
            let filled = map
                .get("slot")
                .and_then(|s| s.as_str())
                .and_then(|s| values.get(s))
                .cloned();
            if let Some(entity) = filled {
                map.remove("slot");
                map.insert("entity".to_string(), entity);
            }
            for x in map.values_mut() {
                fill_slots(x, values);
            }
        }
        serde_json::Value::Array(items) => {
            for x in items {
                fill_slots(x, values);
            }
        }
        _ => {}
    }
}

/// The solver command line: `CVC5` or `cvc5` on PATH, as symcc looks it up.
fn solver_program() -> String {
    std::env::var("CVC5").unwrap_or_else(|_| "cvc5".to_string())
}

fn spawn_solver() -> Result<CedarSymCompiler<LocalSolver>, VerifyError> {
    let unavailable = |message: String| VerifyError::SolverUnavailable {
        program: solver_program(),
        message,
    };
    let solver = LocalSolver::cvc5_with_args([format!("--tlimit-per={SOLVER_QUERY_LIMIT_MS}")])
        .map_err(|e| unavailable(e.to_string()))?;
    CedarSymCompiler::new(solver).map_err(|e| unavailable(e.to_string()))
}

impl<'a> Verifier<'a> {
    /// Starts the solver. Fails when it cannot be spawned.
    pub fn new(snapshot: &'a Snapshot) -> Result<Self, VerifyError> {
        let policies = static_policies(&snapshot.policies)?;
        let compiler = spawn_solver()?;
        Ok(Self {
            snapshot,
            policies,
            envs: snapshot.schema.request_envs().collect(),
            compiler,
            compiled: HashMap::new(),
        })
    }

    /// Checks that the solver answers a trivial query, so that a missing or broken
    /// solver is reported once, up front, instead of as an undecided result per check.
    /// The query is written directly: symcc would fold a trivial policy query to a
    /// constant and never ask the solver.
    pub async fn probe(&mut self) -> Result<(), VerifyError> {
        let unavailable = |message: String| VerifyError::SolverUnavailable {
            program: solver_program(),
            message,
        };
        let solver = self.compiler.solver_mut();
        solver
            .smtlib_input()
            .write_all(b"(reset)\n(set-logic ALL)\n(declare-const probe Bool)\n(assert probe)\n")
            .await
            .map_err(|e| unavailable(format!("cannot write to the solver: {e}")))?;
        match solver.check_sat().await {
            Ok(SolverDecision::Sat) => Ok(()),
            Ok(other) => Err(unavailable(format!(
                "a satisfiable probe query was answered {other:?}"
            ))),
            Err(e) => Err(unavailable(e.to_string())),
        }
    }

    /// The environments an invariant covers, as indexes into `envs`.
    fn covered(&self, inv: &Invariant) -> Vec<usize> {
        (0..self.envs.len())
            .filter(|i| self.envs.get(*i).is_some_and(|e| inv.covers.covers(e)))
            .collect()
    }

    fn compiled_policies(&mut self, index: usize) -> Result<CompiledPolicySet, String> {
        if let Some(c) = self.compiled.get(&index) {
            return Ok(c.clone());
        }
        let env = self.env(index)?;
        let c = CompiledPolicySet::compile(&self.policies, &env, &self.snapshot.schema)
            .map_err(|e| crate::error_chain(&e))?;
        self.compiled.insert(index, c.clone());
        Ok(c)
    }

    fn env(&self, index: usize) -> Result<RequestEnv, String> {
        self.envs
            .get(index)
            .cloned()
            .ok_or_else(|| format!("no request environment #{index}"))
    }

    /// A solver error may leave the process dead (cvc5 quits on a parse error), so
    /// the next query gets a fresh one.
    fn after_solver_error(&mut self) {
        if let Ok(fresh) = spawn_solver() {
            self.compiler = fresh;
        }
    }

    /// Checks one invariant over every environment it covers.
    pub async fn check(&mut self, inv: &Invariant) -> InvariantResult {
        let covered = self.covered(inv);
        let mut violations = Vec::new();
        let mut undecided = Vec::new();
        for &index in &covered {
            let Ok(env) = self.env(index) else { continue };
            let name = EnvName::of(&env);
            match inv.property {
                PropertyKind::NeverErrors => {
                    self.check_never_errors(&env, &name, &mut violations, &mut undecided)
                        .await;
                }
                _ => match self.check_set_property(inv, index).await {
                    Ok(None) => {}
                    Ok(Some((env_found, expectation))) => {
                        let cex = self
                            .witness(&env_found, expectation, inv.reference.as_ref())
                            .await;
                        violations.push(Violation {
                            environment: name,
                            policy: None,
                            counterexample: cex.counterexample,
                            replay: cex.replay,
                        });
                    }
                    Err(message) => undecided.push(Undecided {
                        environment: name,
                        policy: None,
                        message,
                    }),
                },
            }
        }
        InvariantResult {
            name: inv.name.clone(),
            description: inv.description.clone(),
            file: inv.file.clone(),
            property: inv.property.name(),
            environments_checked: covered.len(),
            holds: violations.is_empty() && undecided.is_empty(),
            violations,
            undecided,
        }
    }

    /// `always_denies`, `implies`, `disjoint`, `equivalent` in one environment: the
    /// counterexample if there is one, with what its replay must show.
    async fn check_set_property(
        &mut self,
        inv: &Invariant,
        index: usize,
    ) -> Result<Option<(Env, Expectation)>, String> {
        let env = self.env(index)?;
        let policies = self.compiled_policies(index)?;
        let reference = match &inv.reference {
            Some(r) => Some(
                CompiledPolicySet::compile(r, &env, &self.snapshot.schema)
                    .map_err(|e| crate::error_chain(&e))?,
            ),
            None => None,
        };
        let answer = match (inv.property, reference.as_ref()) {
            (PropertyKind::AlwaysDenies, _) => self
                .compiler
                .check_always_denies_with_counterexample_opt(&policies)
                .await
                .map(|o| o.map(|e| (e, Expectation::Allowed))),
            (PropertyKind::Implies, Some(r)) => self
                .compiler
                .check_implies_with_counterexample_opt(&policies, r)
                .await
                .map(|o| o.map(|e| (e, Expectation::AllowedNotByReference))),
            (PropertyKind::Disjoint, Some(r)) => self
                .compiler
                .check_disjoint_with_counterexample_opt(&policies, r)
                .await
                .map(|o| o.map(|e| (e, Expectation::AllowedByBoth))),
            (PropertyKind::Equivalent, Some(r)) => self
                .compiler
                .check_equivalent_with_counterexample_opt(&policies, r)
                .await
                .map(|o| o.map(|e| (e, Expectation::DecisionsDiffer))),
            (kind, _) => {
                return Err(format!(
                    "property `{}` cannot be checked without a reference set",
                    kind.name()
                ))
            }
        };
        answer.map_err(|e| {
            let m = crate::error_chain(&e);
            self.after_solver_error();
            m
        })
    }

    /// `never_errors`: each policy on its own, because symcc proves it per policy.
    async fn check_never_errors(
        &mut self,
        env: &RequestEnv,
        name: &EnvName,
        violations: &mut Vec<Violation>,
        undecided: &mut Vec<Undecided>,
    ) {
        let policies: Vec<Policy> = self.policies.policies().cloned().collect();
        for policy in policies {
            let id = policy.id().to_string();
            let answer = match CompiledPolicy::compile(&policy, env, &self.snapshot.schema) {
                Ok(compiled) => self
                    .compiler
                    .check_never_errors_with_counterexample_opt(&compiled)
                    .await
                    .map_err(|e| {
                        let m = crate::error_chain(&e);
                        self.after_solver_error();
                        m
                    }),
                Err(e) => Err(crate::error_chain(&e)),
            };
            match answer {
                Ok(None) => {}
                Ok(Some(found)) => {
                    let w = self
                        .witness(&found, Expectation::PolicyErrors(id.clone()), None)
                        .await;
                    violations.push(Violation {
                        environment: name.clone(),
                        policy: Some(id),
                        counterexample: w.counterexample,
                        replay: w.replay,
                    });
                }
                Err(message) => undecided.push(Undecided {
                    environment: name.clone(),
                    policy: Some(id),
                    message,
                }),
            }
        }
    }

    async fn witness(
        &self,
        found: &Env,
        expectation: Expectation,
        reference: Option<&PolicySet>,
    ) -> Witness {
        let counterexample = Counterexample::from_env(found);
        let replay =
            counterexample::replay(self.snapshot, &counterexample, &expectation, reference).await;
        Witness {
            counterexample,
            replay,
        }
    }

    /// One direction of the change review: a request `allowing` allows and `bound` does
    /// not, replayed against the new and the old snapshot. A solver error is recorded as
    /// undecided.
    async fn review_direction(
        &mut self,
        allowing: &CompiledPolicySet,
        bound: &CompiledPolicySet,
        old: &Snapshot,
        name: &EnvName,
        expectation: Expectation,
        undecided: &mut Vec<Undecided>,
    ) -> Option<Witness> {
        match self
            .compiler
            .check_implies_with_counterexample_opt(allowing, bound)
            .await
        {
            Ok(Some(found)) => {
                let counterexample = Counterexample::from_env(&found);
                let replay = counterexample::replay_against(
                    self.snapshot,
                    old,
                    &counterexample,
                    &expectation,
                )
                .await;
                Some(Witness {
                    counterexample,
                    replay,
                })
            }
            Ok(None) => None,
            Err(e) => {
                let what = match expectation {
                    Expectation::NewlyAllowed => "newly allowed",
                    _ => "no longer allowed",
                };
                undecided.push(Undecided {
                    environment: name.clone(),
                    policy: None,
                    message: format!("{what}: {}", crate::error_chain(&e)),
                });
                self.after_solver_error();
                None
            }
        }
    }

    /// The change review: per environment, whether the policies under check allow a
    /// request the old ones did not, and the reverse.
    pub async fn review(&mut self, old: &Snapshot, against: &str) -> Review {
        let mut changes = Vec::new();
        let mut undecided = Vec::new();
        for index in 0..self.envs.len() {
            let Ok(env) = self.env(index) else { continue };
            let name = EnvName::of(&env);
            let compiled = self.compiled_policies(index).and_then(|new| {
                CompiledPolicySet::compile(&old.policies, &env, &self.snapshot.schema)
                    .map(|o| (new, o))
                    .map_err(|e| crate::error_chain(&e))
            });
            let (new, old_set) = match compiled {
                Ok(pair) => pair,
                Err(message) => {
                    undecided.push(Undecided {
                        environment: name,
                        policy: None,
                        message,
                    });
                    continue;
                }
            };
            let mut change = EnvChange {
                environment: name.clone(),
                newly_allowed: None,
                no_longer_allowed: None,
            };
            // Newly allowed: allowed by the new set and not by the old one; and the
            // reverse.
            change.newly_allowed = self
                .review_direction(
                    &new,
                    &old_set,
                    old,
                    &name,
                    Expectation::NewlyAllowed,
                    &mut undecided,
                )
                .await;
            change.no_longer_allowed = self
                .review_direction(
                    &old_set,
                    &new,
                    old,
                    &name,
                    Expectation::NoLongerAllowed,
                    &mut undecided,
                )
                .await;
            if change.newly_allowed.is_some() || change.no_longer_allowed.is_some() {
                changes.push(change);
            }
        }
        Review {
            against: against.to_string(),
            environments_checked: self.envs.len(),
            changes,
            undecided,
        }
    }
}

/// Checks every invariant, then the change review when an old snapshot is given.
pub async fn run(
    snapshot: &Snapshot,
    invariants: &[Invariant],
    against: Option<(&Snapshot, &str)>,
) -> Result<Outcome, VerifyError> {
    let started = Instant::now();
    let mut verifier = Verifier::new(snapshot)?;
    verifier.probe().await?;
    let mut results = Vec::with_capacity(invariants.len());
    for inv in invariants {
        results.push(verifier.check(inv).await);
    }
    let review = match against {
        Some((old, name)) => Some(verifier.review(old, name).await),
        None => None,
    };
    Ok(Outcome {
        invariants: results,
        review,
        elapsed_ms: started.elapsed().as_millis(),
    })
}

#[cfg(test)]
mod link_tests {
    use super::*;
    use crate::model::{compile, Sources};

    #[test]
    fn a_template_link_becomes_the_static_policy_it_stands_for() {
        let snapshot = compile(&Sources::embedded()).unwrap();
        let set = static_policies(&snapshot.policies).unwrap();
        assert_eq!(set.templates().count(), 0);
        let id = cedar_policy::PolicyId::new("bea-views-quote-q-4001");
        let link = set.policy(&id).unwrap();
        assert!(link.template_id().is_none(), "the link is static now");
        let text = link.to_string();
        assert!(
            text.contains(r#"principal == Portal::User::"bea""#),
            "{text}"
        );
        assert!(
            text.contains(r#"resource == Portal::Quote::"q-4001""#),
            "{text}"
        );
        assert_eq!(
            set.policies().count(),
            snapshot.active_policy_count(),
            "every static policy and link is kept"
        );
    }
}
