//! `portcullis fmt`: formats `.cedar` files exactly as the cedar CLI's `format` does,
//! by calling the same formatter crate with the same settings, so a repository can be
//! formatted by either tool without the two fighting over whitespace.

use std::path::{Path, PathBuf};

use cedar_policy_formatter::{policies_str_to_pretty, Config};

/// The cedar CLI's defaults for `cedar format`.
const LINE_WIDTH: usize = 80;
const INDENT_WIDTH: isize = 2;

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOutcome {
    /// Already formatted.
    Unchanged,
    /// Not formatted: rewritten, or (with `--check`) only reported.
    Changed,
}

/// Why a file could not be formatted.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}: {message}")]
pub struct FormatError {
    pub file: String,
    pub message: String,
}

/// The formatted text of a policy file.
pub fn format_text(text: &str) -> Result<String, String> {
    let config = Config {
        line_width: LINE_WIDTH,
        indent_width: INDENT_WIDTH,
    };
    // The formatter wraps the parse error, whose own message says what is wrong:
    // show the whole chain on one line.
    policies_str_to_pretty(text, &config).map_err(|e| {
        e.chain()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": ")
    })
}

/// Formats one file; writes it back unless `check` is set.
pub fn format_file(path: &Path, check: bool) -> Result<FileOutcome, FormatError> {
    let error = |message: String| FormatError {
        file: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read: {e}")))?;
    let formatted = format_text(&text).map_err(error)?;
    if formatted == text {
        return Ok(FileOutcome::Unchanged);
    }
    if !check {
        std::fs::write(path, formatted).map_err(|e| error(format!("cannot write: {e}")))?;
    }
    Ok(FileOutcome::Changed)
}

/// The `.cedar` files the given paths name: files as given, directories searched
/// recursively, in name order.
pub fn cedar_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, FormatError> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| FormatError {
            file: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        if meta.is_dir() {
            collect(path, &mut files)?;
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), FormatError> {
    let entries = std::fs::read_dir(dir).map_err(|e| FormatError {
        file: dir.display().to_string(),
        message: format!("cannot read: {e}"),
    })?;
    let mut paths: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            collect(&p, files)?;
        } else if p.extension().is_some_and(|x| x == "cedar") {
            files.push(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_keeps_ids_and_comments() {
        let text = "// why this rule exists\n@id(\"a\")\npermit(principal,action,resource) when { true }; // trailing\n";
        let out = format_text(text).unwrap();
        assert!(out.contains("// why this rule exists"), "{out}");
        assert!(out.contains("// trailing"), "{out}");
        assert!(out.contains("@id(\"a\")"), "{out}");
        assert_eq!(format_text(&out).unwrap(), out, "formatting is idempotent");
    }

    #[test]
    fn a_syntax_error_is_reported_not_rewritten() {
        assert!(format_text("permit(principal, action").is_err());
    }
}
