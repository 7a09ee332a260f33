//! The config file layer (`--config FILE`, `RELOAD_CONFIG`): a YAML mapping whose keys are the
//! long flag names (`watch`, `process-regex`, `log-format`, ...) and whose values are what the
//! flag takes (a scalar, or a list for repeatable flags).
//!
//! Precedence is file < environment < command line. The layer is generic over clap: every
//! argument of the command is a valid key, so flags added later work in the file with no change
//! here. A key is filled from the file only when clap says its value came from the default (or
//! nowhere); the file's values become extra `--key=value` arguments that go through the very
//! same parser and validation as flags. Unknown keys are an error naming the key, file and line.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};
use serde_yaml::Value;

/// Keys that exist as flags but make no sense in the file.
const NOT_IN_FILE: &[&str] = &["config", "help", "version"];

/// Why the config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("cannot read config file {path} (--config, RELOAD_CONFIG): {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML (serde_yaml's message names the line).
    #[error("config file {path}: invalid YAML: {source}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser error, with its location.
        #[source]
        source: serde_yaml::Error,
    },
    /// The top level is not a mapping of settings.
    #[error("config file {path}: expected a mapping of settings such as `watch: /etc/config`")]
    NotAMapping {
        /// The file.
        path: PathBuf,
    },
    /// A key that is not a setting.
    #[error("config file {path} line {line}: unknown key {key:?}; known keys: {known}")]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// 1-based line of the key.
        line: usize,
        /// The key as written.
        key: String,
        /// Every valid key, comma-separated.
        known: String,
    },
    /// A value that is neither a scalar nor a list of scalars.
    #[error("config file {path} line {line}: {key}: expected a value or a list of values")]
    BadValue {
        /// The file.
        path: PathBuf,
        /// 1-based line of the key.
        line: usize,
        /// The key.
        key: String,
    },
}

/// Reads `path` and returns the extra arguments it contributes to `matches`, the parsed
/// command line of `command` (the command that owns the settings).
pub fn args_from_file(
    path: &Path,
    command: &Command,
    matches: &ArgMatches,
) -> Result<Vec<OsString>, FileError> {
    let text = fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    file_args(&text, path, command, matches)
}

/// The extra `--key=value` arguments for every setting in `text` that neither the environment
/// nor the command line already gives.
pub fn file_args(
    text: &str,
    path: &Path,
    command: &Command,
    matches: &ArgMatches,
) -> Result<Vec<OsString>, FileError> {
    let mapping = match serde_yaml::from_str::<Value>(text) {
        Ok(Value::Mapping(mapping)) => mapping,
        // An empty file sets nothing.
        Ok(Value::Null) => return Ok(Vec::new()),
        Ok(_) => return Err(FileError::NotAMapping { path: path.into() }),
        Err(source) => {
            return Err(FileError::Syntax {
                path: path.into(),
                source,
            })
        }
    };
    let mut extra = Vec::new();
    for (key, value) in &mapping {
        let key = scalar(key).unwrap_or_default();
        let arg = command
            .get_arguments()
            .find(|a| names_of(a).any(|n| n == key) && !NOT_IN_FILE.contains(&key.as_str()))
            .ok_or_else(|| FileError::UnknownKey {
                path: path.into(),
                line: line_of(text, &key),
                key: key.clone(),
                known: known_keys(command),
            })?;
        let bad_value = || FileError::BadValue {
            path: path.into(),
            line: line_of(text, &key),
            key: key.clone(),
        };
        let values = values(value).ok_or_else(bad_value)?;
        let given = matches!(
            matches.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if given {
            continue;
        }
        extra.extend(flag_args(&key, arg.get_action().takes_values(), &values));
    }
    Ok(extra)
}

/// `--key=value` per value; a flag that takes no value appears once if its value is true.
fn flag_args(key: &str, takes_values: bool, values: &[String]) -> Vec<OsString> {
    if takes_values {
        // `=` keeps a value that starts with `-` from being read as a flag.
        values
            .iter()
            .map(|v| OsString::from(format!("--{key}={v}")))
            .collect()
    } else {
        let on = values
            .iter()
            .any(|v| matches!(v.as_str(), "true" | "yes" | "on" | "1"));
        on.then(|| OsString::from(format!("--{key}")))
            .into_iter()
            .collect()
    }
}

/// The long flag name and its aliases (`debounce` for `settle`): each is a valid key.
fn names_of(arg: &clap::Arg) -> impl Iterator<Item = &str> {
    arg.get_long()
        .into_iter()
        .chain(arg.get_all_aliases().unwrap_or_default())
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A scalar or a list of scalars as strings; `null` is no value.
fn values(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::Null => Some(Vec::new()),
        Value::Sequence(items) => items.iter().map(scalar).collect(),
        other => scalar(other).map(|s| vec![s]),
    }
}

fn known_keys(command: &Command) -> String {
    command
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|long| !NOT_IN_FILE.contains(long))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The 1-based line where top-level `key` is written (serde_yaml keeps no positions for
/// keys that parsed fine); 0 if it cannot be found.
fn line_of(text: &str, key: &str) -> usize {
    let quoted = [key.to_owned(), format!("\"{key}\""), format!("'{key}'")];
    text.lines()
        .position(|line| {
            quoted.iter().any(|q| {
                line.strip_prefix(q.as_str())
                    .is_some_and(|rest| rest.trim_start().starts_with(':'))
            })
        })
        .map_or(0, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    fn command() -> Command {
        Command::new("t")
            .arg(Arg::new("watch").long("watch").action(ArgAction::Append))
            .arg(
                Arg::new("signal")
                    .long("signal")
                    .env("T_SIGNAL")
                    .default_value("SIGHUP"),
            )
            .arg(Arg::new("dry").long("dry").action(ArgAction::SetTrue))
            .arg(Arg::new("settle").long("settle").alias("debounce"))
            .arg(Arg::new("config").long("config"))
    }

    fn extra(text: &str, argv: &[&str]) -> Result<Vec<String>, FileError> {
        let cmd = command();
        let matches = cmd
            .clone()
            .try_get_matches_from(std::iter::once("t").chain(argv.iter().copied()))
            .expect("parses");
        file_args(text, Path::new("f.yaml"), &cmd, &matches).map(|v| {
            v.into_iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect()
        })
    }

    #[test]
    fn file_values_fill_only_what_the_command_line_left_at_default() {
        let text = "watch: [/a, /b]\nsignal: USR1\ndry: true\n";
        assert_eq!(
            extra(text, &[]).expect("valid"),
            ["--watch=/a", "--watch=/b", "--signal=USR1", "--dry"]
        );
        assert_eq!(
            extra(text, &["--signal", "HUP"]).expect("valid"),
            ["--watch=/a", "--watch=/b", "--dry"]
        );
    }

    #[test]
    fn flag_aliases_are_keys_too() {
        assert_eq!(
            extra("debounce: 1s\n", &[]).expect("valid"),
            ["--debounce=1s"]
        );
    }

    #[test]
    fn unknown_key_names_key_file_and_line() {
        let err = extra("watch: /a\n\nsginal: HUP\n", &[]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("f.yaml line 3") && text.contains("\"sginal\""),
            "{text}"
        );
        assert!(text.contains("signal"), "lists known keys: {text}");
    }

    #[test]
    fn nested_values_and_non_mappings_are_rejected() {
        assert!(matches!(
            extra("signal: {a: 1}\n", &[]),
            Err(FileError::BadValue { line: 1, .. })
        ));
        assert!(matches!(
            extra("- a\n", &[]),
            Err(FileError::NotAMapping { .. })
        ));
        assert!(matches!(
            extra("a: [\n", &[]),
            Err(FileError::Syntax { .. })
        ));
        assert!(extra("", &[]).expect("empty is fine").is_empty());
    }
}
