//! Reporters: the terminal output of a run, its policy coverage, and JUnit XML for CI.

use std::fmt::Write as _;
use std::io::Write;

use super::{Coverage, Outcome, PolicyKind, RunResult};

/// Pass or fail per case, a diff under each failure, and the totals line
/// `N passed, M failed`.
pub fn text(result: &RunResult, out: &mut dyn Write) {
    let _ = writeln!(
        out,
        "running {} case(s) from {} file(s)",
        result.suites.iter().map(|s| s.cases.len()).sum::<usize>(),
        result.suites.len()
    );
    let mut failures: Vec<String> = Vec::new();
    for suite in &result.suites {
        let _ = writeln!(out, "\n{}", suite.file);
        if let Some(e) = &suite.load_error {
            let _ = writeln!(out, "  ERROR the file does not load: {e}");
            failures.push(format!("{}: (the file does not load)", suite.file));
        }
        for case in &suite.cases {
            match &case.outcome {
                Outcome::Pass => {
                    let _ = writeln!(out, "  ok    {}", case.name);
                }
                Outcome::Fail(mismatches) => {
                    let _ = writeln!(out, "  FAIL  {}", case.name);
                    let _ = write!(out, "{}", indent(&diff(mismatches), "        "));
                    failures.push(format!("{}: {}", suite.file, case.name));
                }
                Outcome::Error(e) => {
                    let _ = writeln!(out, "  ERROR {}", case.name);
                    let _ = writeln!(out, "        {e}");
                    failures.push(format!("{}: {}", suite.file, case.name));
                }
            }
        }
    }
    if !failures.is_empty() {
        let _ = writeln!(out, "\nfailures:");
        for f in &failures {
            let _ = writeln!(out, "  {f}");
        }
    }
    let _ = writeln!(
        out,
        "\n{} passed, {} failed ({:.2}s)",
        result.passed(),
        result.failed(),
        result.elapsed.as_secs_f64()
    );
}

/// The mismatches as a small diff: `-` expected, `+` actual.
pub fn diff(mismatches: &[super::Mismatch]) -> String {
    let mut s = String::from("--- expected\n+++ actual\n");
    for m in mismatches {
        let _ = writeln!(s, "- {}: {}", m.field, m.expected);
        let _ = writeln!(s, "+ {}: {}", m.field, m.actual);
    }
    s
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines().map(|l| format!("{prefix}{l}\n")).collect()
}

/// The coverage summary and the policies no case made determining.
pub fn coverage(cov: &Coverage, out: &mut dyn Write) {
    let _ = writeln!(
        out,
        "\npolicy coverage: {} of {} policies determining in at least one case ({:.1}%)",
        cov.covered(),
        cov.total,
        cov.percent()
    );
    for (id, kind, place) in &cov.uncovered {
        let kind = match kind {
            PolicyKind::Link => "template-linked policy",
            PolicyKind::Static | PolicyKind::Template => "policy",
        };
        let _ = writeln!(out, "  not covered: {kind} `{id}` ({place})");
    }
    for t in &cov.unlinked_templates {
        let _ = writeln!(
            out,
            "  note: template `{t}` has no links, so no case can make it determining"
        );
    }
}

/// Escapes text for XML attribute values and character data. Characters XML 1.0
/// forbids are dropped, so that any message stays well-formed.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// The run as JUnit XML: one `<testsuite>` per file, one `<testcase>` per case; a
/// mismatch is a `<failure>` with the diff, a case that could not be decided (or a file
/// that did not load) an `<error>`.
pub fn junit(result: &RunResult) -> String {
    let failures = |s: &super::SuiteResult| {
        s.cases
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Fail(_)))
            .count()
    };
    let errors = |s: &super::SuiteResult| {
        s.cases
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Error(_)))
            .count()
            + usize::from(s.load_error.is_some())
    };
    let tests = |s: &super::SuiteResult| s.cases.len() + usize::from(s.load_error.is_some());
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"portcullis test\" tests=\"{}\" failures=\"{}\" errors=\"{}\" time=\"{:.6}\">",
        result.suites.iter().map(tests).sum::<usize>(),
        result.suites.iter().map(failures).sum::<usize>(),
        result.suites.iter().map(errors).sum::<usize>(),
        result.elapsed.as_secs_f64()
    );
    for suite in &result.suites {
        let file = xml_escape(&suite.file);
        let time: f64 = suite.cases.iter().map(|c| c.elapsed.as_secs_f64()).sum();
        let _ = writeln!(
            x,
            "  <testsuite name=\"{file}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" time=\"{time:.6}\">",
            tests(suite),
            failures(suite),
            errors(suite)
        );
        if let Some(e) = &suite.load_error {
            let _ = writeln!(
                x,
                "    <testcase name=\"(load)\" classname=\"{file}\" time=\"0\">\n      <error message=\"{}\" type=\"load\"/>\n    </testcase>",
                xml_escape(e)
            );
        }
        for case in &suite.cases {
            let name = xml_escape(&case.name);
            let time = case.elapsed.as_secs_f64();
            match &case.outcome {
                Outcome::Pass => {
                    let _ = writeln!(
                        x,
                        "    <testcase name=\"{name}\" classname=\"{file}\" time=\"{time:.6}\"/>"
                    );
                }
                Outcome::Fail(mismatches) => {
                    let summary = mismatches
                        .iter()
                        .map(|m| format!("{}: expected {}, got {}", m.field, m.expected, m.actual))
                        .collect::<Vec<_>>()
                        .join("; ");
                    let _ = writeln!(
                        x,
                        "    <testcase name=\"{name}\" classname=\"{file}\" time=\"{time:.6}\">\n      <failure message=\"{}\" type=\"mismatch\">{}</failure>\n    </testcase>",
                        xml_escape(&summary),
                        xml_escape(&diff(mismatches))
                    );
                }
                Outcome::Error(e) => {
                    let _ = writeln!(
                        x,
                        "    <testcase name=\"{name}\" classname=\"{file}\" time=\"{time:.6}\">\n      <error message=\"{}\" type=\"error\"/>\n    </testcase>",
                        xml_escape(e)
                    );
                }
            }
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_markup_out_of_the_xml() {
        assert_eq!(
            xml_escape("a<b>&\"c\"'\u{1}"),
            "a&lt;b&gt;&amp;&quot;c&quot;&apos;"
        );
    }
}
