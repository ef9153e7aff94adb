//! The reports of `portcullis verify`: readable text by default, JSON for CI bots.

use std::fmt::Write as _;

use serde_json::Value;

use super::{Counterexample, Outcome, Replay, Undecided};

/// The JSON report: the [`Outcome`] with an overall `ok`.
pub fn json(outcome: &Outcome) -> String {
    let mut value = serde_json::to_value(outcome).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert("ok".to_string(), Value::Bool(outcome.all_hold()));
    }
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

/// The text report.
pub fn text(outcome: &Outcome) -> String {
    let mut out = String::new();
    let held = outcome.invariants.iter().filter(|i| i.holds).count();
    for inv in &outcome.invariants {
        let mark = if inv.holds { "ok  " } else { "FAIL" };
        let _ = writeln!(
            out,
            "{mark} {} ({}, {})",
            inv.name,
            inv.property,
            environments(inv.environments_checked)
        );
        if inv.holds {
            continue;
        }
        if !inv.description.is_empty() {
            let _ = writeln!(out, "     {}", inv.description);
        }
        for v in &inv.violations {
            let policy = v
                .policy
                .as_ref()
                .map(|p| format!(", policy `{p}`"))
                .unwrap_or_default();
            let _ = writeln!(out, "     violated in {}{policy}:", v.environment);
            counterexample(&mut out, &v.counterexample, &v.replay, "reference");
        }
        undecided(&mut out, &inv.undecided);
    }
    if let Some(review) = &outcome.review {
        let _ = writeln!(
            out,
            "\nchange review against {} ({}):",
            review.against,
            environments(review.environments_checked)
        );
        if review.changes.is_empty() && review.undecided.is_empty() {
            let _ = writeln!(out, "  no request is decided differently");
        }
        for change in &review.changes {
            let _ = writeln!(out, "  {}:", change.environment);
            if let Some(w) = &change.newly_allowed {
                let _ = writeln!(out, "    newly allowed, e.g.:");
                counterexample(&mut out, &w.counterexample, &w.replay, "old policies");
            }
            if let Some(w) = &change.no_longer_allowed {
                let _ = writeln!(out, "    no longer allowed, e.g.:");
                counterexample(&mut out, &w.counterexample, &w.replay, "old policies");
            }
        }
        undecided(&mut out, &review.undecided);
    }
    let _ = writeln!(
        out,
        "\n{held} of {} invariants hold ({:.1}s)",
        outcome.invariants.len(),
        outcome.elapsed_ms as f64 / 1000.0
    );
    out
}

fn counterexample(out: &mut String, cex: &Counterexample, replay: &Replay, other: &str) {
    let indent = "         ";
    let _ = writeln!(out, "       request:\n{indent}{}", compact(&cex.request));
    let _ = writeln!(out, "       entities:");
    match &cex.entities {
        // One entity per line: readable, and each line pastes into an entity file.
        Value::Array(items) => {
            let _ = writeln!(out, "{indent}[");
            let last = items.len().saturating_sub(1);
            for (i, e) in items.iter().enumerate() {
                let comma = if i == last { "" } else { "," };
                let _ = writeln!(out, "{indent}  {}{comma}", compact(e));
            }
            let _ = writeln!(out, "{indent}]");
        }
        other => {
            let _ = writeln!(out, "{indent}{}", compact(other));
        }
    }
    let mut line = format!("       replay: {}", replay.decision.to_uppercase());
    if !replay.determined_by.is_empty() {
        let _ = write!(line, " (determined by {})", replay.determined_by.join(", "));
    }
    if let Some(o) = replay.other_decision {
        let _ = write!(line, "; {other}: {}", o.to_uppercase());
    }
    line.push_str(if replay.confirmed {
        " -- confirms the counterexample"
    } else {
        " -- does NOT confirm the counterexample"
    });
    let _ = writeln!(out, "{line}");
    for e in &replay.errors {
        let _ = writeln!(out, "       error: {e}");
    }
    if let Some(p) = &replay.problem {
        let _ = writeln!(out, "       replay problem: {p}");
    }
}

fn environments(n: usize) -> String {
    if n == 1 {
        "1 request environment".to_string()
    } else {
        format!("{n} request environments")
    }
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn undecided(out: &mut String, items: &[Undecided]) {
    for u in items {
        let policy = u
            .policy
            .as_ref()
            .map(|p| format!(", policy `{p}`"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "     undecided in {}{policy}: {}",
            u.environment, u.message
        );
    }
}
