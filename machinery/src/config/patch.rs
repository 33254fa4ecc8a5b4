//! Config patches, applied to untyped document trees: strategic merge (a partial config, possibly
//! several documents) and RFC 6902 JSON patch (a list of operations, single-document configs only).
//!
//! Strategic merge matches documents by `apiVersion`, `kind` and `name` (the v1alpha1 document by
//! having no kind) and appends unmatched ones. Within a document maps merge key by key, lists
//! append, and scalars replace. In the v1alpha1 document `cluster.network.podSubnets`,
//! `cluster.network.serviceSubnets` and `cluster.apiServer.auditPolicy` are replaced wholesale, and
//! `machine.network.interfaces` merges entries with the same `interface` or `deviceSelector`.
//! A mapping holding `$patch: delete` removes the key, list element or document it stands for.

use super::raw::RawValue;
use super::{Config, ConfigError};
use crate::codec::{self, CodecError};

const DIRECTIVE: &str = "$patch";
const DELETE: &str = "delete";

/// v1alpha1 fields a patch replaces instead of merging.
const REPLACED_FIELDS: &[&[&str]] = &[
    &["cluster", "network", "podSubnets"],
    &["cluster", "network", "serviceSubnets"],
    &["cluster", "apiServer", "auditPolicy"],
];

/// The v1alpha1 list whose entries merge by interface name or device selector.
const INTERFACES: &[&str] = &["machine", "network", "interfaces"];

/// A patch could not be read or applied.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("Invalid patch: {0}")]
    Codec(CodecError),
    #[error("Patch document {index} is not a mapping")]
    NotAMapping { index: usize },
    #[error("JSON6902 patches are not supported for multi-document machine configuration")]
    JsonPatchMultiDocument,
    #[error("JSON patch operation {index}: {reason}")]
    InvalidOperation { index: usize, reason: String },
    #[error("JSON patch operation {index} ({op} {path:?}): {reason}")]
    OperationFailed {
        index: usize,
        op: &'static str,
        path: String,
        reason: String,
    },
    #[error("Patched machine config: {0}")]
    Result(ConfigError),
    #[error("Cannot write the patched config: {0}")]
    Write(CodecError),
}

/// One patch, as given to `--patch` / `--config-patch`.
#[derive(Debug, Clone, PartialEq)]
pub enum Patch {
    /// Partial documents merged into the config.
    StrategicMerge(Vec<RawValue>),
    /// RFC 6902 operations applied in order.
    JsonPatch(Vec<JsonPatchOp>),
}

/// The operation of a JSON patch step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonPatchKind {
    Add,
    Remove,
    Replace,
    Move,
    Copy,
    Test,
}

impl JsonPatchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JsonPatchKind::Add => "add",
            JsonPatchKind::Remove => "remove",
            JsonPatchKind::Replace => "replace",
            JsonPatchKind::Move => "move",
            JsonPatchKind::Copy => "copy",
            JsonPatchKind::Test => "test",
        }
    }

    fn parse(value: &str) -> Option<JsonPatchKind> {
        Some(match value {
            "add" => JsonPatchKind::Add,
            "remove" => JsonPatchKind::Remove,
            "replace" => JsonPatchKind::Replace,
            "move" => JsonPatchKind::Move,
            "copy" => JsonPatchKind::Copy,
            "test" => JsonPatchKind::Test,
            _ => return None,
        })
    }
}

/// One RFC 6902 step. `path` and `from` are JSON pointers (`/machine/network/hostname`).
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPatchOp {
    pub op: JsonPatchKind,
    pub path: String,
    /// Source pointer of `move` and `copy`.
    pub from: Option<String>,
    /// Value of `add`, `replace` and `test`.
    pub value: Option<RawValue>,
}

impl Patch {
    /// Reads a patch. A YAML or JSON list of `{op, path, …}` objects is a JSON patch; anything
    /// else must be one or more mappings, a strategic merge patch.
    pub fn parse(text: &str) -> Result<Patch, PatchError> {
        let documents = parse_documents(text).map_err(PatchError::Codec)?;
        if let [RawValue::Seq(items)] = documents.as_slice() {
            return items
                .iter()
                .enumerate()
                .map(|(i, item)| JsonPatchOp::from_raw(i + 1, item))
                .collect::<Result<_, _>>()
                .map(Patch::JsonPatch);
        }
        for (i, document) in documents.iter().enumerate() {
            if !matches!(document, RawValue::Map(_)) {
                return Err(PatchError::NotAMapping { index: i + 1 });
            }
        }
        Ok(Patch::StrategicMerge(documents))
    }
}

impl JsonPatchOp {
    fn from_raw(index: usize, item: &RawValue) -> Result<JsonPatchOp, PatchError> {
        let invalid = |reason: &str| PatchError::InvalidOperation {
            index,
            reason: reason.to_owned(),
        };
        if !matches!(item, RawValue::Map(_)) {
            return Err(invalid("not an object with op and path"));
        }
        let op_text = item
            .get("op")
            .ok_or_else(|| invalid("missing \"op\""))?
            .as_str()
            .ok_or_else(|| invalid("\"op\" is not a string"))?;
        let op = JsonPatchKind::parse(op_text).ok_or_else(|| {
            invalid(&format!(
                "unknown op {op_text:?}: expected add, remove, replace, move, copy or test"
            ))
        })?;
        let pointer = |field: &str| -> Result<Option<String>, PatchError> {
            match item.get(field) {
                None => Ok(None),
                Some(value) => {
                    let text = value
                        .as_str()
                        .ok_or_else(|| invalid(&format!("{field:?} is not a string")))?;
                    parse_pointer(text).map_err(|e| invalid(&format!("{field:?}: {e}")))?;
                    Ok(Some(text.to_owned()))
                }
            }
        };
        let path = pointer("path")?.ok_or_else(|| invalid("missing \"path\""))?;
        let from = pointer("from")?;
        let value = item.get("value").cloned();
        match op {
            JsonPatchKind::Add | JsonPatchKind::Replace | JsonPatchKind::Test
                if value.is_none() =>
            {
                return Err(invalid(&format!("{op_text} needs \"value\"")));
            }
            JsonPatchKind::Move | JsonPatchKind::Copy if from.is_none() => {
                return Err(invalid(&format!("{op_text} needs \"from\"")));
            }
            _ => {}
        }
        Ok(JsonPatchOp {
            op,
            path,
            from,
            value,
        })
    }
}

/// The non-empty documents of a YAML stream as trees.
fn parse_documents(text: &str) -> Result<Vec<RawValue>, CodecError> {
    codec::split_documents(text)?
        .into_iter()
        .filter(|d| !d.is_empty())
        .map(|d| d.decode())
        .collect()
}

impl Config {
    /// The config as one tree per document, v1alpha1 first.
    pub fn to_documents(&self) -> Result<Vec<RawValue>, ConfigError> {
        Ok(parse_documents(&self.to_yaml()?)?)
    }

    /// Decodes document trees (strictly, as [`Config::from_bytes`] does).
    pub fn from_documents(documents: &[RawValue]) -> Result<Config, PatchError> {
        let mut text = String::new();
        for document in documents {
            text.push_str("---\n");
            text.push_str(&codec::to_yaml(document).map_err(PatchError::Write)?);
            if !text.ends_with('\n') {
                text.push('\n');
            }
        }
        Config::from_bytes(text.as_bytes()).map_err(PatchError::Result)
    }

    /// Applies `patches` in order and decodes the result.
    pub fn patch(&self, patches: &[Patch]) -> Result<Config, PatchError> {
        if patches.is_empty() {
            return Ok(self.clone());
        }
        let mut documents = self.to_documents().map_err(PatchError::Result)?;
        for patch in patches {
            apply_patch(&mut documents, patch)?;
        }
        Config::from_documents(&documents)
    }
}

/// Applies one patch to a config's document trees.
pub fn apply_patch(documents: &mut Vec<RawValue>, patch: &Patch) -> Result<(), PatchError> {
    match patch {
        Patch::StrategicMerge(patch_documents) => {
            for patch_document in patch_documents {
                merge_document(documents, patch_document);
            }
            Ok(())
        }
        Patch::JsonPatch(ops) => {
            if ops.is_empty() {
                return Ok(());
            }
            let [document] = documents.as_mut_slice() else {
                return Err(PatchError::JsonPatchMultiDocument);
            };
            for (i, op) in ops.iter().enumerate() {
                apply_json_op(document, op).map_err(|reason| PatchError::OperationFailed {
                    index: i + 1,
                    op: op.op.as_str(),
                    path: op.path.clone(),
                    reason,
                })?;
            }
            Ok(())
        }
    }
}

#[derive(PartialEq)]
enum DocumentId<'a> {
    V1Alpha1,
    Kind {
        api_version: Option<&'a RawValue>,
        kind: &'a RawValue,
        name: Option<&'a RawValue>,
    },
}

fn document_id(document: &RawValue) -> DocumentId<'_> {
    match document.get("kind") {
        None => DocumentId::V1Alpha1,
        Some(kind) => DocumentId::Kind {
            api_version: document.get("apiVersion"),
            kind,
            name: document.get("name"),
        },
    }
}

fn merge_document(documents: &mut Vec<RawValue>, patch: &RawValue) {
    let id = document_id(patch);
    let position = documents.iter().position(|d| document_id(d) == id);
    let v1alpha1 = id == DocumentId::V1Alpha1;
    match position {
        Some(i) if is_delete(patch) => {
            documents.remove(i);
        }
        Some(i) => merge_value(&mut documents[i], patch, &mut Vec::new(), v1alpha1),
        None if is_delete(patch) => {}
        None => documents.push(without_directives(patch)),
    }
}

/// True for a mapping that holds `$patch: delete`.
fn is_delete(value: &RawValue) -> bool {
    value.get(DIRECTIVE).and_then(RawValue::as_str) == Some(DELETE)
}

fn is_directive_key(key: &RawValue) -> bool {
    key.as_str() == Some(DIRECTIVE)
}

/// A patch value as it lands where nothing was before: directives dropped (deleting what does not
/// exist changes nothing).
fn without_directives(value: &RawValue) -> RawValue {
    match value {
        RawValue::Map(entries) => RawValue::Map(
            entries
                .iter()
                .filter(|(k, v)| !is_directive_key(k) && !is_delete(v) && !v.is_null())
                .map(|(k, v)| (k.clone(), without_directives(v)))
                .collect(),
        ),
        RawValue::Seq(items) => RawValue::Seq(
            items
                .iter()
                .filter(|v| !is_delete(v))
                .map(without_directives)
                .collect(),
        ),
        other => other.clone(),
    }
}

fn path_is(path: &[String], expected: &[&str]) -> bool {
    path.len() == expected.len() && path.iter().zip(expected).all(|(a, b)| a == b)
}

fn merge_value(left: &mut RawValue, right: &RawValue, path: &mut Vec<String>, v1alpha1: bool) {
    if right.is_null() {
        return;
    }
    if v1alpha1 && REPLACED_FIELDS.iter().any(|p| path_is(path, p)) {
        *left = without_directives(right);
        return;
    }
    match (&mut *left, right) {
        (RawValue::Map(l), RawValue::Map(r)) => merge_map(l, r, path, v1alpha1),
        (RawValue::Seq(l), RawValue::Seq(r)) => {
            if v1alpha1 && path_is(path, INTERFACES) {
                merge_interfaces(l, r, path);
            } else {
                merge_list(l, r);
            }
        }
        (slot, r) => *slot = without_directives(r),
    }
}

fn merge_map(
    left: &mut Vec<(RawValue, RawValue)>,
    right: &[(RawValue, RawValue)],
    path: &mut Vec<String>,
    v1alpha1: bool,
) {
    for (key, value) in right {
        if is_directive_key(key) {
            continue;
        }
        let position = left.iter().position(|(k, _)| k == key);
        match position {
            Some(i) if is_delete(value) => {
                left.remove(i);
            }
            Some(i) => {
                path.push(key.key_text());
                merge_value(&mut left[i].1, value, path, v1alpha1);
                path.pop();
            }
            None if is_delete(value) || value.is_null() => {}
            None => left.push((key.clone(), without_directives(value))),
        }
    }
}

/// Appends, except that `{…, $patch: delete}` removes the elements holding all its other fields.
fn merge_list(left: &mut Vec<RawValue>, right: &[RawValue]) {
    for item in right {
        if is_delete(item) {
            left.retain(|existing| !contains_fields(existing, item));
        } else {
            left.push(without_directives(item));
        }
    }
}

/// True when `element` is a mapping with every non-directive field of `pattern`, equal.
fn contains_fields(element: &RawValue, pattern: &RawValue) -> bool {
    let (RawValue::Map(fields), RawValue::Map(_)) = (pattern, element) else {
        return false;
    };
    fields
        .iter()
        .filter(|(k, _)| !is_directive_key(k))
        .all(|(k, v)| {
            k.as_str()
                .and_then(|k| element.get(k))
                .is_some_and(|e| e == v)
        })
}

/// The identity of a `machine.network.interfaces` entry.
fn interface_key(entry: &RawValue) -> Option<(&'static str, &RawValue)> {
    if let Some(name) = entry.get("interface") {
        return Some(("interface", name));
    }
    entry.get("deviceSelector").map(|s| ("deviceSelector", s))
}

fn merge_interfaces(left: &mut Vec<RawValue>, right: &[RawValue], path: &mut Vec<String>) {
    for item in right {
        let position = interface_key(item)
            .and_then(|key| left.iter().position(|e| interface_key(e) == Some(key)));
        match position {
            Some(i) if is_delete(item) => {
                left.remove(i);
            }
            Some(i) => {
                path.push(format!("[{i}]"));
                merge_value(&mut left[i], item, path, true);
                path.pop();
            }
            None if is_delete(item) => {}
            None => left.push(without_directives(item)),
        }
    }
}

/// Splits a JSON pointer into unescaped tokens.
fn parse_pointer(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(format!("JSON pointer {pointer:?} must start with /"));
    };
    rest.split('/')
        .map(|token| {
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => out.push('~'),
                    Some('1') => out.push('/'),
                    _ => {
                        return Err(format!(
                            "JSON pointer {pointer:?} has a ~ not followed by 0 or 1"
                        ));
                    }
                }
            }
            Ok(out)
        })
        .collect()
}

/// An array index token: digits without a leading zero.
fn array_index(token: &str) -> Option<usize> {
    if token.is_empty() || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    if !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse().ok()
}

fn map_key_position(entries: &[(RawValue, RawValue)], token: &str) -> Option<usize> {
    entries
        .iter()
        .position(|(k, _)| k.as_str() == Some(token))
        .or_else(|| entries.iter().position(|(k, _)| k.key_text() == token))
}

fn get<'a>(root: &'a RawValue, tokens: &[String]) -> Result<&'a RawValue, String> {
    let mut node = root;
    for (depth, token) in tokens.iter().enumerate() {
        let missing = || format!("{} does not exist", render_pointer(&tokens[..=depth]));
        node = match node {
            RawValue::Map(entries) => {
                let i = map_key_position(entries, token).ok_or_else(missing)?;
                &entries[i].1
            }
            RawValue::Seq(items) => items
                .get(array_index(token).ok_or_else(missing)?)
                .ok_or_else(missing)?,
            _ => return Err(missing()),
        };
    }
    Ok(node)
}

fn get_mut<'a>(root: &'a mut RawValue, tokens: &[String]) -> Result<&'a mut RawValue, String> {
    let mut node = root;
    for (depth, token) in tokens.iter().enumerate() {
        let missing = || format!("{} does not exist", render_pointer(&tokens[..=depth]));
        node = match node {
            RawValue::Map(entries) => {
                let i = map_key_position(entries, token).ok_or_else(missing)?;
                &mut entries[i].1
            }
            RawValue::Seq(items) => {
                let i = array_index(token).ok_or_else(missing)?;
                items.get_mut(i).ok_or_else(missing)?
            }
            _ => return Err(missing()),
        };
    }
    Ok(node)
}

fn render_pointer(tokens: &[String]) -> String {
    tokens
        .iter()
        .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
        .collect()
}

fn add(root: &mut RawValue, tokens: &[String], value: RawValue) -> Result<(), String> {
    let Some((last, parent)) = tokens.split_last() else {
        *root = value;
        return Ok(());
    };
    match get_mut(root, parent)? {
        RawValue::Map(entries) => match map_key_position(entries, last) {
            Some(i) => entries[i].1 = value,
            None => entries.push((RawValue::string(last.as_str()), value)),
        },
        RawValue::Seq(items) => {
            let index = if last == "-" {
                items.len()
            } else {
                array_index(last)
                    .filter(|&i| i <= items.len())
                    .ok_or_else(|| {
                        format!(
                            "index {last:?} is out of range for {} ({} elements)",
                            render_pointer(parent),
                            items.len()
                        )
                    })?
            };
            items.insert(index, value);
        }
        _ => {
            return Err(format!(
                "{} is neither an object nor an array",
                render_pointer(parent)
            ));
        }
    }
    Ok(())
}

fn remove(root: &mut RawValue, tokens: &[String]) -> Result<RawValue, String> {
    let Some((last, parent)) = tokens.split_last() else {
        return Err("cannot remove the whole document".to_owned());
    };
    let missing = || format!("{} does not exist", render_pointer(tokens));
    match get_mut(root, parent)? {
        RawValue::Map(entries) => {
            let i = map_key_position(entries, last).ok_or_else(missing)?;
            Ok(entries.remove(i).1)
        }
        RawValue::Seq(items) => {
            let i = array_index(last)
                .filter(|&i| i < items.len())
                .ok_or_else(missing)?;
            Ok(items.remove(i))
        }
        _ => Err(missing()),
    }
}

fn apply_json_op(document: &mut RawValue, op: &JsonPatchOp) -> Result<(), String> {
    let path = parse_pointer(&op.path)?;
    let value = || op.value.clone().unwrap_or(RawValue::Null);
    let from = || parse_pointer(op.from.as_deref().unwrap_or_default());
    match op.op {
        JsonPatchKind::Add => add(document, &path, value()),
        JsonPatchKind::Remove => remove(document, &path).map(drop),
        JsonPatchKind::Replace => {
            *get_mut(document, &path)? = value();
            Ok(())
        }
        JsonPatchKind::Move => {
            let from = from()?;
            if path.len() > from.len() && path.starts_with(&from) {
                return Err(format!(
                    "cannot move {} into its own child",
                    render_pointer(&from)
                ));
            }
            let moved = remove(document, &from)?;
            add(document, &path, moved)
        }
        JsonPatchKind::Copy => {
            let copied = get(document, &from()?)?.clone();
            add(document, &path, copied)
        }
        JsonPatchKind::Test => {
            let expected = value();
            let actual = get(document, &path)?;
            if actual.json_eq(&expected) {
                Ok(())
            } else {
                Err("test failed: the value differs".to_owned())
            }
        }
    }
}

#[cfg(test)]
mod tests;
