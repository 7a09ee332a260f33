//! The validation gate: whether new content is fit to reach the app. The decide stage asks
//! [`Validator::check`] before acting; invalid content holds the action, so the app keeps its
//! last good configuration. `auto` parses changed `.yaml`/`.yml`, `.json` and `.toml` files by
//! extension; a user command (`--validate-cmd`, argv, no shell) must exit 0.
//!
//! Files are read from the exact generation the snapshot hashed and their digest is checked
//! again, so a verdict always belongs to the content hash it is remembered under.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::snapshot::{Digest, Layout, VolumeSnapshot};

/// How long a validation command may run before it counts as failed.
pub const VALIDATE_CMD_TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes of a failing command's output kept for the log.
const OUTPUT_TAIL: usize = 600;

/// How new content is validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validation {
    /// No validation: every change is acted on.
    None,
    /// Parse changed files by extension (YAML, JSON, TOML).
    Auto,
    /// Run this command (argument vector); exit 0 means valid.
    Command(Vec<String>),
}

/// Why content was judged invalid, with where when known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// A file does not parse.
    #[error("{file}{location}: invalid {format}: {message}", location = Location(*.line, *.column))]
    Syntax {
        /// The file, as a path on disk.
        file: PathBuf,
        /// The format it was parsed as.
        format: &'static str,
        /// 1-based line, when the parser knows it.
        line: Option<usize>,
        /// 1-based column, when the parser knows it.
        column: Option<usize>,
        /// The parser's message.
        message: String,
    },
    /// The validation command exited non-zero, timed out or could not start.
    #[error("validation command {command:?} {outcome}{output}", output = Output(.output))]
    Command {
        /// The command's program name.
        command: String,
        /// `exited with status 1`, `timed out after 30s`, ...
        outcome: String,
        /// The tail of its stdout and stderr.
        output: String,
    },
}

struct Location(Option<usize>, Option<usize>);

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(line), Some(column)) => write!(f, ":{line}:{column}"),
            (Some(line), None) => write!(f, ":{line}"),
            _ => Ok(()),
        }
    }
}

struct Output<'a>(&'a str);

impl fmt::Display for Output<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.trim() {
            "" => Ok(()),
            text => write!(f, ": {}", text.replace('\n', " | ")),
        }
    }
}

/// A verdict on one volume's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Fit to act on.
    Valid,
    /// Not fit; the action is held.
    Invalid(Invalid),
    /// The files on disk no longer match the snapshot (a newer version is being written); no
    /// verdict, and the newer version will arrive as its own change.
    Stale,
}

/// Runs the configured validation.
#[derive(Debug, Clone)]
pub struct Validator {
    validation: Validation,
}

impl Validator {
    /// A validator for `validation`.
    pub fn new(validation: Validation) -> Self {
        Validator { validation }
    }

    /// Whether validation is switched off.
    pub fn is_none(&self) -> bool {
        self.validation == Validation::None
    }

    /// Validates the keys `changed` of `snapshot` (the volume at `volume`); `changed_volumes`
    /// goes to a command's `NUDGE_CHANGED`.
    pub async fn check(
        &self,
        volume: &Path,
        snapshot: &VolumeSnapshot,
        changed: &[String],
        changed_volumes: &str,
    ) -> Verdict {
        match &self.validation {
            Validation::None => Verdict::Valid,
            Validation::Auto => check_files(volume, snapshot, changed),
            Validation::Command(argv) => run_command(argv, changed_volumes).await,
        }
    }
}

/// Parses every changed file whose extension names a format nudge knows.
fn check_files(volume: &Path, snapshot: &VolumeSnapshot, changed: &[String]) -> Verdict {
    for key in changed {
        let Some(format) = format_of(key) else {
            continue;
        };
        let Some(digest) = snapshot.files.get(key) else {
            continue;
        };
        let file = file_path(volume, snapshot, key);
        let Ok(bytes) = std::fs::read(&file) else {
            return Verdict::Stale;
        };
        if Digest(Sha256::digest(&bytes).into()) != *digest {
            return Verdict::Stale;
        }
        let text = String::from_utf8_lossy(&bytes);
        if let Err(e) = parse(format, &text) {
            return Verdict::Invalid(Invalid::Syntax {
                file: volume.join(key),
                format: format.name(),
                line: e.line,
                column: e.column,
                message: e.message,
            });
        }
    }
    Verdict::Valid
}

/// Where a key of a snapshot lives on disk: inside the generation that was hashed.
fn file_path(volume: &Path, snapshot: &VolumeSnapshot, key: &str) -> PathBuf {
    match &snapshot.layout {
        Layout::Kubelet(generation) => volume.join(generation).join(key),
        Layout::Directory => volume.join(key),
        Layout::File => volume.to_path_buf(),
    }
}

/// A format known to `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.yaml`, `.yml` (every document of a multi-document file).
    Yaml,
    /// `.json`.
    Json,
    /// `.toml`.
    Toml,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Yaml => "YAML",
            Format::Json => "JSON",
            Format::Toml => "TOML",
        }
    }
}

/// The format a key's extension names, if any.
pub fn format_of(key: &str) -> Option<Format> {
    let ext = Path::new(key).extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "yaml" | "yml" => Some(Format::Yaml),
        "json" => Some(Format::Json),
        "toml" => Some(Format::Toml),
        _ => None,
    }
}

/// A parse error with its 1-based position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line.
    pub line: Option<usize>,
    /// 1-based column.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// Parses `text` as `format`, only for syntax.
pub fn parse(format: Format, text: &str) -> Result<(), ParseError> {
    match format {
        Format::Yaml => {
            for document in serde_yaml::Deserializer::from_str(text) {
                let parsed: Result<serde_yaml::Value, _> =
                    serde::Deserialize::deserialize(document);
                parsed.map_err(|e| {
                    let at = e.location();
                    ParseError {
                        line: at.as_ref().map(|l| l.line()),
                        column: at.as_ref().map(|l| l.column()),
                        message: strip_position(&e.to_string()),
                    }
                })?;
            }
            Ok(())
        }
        Format::Json => serde_json::from_str::<serde_json::Value>(text)
            .map(drop)
            .map_err(|e| ParseError {
                line: Some(e.line()),
                column: Some(e.column()),
                message: strip_position(&e.to_string()),
            }),
        Format::Toml => text.parse::<toml::Table>().map(drop).map_err(|e| {
            let (line, column) = e.span().map(|span| line_column(text, span.start)).unzip();
            ParseError {
                line,
                column,
                message: e.message().trim().to_owned(),
            }
        }),
    }
}

/// Parsers append " at line L column C"; the position is reported separately.
fn strip_position(message: &str) -> String {
    let cut = message.find(" at line ").unwrap_or(message.len());
    message[..cut].to_owned()
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Runs the validation command; exit 0 is valid.
async fn run_command(argv: &[String], changed_volumes: &str) -> Verdict {
    let Some((program, args)) = argv.split_first() else {
        return Verdict::Valid;
    };
    let invalid = |outcome: String, output: String| {
        Verdict::Invalid(Invalid::Command {
            command: program.clone(),
            outcome,
            output,
        })
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .env("NUDGE_CHANGED", changed_volumes)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(child) => child,
        Err(e) => return invalid(format!("could not start: {e}"), String::new()),
    };
    match tokio::time::timeout(VALIDATE_CMD_TIMEOUT, child.wait_with_output()).await {
        Err(_) => invalid(
            format!("timed out after {}s", VALIDATE_CMD_TIMEOUT.as_secs()),
            String::new(),
        ),
        Ok(Err(e)) => invalid(format!("failed: {e}"), String::new()),
        Ok(Ok(out)) if out.status.success() => Verdict::Valid,
        Ok(Ok(out)) => invalid(
            format!("exited with {}", out.status),
            output_tail(&out.stdout, &out.stderr),
        ),
    }
}

/// The last [`OUTPUT_TAIL`] bytes of a command's stdout and stderr, for a log line.
pub fn output_tail(stdout: &[u8], stderr: &[u8]) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(stdout),
        String::from_utf8_lossy(stderr)
    );
    let text = text.trim();
    let mut start = text.len().saturating_sub(OUTPUT_TAIL);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

/// Splits a command line into words: whitespace separates, '…' and "…" quote, `\` escapes.
/// No shell runs; write `sh -c '…'` for one.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => words.extend(word.take()),
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("unterminated ' quote".into()),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => w.extend(chars.next()),
                        Some(c) => w.push(c),
                        None => return Err("unterminated \" quote".into()),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).extend(chars.next()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_error_has_line_and_column() {
        let e = parse(Format::Yaml, "a: 1\nb: [2\n").unwrap_err();
        assert!(e.line.is_some() && e.column.is_some(), "{e:?}");
        assert!(!e.message.contains(" at line "), "{e:?}");
    }

    #[test]
    fn every_yaml_document_is_checked() {
        assert!(parse(Format::Yaml, "a: 1\n---\nb: 2\n").is_ok());
        assert!(parse(Format::Yaml, "a: 1\n---\nb: : :\n  - x\n").is_err());
    }

    #[test]
    fn json_and_toml_errors_have_positions() {
        let e = parse(Format::Json, "{\n  \"a\": 1,\n}").unwrap_err();
        assert_eq!(e.line, Some(3));
        let e = parse(Format::Toml, "a = 1\nb = \n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e:?}");
        assert!(parse(Format::Toml, "[x]\na = 1\n").is_ok());
    }

    #[test]
    fn formats_come_from_the_extension() {
        assert_eq!(format_of("app.YML"), Some(Format::Yaml));
        assert_eq!(format_of("dir/a.json"), Some(Format::Json));
        assert_eq!(format_of("a.toml"), Some(Format::Toml));
        assert_eq!(format_of("nginx.conf"), None);
        assert_eq!(format_of("yaml"), None);
    }

    #[test]
    fn words_split_like_a_shell_without_one() {
        assert_eq!(
            split_words(r#"nginx -t -c '/etc/a b.conf' "x\"y" z\ w"#).unwrap(),
            ["nginx", "-t", "-c", "/etc/a b.conf", "x\"y", "z w"]
        );
        assert!(split_words("a 'b").is_err());
        assert_eq!(split_words("  ").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn invalid_syntax_names_file_line_and_column() {
        let e = Invalid::Syntax {
            file: "/etc/config/app.yaml".into(),
            format: "YAML",
            line: Some(3),
            column: Some(7),
            message: "did not find expected key".into(),
        };
        assert_eq!(
            e.to_string(),
            "/etc/config/app.yaml:3:7: invalid YAML: did not find expected key"
        );
    }
}
