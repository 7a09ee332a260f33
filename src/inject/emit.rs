//! Serializes a changed document so that Kubernetes reads back exactly what we mean.
//! serde_yaml writes YAML 1.2, but kubectl and the API server read YAML 1.1, where the plain
//! scalars `yes`, `on`, `off`, `y`, `n`, `1_000`, `0b101`, `1:20` or `2026-10-02` are not
//! strings. serde_yaml quotes only what is ambiguous in 1.2, so an annotation value "yes" would
//! come out as `yes` and be read back as a boolean. [`to_yaml`] single-quotes every plain scalar
//! that YAML 1.1 would not read as a string. Real numbers and booleans are always written in
//! their canonical form (`3`, `0.5`, `true`) and stay unquoted.

use std::sync::LazyLock;

use regex_lite::Regex;
use serde_yaml::Value;

/// Plain scalars that YAML 1.1 resolves to something other than a string.
static YAML11_NOT_A_STRING: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^(?:",
        r"y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF",
        r"|~|null|Null|NULL",
        r"|[-+]?0b[01_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+",
        r"|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+",
        r"|[-+]?(?:[0-9][0-9_]*)?\.[0-9_]*(?:[eE][-+]?[0-9]+)?",
        r"|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*",
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)",
        r"|[0-9]{4}-[0-9]{2}-[0-9]{2}",
        r"|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}(?:[Tt]|[ \t]+)[0-9]{1,2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]*)?",
        r"(?:[ \t]*Z|[-+][0-9]{1,2}(?::[0-9]{2})?)?",
        r")$"
    ))
    .ok()
});

/// What serde_yaml writes for real numbers, booleans and null (never quoted, never strings).
static CANONICAL: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"^(?:true|false|null|~|-?(?:0|[1-9][0-9]*)|-?[0-9]+\.[0-9]+(?:[eE][-+]?[0-9]+)?|-?\.inf|\.nan)$").ok()
});

/// serde_yaml's text for `value`, with YAML 1.1 look-alikes quoted.
pub fn to_yaml(value: &Value) -> Result<String, serde_yaml::Error> {
    Ok(quote_yaml11(&serde_yaml::to_string(value)?))
}

/// Whether a plain scalar must be quoted for a YAML 1.1 reader.
fn needs_quotes(scalar: &str) -> bool {
    let matches = |re: &LazyLock<Option<Regex>>| re.as_ref().is_some_and(|re| re.is_match(scalar));
    matches(&YAML11_NOT_A_STRING) && !matches(&CANONICAL)
}

/// Rewrites block-style YAML as serde_yaml emits it (one scalar per line, no wrapping),
/// quoting plain values and sequence items that YAML 1.1 misreads. Block scalar bodies
/// (`|`, `>`) are copied untouched.
fn quote_yaml11(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut block_parent: Option<usize> = None;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let indent = body.len() - body.trim_start_matches(' ').len();
        if let Some(parent) = block_parent {
            if body.trim().is_empty() || indent > parent {
                out.push_str(line);
                continue;
            }
            block_parent = None;
        }
        let mut column = indent;
        let mut rest = &body[indent..];
        while let Some(after) = rest.strip_prefix("- ") {
            column += 2;
            rest = after;
        }
        let key_end = split_key(rest);
        let (value_start, parent) = match key_end {
            Some(value_at) => (column + value_at, column),
            None => (column, column.saturating_sub(2)),
        };
        let value = &body[value_start..];
        out.push_str(&body[..column]);
        if let Some(value_at) = key_end {
            // The key, up to its colon (`key: value` or `key:`).
            let key_text = rest[..value_at].trim_end_matches(' ').trim_end_matches(':');
            out.push_str(&quoted_if_needed(key_text));
            out.push_str(&rest[key_text.len()..value_at]);
        }
        if value.starts_with('|') || value.starts_with('>') {
            block_parent = Some(parent);
            out.push_str(value);
        } else {
            out.push_str(&quoted_if_needed(value));
        }
        out.push_str(&line[body.len()..]);
    }
    out
}

/// `scalar` single-quoted when it is plain and YAML 1.1 would not read it as a string.
fn quoted_if_needed(scalar: &str) -> String {
    let plain = !scalar.is_empty()
        && !scalar.starts_with(['\'', '"', '[', '{', '&', '*', '!', '#', '|', '>']);
    if plain && needs_quotes(scalar) {
        format!("'{}'", scalar.replace('\'', "''"))
    } else {
        scalar.to_owned()
    }
}

/// For `key: value` (the key plain or quoted), the offset of `value`; `None` when the line
/// holds a lone scalar (a sequence item).
fn split_key(rest: &str) -> Option<usize> {
    let key_end = match rest.chars().next() {
        Some(quote @ ('\'' | '"')) => {
            let mut escaped = false;
            let mut end = None;
            for (i, c) in rest.char_indices().skip(1) {
                if quote == '"' && c == '\\' && !escaped {
                    escaped = true;
                    continue;
                }
                if c == quote && !escaped {
                    // '' inside single quotes is an escaped quote, not the end.
                    if quote == '\'' && rest[i + 1..].starts_with('\'') {
                        escaped = true;
                        continue;
                    }
                    end = Some(i + 1);
                    break;
                }
                escaped = false;
            }
            end?
        }
        _ => rest
            .find(": ")
            .or_else(|| rest.ends_with(':').then(|| rest.len() - 1))?,
    };
    let after = &rest[key_end..];
    if after == ":" {
        Some(rest.len())
    } else {
        after.strip_prefix(": ").map(|_| key_end + 2)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn emit(yaml: &str) -> String {
        to_yaml(&serde_yaml::from_str::<Value>(yaml).unwrap()).unwrap()
    }

    #[test]
    fn strings_that_yaml_1_1_reads_as_other_types_are_quoted() {
        let out = emit("a: 'yes'\nb: 'on'\nc: ['n', 'Off', '1_000', '1:20', '2026-10-02', '2026-10-02T09:14:51Z', '0b101']\n");
        assert_eq!(
            out,
            "a: 'yes'\nb: 'on'\nc:\n- 'n'\n- 'Off'\n- '1_000'\n- '1:20'\n- '2026-10-02'\n- '2026-10-02T09:14:51Z'\n- '0b101'\n"
        );
    }

    #[test]
    fn numbers_booleans_and_ordinary_strings_stay_plain() {
        let yaml = "replicas: 3\nratio: 0.5\nready: true\nnone: null\nname: web\nimage: nginx:1.27\nversion: 1.27.3\nport: :9533\nneg: -5\n";
        assert_eq!(emit(yaml), yaml);
    }

    #[test]
    fn block_scalars_and_quoted_keys_are_left_alone() {
        let yaml = "data:\n  nginx.conf: |\n    on\n    yes: no\n  'y': 'yes'\nlist:\n- |\n  off\n- key: 'on'\n";
        let out = emit(yaml);
        assert!(
            out.contains("nginx.conf: |\n    on\n    yes: no\n"),
            "{out}"
        );
        assert!(out.contains("'y': 'yes'"), "{out}");
        assert!(out.contains("- |\n  off\n"), "{out}");
        assert!(out.contains("- key: 'on'"), "{out}");
        assert_eq!(
            serde_yaml::from_str::<Value>(&out).unwrap(),
            serde_yaml::from_str::<Value>(yaml).unwrap()
        );
    }

    #[test]
    fn the_patterns_compile() {
        assert!(YAML11_NOT_A_STRING.is_some() && CANONICAL.is_some());
    }
}
