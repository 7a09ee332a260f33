//! Small, typed accessors over `serde_yaml::Value`: read a field as a mapping, list, string or
//! integer, or fail with [`Problem::WrongType`] naming the field. Also the order-preserving
//! insert and remove that keep `uninject(inject(x)) == x` exact (serde_yaml's plain `remove`
//! swaps the last key into the hole, so it is never used here).

use serde_yaml::{Mapping, Value};

use super::error::Problem;

/// A string key for a mapping.
pub(crate) fn key(name: &str) -> Value {
    Value::String(name.to_owned())
}

/// A string value.
pub(crate) fn string(text: &str) -> Value {
    Value::String(text.to_owned())
}

/// Builds a mapping from `(key, value)` pairs in the given order.
pub(crate) fn mapping<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Mapping(pairs.into_iter().map(|(k, v)| (key(k), v)).collect())
}

fn wrong(field: &str, expected: &'static str) -> Problem {
    Problem::WrongType {
        field: field.to_owned(),
        expected,
    }
}

/// `value` as a mapping; `null` and absent read as `None`.
pub(crate) fn as_map<'a>(
    value: Option<&'a Value>,
    field: &str,
) -> Result<Option<&'a Mapping>, Problem> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Mapping(map)) => Ok(Some(map)),
        Some(_) => Err(wrong(field, "a mapping")),
    }
}

/// `value` as a list; `null` and absent read as empty.
pub(crate) fn as_seq<'a>(value: Option<&'a Value>, field: &str) -> Result<&'a [Value], Problem> {
    match value {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Sequence(items)) => Ok(items),
        Some(_) => Err(wrong(field, "a list")),
    }
}

/// `value` as a string; absent and `null` read as `None`.
pub(crate) fn as_str<'a>(
    value: Option<&'a Value>,
    field: &str,
) -> Result<Option<&'a str>, Problem> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(wrong(field, "a string")),
    }
}

/// `value` as an integer; absent and `null` read as `None`.
pub(crate) fn as_int(value: Option<&Value>, field: &str) -> Result<Option<i64>, Problem> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| wrong(field, "an integer")),
        Some(_) => Err(wrong(field, "an integer")),
    }
}

/// Every element of a list field as a mapping, with its field path for messages.
pub(crate) fn maps<'a>(
    value: Option<&'a Value>,
    field: &str,
) -> Result<Vec<(&'a Mapping, String)>, Problem> {
    as_seq(value, field)?
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let path = format!("{field}[{i}]");
            match item {
                Value::Mapping(map) => Ok((map, path)),
                _ => Err(wrong(&path, "a mapping")),
            }
        })
        .collect()
}

/// Descends `path` from `root` through mappings; a missing or `null` step reads as `None`.
pub(crate) fn lookup<'a>(root: &'a Value, path: &[&str]) -> Result<Option<&'a Value>, Problem> {
    let mut current = root;
    let mut walked = String::new();
    for step in path {
        let Some(map) = as_map(Some(current), field_or_root(&walked))? else {
            return Ok(None);
        };
        push_step(&mut walked, step);
        match map.get(*step) {
            Some(next) => current = next,
            None => return Ok(None),
        }
    }
    Ok(Some(current))
}

/// Like [`lookup`], but mutable and requiring every step to exist as a mapping.
pub(crate) fn lookup_map_mut<'a>(
    root: &'a mut Value,
    path: &[&str],
) -> Result<&'a mut Mapping, Problem> {
    let mut current = root;
    let mut walked = String::new();
    for step in path {
        let field = field_or_root(&walked).to_owned();
        let Value::Mapping(map) = current else {
            return Err(wrong(&field, "a mapping"));
        };
        push_step(&mut walked, step);
        current = map.get_mut(*step).ok_or_else(|| Problem::Missing {
            field: walked.clone(),
        })?;
    }
    match current {
        Value::Mapping(map) => Ok(map),
        _ => Err(wrong(field_or_root(&walked), "a mapping")),
    }
}

fn field_or_root(walked: &str) -> &str {
    if walked.is_empty() {
        "(document)"
    } else {
        walked
    }
}

fn push_step(walked: &mut String, step: &str) {
    if !walked.is_empty() {
        walked.push('.');
    }
    walked.push_str(step);
}

/// Joins a field path prefix and a step for messages (`spec.template` + `spec`).
pub(crate) fn join(prefix: &str, step: &str) -> String {
    if prefix.is_empty() {
        step.to_owned()
    } else {
        format!("{prefix}.{step}")
    }
}

/// Inserts `k: v` just before the first of `before` present in `map`, or at the end.
/// An existing `k` keeps its position and only its value changes.
pub(crate) fn insert_before(map: &mut Mapping, before: &[&str], k: &str, v: Value) {
    if let Some(slot) = map.get_mut(k) {
        *slot = v;
        return;
    }
    let position = map
        .keys()
        .position(|existing| before.iter().any(|b| existing.as_str() == Some(b)));
    let Some(position) = position else {
        map.insert(key(k), v);
        return;
    };
    let old = std::mem::take(map);
    let mut new = Some(v);
    for (index, (ok, ov)) in old.into_iter().enumerate() {
        if index == position {
            if let Some(new) = new.take() {
                map.insert(key(k), new);
            }
        }
        map.insert(ok, ov);
    }
}

/// Removes `k` keeping the order of the other keys.
pub(crate) fn remove(map: &mut Mapping, k: &str) -> Option<Value> {
    map.shift_remove(k)
}

/// Kubernetes reads YAML 1.1, where `defaultMode: 0440` is the octal number 288; serde_yaml
/// reads YAML 1.2 and keeps `0440` as a string, which would come out quoted and be rejected.
/// Turns such file-mode strings (`defaultMode`, `mode`) back into numbers before a document
/// is re-serialized. These fields are integers in every Kubernetes schema, so a string there
/// was never meant.
pub(crate) fn yaml11_file_modes(value: &mut Value) {
    match value {
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let is_mode = matches!(k.as_str(), Some("defaultMode" | "mode"));
                if let (true, Value::String(text)) = (is_mode, &*v) {
                    let octal = text.strip_prefix('0').filter(|d| !d.is_empty());
                    if let Some(number) = octal.and_then(|d| i64::from_str_radix(d, 8).ok()) {
                        *v = Value::from(number);
                        continue;
                    }
                }
                yaml11_file_modes(v);
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(yaml11_file_modes),
        _ => {}
    }
}
