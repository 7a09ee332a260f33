//! The config hash and the validation gate over the data of the objects a workload follows.
//! Pure: the caller fetches the objects, hands their data here, and drops it right after, so
//! Secret values live only as long as hashing takes. Nothing here logs values.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::refs::Source;
use crate::inject::report::SourceKind;
use crate::validate::{format_of, parse};

/// One fetched object's data: `data` and `binaryData` merged (Kubernetes keeps their keys
/// disjoint), sorted by key, borrowed from the API object.
#[derive(Debug, Default)]
pub struct Data<'a> {
    /// Key -> value bytes.
    pub entries: BTreeMap<&'a str, &'a [u8]>,
}

/// How strictly content is checked before a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The sidecar's `auto` rules: `.yaml`/`.yml`/`.json`/`.toml` keys must parse.
    Auto,
    /// No check.
    None,
}

/// Why content was held back. Never contains a value, only its position (and, for a
/// ConfigMap, the parser's message; a parser may quote a fragment of the text, so a Secret's
/// reason carries the position only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The object.
    pub source: Source,
    /// The key.
    pub key: String,
    /// What is wrong, with line and column when known.
    pub reason: String,
}

/// Hex SHA-256 of one object: its kind and name, then every key and value, length-prefixed so
/// no two different contents hash alike.
pub fn object_hash(source: &Source, data: &Data<'_>) -> String {
    let mut hasher = Sha256::new();
    feed(&mut hasher, source.to_string().as_bytes());
    for (key, value) in &data.entries {
        feed(&mut hasher, key.as_bytes());
        feed(&mut hasher, value);
    }
    hex(&hasher.finalize())
}

/// Hex SHA-256 over the per-object hashes, in source order: the workload's config hash.
pub fn combined_hash(objects: &BTreeMap<Source, String>) -> String {
    let mut hasher = Sha256::new();
    for (source, hash) in objects {
        feed(&mut hasher, source.to_string().as_bytes());
        feed(&mut hasher, hash.as_bytes());
    }
    hex(&hasher.finalize())
}

/// The first problem the gate finds in one object, if any. Binary values and keys without a
/// known extension pass.
pub fn check(gate: Gate, source: &Source, data: &Data<'_>) -> Result<(), Invalid> {
    if gate == Gate::None {
        return Ok(());
    }
    for (key, value) in &data.entries {
        let Some(format) = format_of(key) else {
            continue;
        };
        let invalid = |reason: String| Invalid {
            source: source.clone(),
            key: (*key).to_owned(),
            reason,
        };
        let text = std::str::from_utf8(value).map_err(|_| invalid("not UTF-8 text".into()))?;
        parse(format, text).map_err(|e| {
            let at = match (e.line, e.column) {
                (Some(line), Some(column)) => format!(" at line {line} column {column}"),
                (Some(line), None) => format!(" at line {line}"),
                _ => String::new(),
            };
            if source.kind == SourceKind::Secret {
                invalid(format!("does not parse{at}"))
            } else {
                invalid(format!("does not parse{at}: {}", e.message))
            }
        })?;
    }
    Ok(())
}

/// The short form of a hash used in Events and the sources annotation.
pub fn prefix(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// `configmap/a=PREFIX,secret/b=PREFIX`: what [`changed`] compares.
pub fn sources_annotation(objects: &BTreeMap<Source, String>) -> String {
    let parts: Vec<String> = objects
        .iter()
        .map(|(source, hash)| format!("{source}={}", prefix(hash)))
        .collect();
    parts.join(",")
}

/// The objects whose prefix differs between a previous sources annotation and the new hashes
/// (all of them when there is no previous annotation).
pub fn changed(previous: Option<&str>, objects: &BTreeMap<Source, String>) -> Vec<String> {
    let old: BTreeMap<&str, &str> = previous
        .unwrap_or_default()
        .split(',')
        .filter_map(|part| part.split_once('='))
        .collect();
    objects
        .iter()
        .filter(|(source, hash)| old.get(source.to_string().as_str()) != Some(&prefix(hash)))
        .map(|(source, _)| source.to_string())
        .collect()
}

fn feed(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data<'a>(pairs: &[(&'a str, &'a str)]) -> Data<'a> {
        Data {
            entries: pairs.iter().map(|(k, v)| (*k, v.as_bytes())).collect(),
        }
    }

    #[test]
    fn the_hash_depends_on_content_and_name_but_not_on_key_order() {
        let cm = Source::configmap("a");
        let one = object_hash(&cm, &data(&[("x", "1"), ("y", "2")]));
        let same = object_hash(&cm, &data(&[("y", "2"), ("x", "1")]));
        let other_name = object_hash(&Source::configmap("b"), &data(&[("x", "1"), ("y", "2")]));
        let other_kind = object_hash(&Source::secret("a"), &data(&[("x", "1"), ("y", "2")]));
        let shifted = object_hash(&cm, &data(&[("x", "1y"), ("", "2")]));
        assert_eq!(one, same);
        assert_ne!(one, other_name);
        assert_ne!(one, other_kind);
        assert_ne!(one, shifted);
        assert_eq!(one.len(), 64);
    }

    #[test]
    fn invalid_yaml_is_held_with_its_position_and_other_keys_pass() {
        let cm = Source::configmap("a");
        let bad = data(&[("app.yaml", "a: [1, 2"), ("notes.txt", "a: [")]);
        let err = check(Gate::Auto, &cm, &bad).unwrap_err();
        assert_eq!(err.key, "app.yaml");
        assert!(err.reason.contains("line"), "{}", err.reason);
        assert!(check(Gate::None, &cm, &bad).is_ok());
        assert!(check(
            Gate::Auto,
            &cm,
            &data(&[("a.json", "{}"), ("b.toml", "x = 1")])
        )
        .is_ok());
    }

    #[test]
    fn a_secret_held_as_invalid_is_reported_by_position_only_never_by_its_text() {
        let secret = Source::secret("s");
        let value = "password = \"hunter2";
        let err = check(Gate::Auto, &secret, &data(&[("creds.toml", value)])).unwrap_err();
        assert!(!err.reason.contains("hunter2"), "{}", err.reason);
        assert!(err.reason.starts_with("does not parse"), "{}", err.reason);
        let yaml = check(Gate::Auto, &secret, &data(&[("a.yaml", "k: [s3cret, {")])).unwrap_err();
        assert!(
            !yaml.reason.contains("s3cret") && !yaml.reason.contains(':'),
            "{}",
            yaml.reason
        );
    }

    #[test]
    fn changed_names_only_the_objects_whose_hash_moved() {
        let mut objects = BTreeMap::new();
        objects.insert(Source::configmap("a"), "1".repeat(64));
        objects.insert(Source::secret("b"), "2".repeat(64));
        let before = sources_annotation(&objects);
        objects.insert(Source::secret("b"), "3".repeat(64));
        assert_eq!(changed(Some(&before), &objects), ["secret/b"]);
        assert_eq!(changed(None, &objects).len(), 2);
    }
}
