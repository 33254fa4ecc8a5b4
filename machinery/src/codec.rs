//! The one place that knows which YAML library we use.
//!
//! Everything else in the workspace parses and writes YAML through these functions. Parsing is
//! bounded: input larger than [`MAX_CONFIG_BYTES`] is refused before it reaches the parser, and
//! the parser runs with budgets on nesting depth, node count, aliases and scalar bytes, so hostile
//! input costs bounded time and memory. Errors carry the YAML path of the offending node and its
//! line and column.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_saphyr::granit_parser::{Event, Parser};

/// The largest YAML input (a machine config, a talosconfig, a secrets bundle) we parse.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

const MAX_DEPTH: usize = 48;
const MAX_NODES: usize = 200_000;
const MAX_ALIASES: usize = 1_000;
const MAX_DOCUMENTS: usize = 256;
const MAX_SCALAR_BYTES: usize = 4 * MAX_CONFIG_BYTES;
const MAX_REPLAYED_EVENTS: usize = 100_000;

/// Where in the input a problem was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
}

/// YAML that could not be parsed or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("YAML input is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("YAML input is not valid UTF-8 (at byte {valid_up_to})")]
    NotUtf8 { valid_up_to: usize },
    #[error("{}", describe_parse(path, message, position))]
    Parse {
        /// Dotted YAML path of the offending node, e.g. `machine.network.interfaces[0].addresses`.
        path: Option<String>,
        message: String,
        position: Option<Position>,
    },
    #[error("Cannot write YAML: {0}")]
    Serialize(String),
}

impl CodecError {
    /// The YAML path of the offending node, when known.
    pub fn path(&self) -> Option<&str> {
        match self {
            CodecError::Parse { path, .. } => path.as_deref(),
            _ => None,
        }
    }

    /// The line and column of the offending node, when known.
    pub fn position(&self) -> Option<&Position> {
        match self {
            CodecError::Parse { position, .. } => position.as_ref(),
            _ => None,
        }
    }
}

fn describe_parse(path: &Option<String>, message: &str, position: &Option<Position>) -> String {
    let mut out = String::new();
    if let Some(path) = path.as_deref().filter(|p| !p.is_empty()) {
        out.push_str(path);
        out.push_str(": ");
    }
    out.push_str(message);
    if let Some(Position { line, column }) = position {
        out.push_str(&format!(" (line {line}, column {column})"));
    }
    out
}

fn options() -> serde_saphyr::Options {
    let mut alias_limits = serde_saphyr::options::AliasLimits::default();
    alias_limits.max_total_replayed_events = MAX_REPLAYED_EVENTS;
    alias_limits.max_replay_stack_depth = MAX_DEPTH;
    alias_limits.max_alias_expansions_per_anchor = MAX_ALIASES;
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: Some(MAX_CONFIG_BYTES),
            max_depth: MAX_DEPTH,
            max_nodes: MAX_NODES,
            max_aliases: MAX_ALIASES,
            max_anchors: MAX_ALIASES,
            max_documents: MAX_DOCUMENTS,
            max_total_scalar_bytes: MAX_SCALAR_BYTES,
        },
        alias_limits: alias_limits,
        with_snippet: false,
    }
}

fn check_size(input: &str) -> Result<(), CodecError> {
    if input.len() > MAX_CONFIG_BYTES {
        return Err(CodecError::TooLarge {
            size: input.len(),
            limit: MAX_CONFIG_BYTES,
        });
    }
    Ok(())
}

/// Checks the size limit and UTF-8 of raw bytes.
pub fn str_from_bytes(input: &[u8]) -> Result<&str, CodecError> {
    if input.len() > MAX_CONFIG_BYTES {
        return Err(CodecError::TooLarge {
            size: input.len(),
            limit: MAX_CONFIG_BYTES,
        });
    }
    std::str::from_utf8(input).map_err(|e| CodecError::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })
}

/// Parses one YAML document into `T`.
pub fn from_yaml<T: DeserializeOwned>(input: &str) -> Result<T, CodecError> {
    check_size(input)?;
    serde_saphyr::from_str_with_options(input, options()).map_err(|e| parse_error(input, &e))
}

/// Parses a `---`-separated stream where every document has the same type.
pub fn from_yaml_documents<T: DeserializeOwned>(input: &str) -> Result<Vec<T>, CodecError> {
    check_size(input)?;
    serde_saphyr::from_multiple_with_options(input, options()).map_err(|e| parse_error(input, &e))
}

/// Writes `value` as one YAML document. Long strings (base64 PEM) stay plain scalars on one line,
/// as upstream writes them, rather than folded blocks.
pub fn to_yaml<T: Serialize>(value: &T) -> Result<String, CodecError> {
    let options = serde_saphyr::ser_options! {
        prefer_block_scalars: false,
    };
    serde_saphyr::to_string_with_options(value, options)
        .map_err(|e| CodecError::Serialize(e.to_string()))
}

/// One document of a multi-document stream, not yet decoded. Lets callers look at a document's
/// header (`kind`, `version`) before choosing the type to decode the rest into.
#[derive(Clone, PartialEq, Eq)]
pub struct YamlDocument<'a> {
    text: &'a str,
    first_line: usize,
    content_line: usize,
    empty: bool,
}

impl fmt::Debug for YamlDocument<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("YamlDocument")
            .field("first_line", &self.first_line)
            .field("bytes", &self.text.len())
            .finish()
    }
}

impl<'a> YamlDocument<'a> {
    /// The document's source text, including its `---` marker if it had one.
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// The 1-based line the document starts on in the whole stream.
    pub fn first_line(&self) -> usize {
        self.first_line
    }

    /// The 1-based line of the document's first node (after any `---` line and comments).
    pub fn content_line(&self) -> usize {
        self.content_line
    }

    /// True when the document holds no node at all (e.g. a trailing `---`).
    pub fn is_empty(&self) -> bool {
        self.empty
    }

    /// Decodes this document. Lines and columns in errors refer to the whole stream.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, CodecError> {
        let mut padded = "\n".repeat(self.first_line.saturating_sub(1));
        padded.push_str(self.text);
        serde_saphyr::from_str_with_options(&padded, options())
            .map_err(|e| parse_error(&padded, &e))
    }
}

/// Splits a multi-document stream into its documents without decoding them.
pub fn split_documents(input: &str) -> Result<Vec<YamlDocument<'_>>, CodecError> {
    check_size(input)?;
    let mut documents = Vec::new();
    let mut parser = Parser::new_from_str(input);
    let mut start: Option<(usize, usize)> = None;
    let mut nodes = 0usize;
    let mut empty_scalar = false;
    let mut content_line = 0usize;
    while let Some(event) = parser.next_event() {
        let (event, span) = event.map_err(|e| CodecError::Parse {
            path: None,
            message: e.info(),
            position: Some(Position {
                line: e.marker().line() as u64,
                column: e.marker().col() as u64 + 1,
            }),
        })?;
        match event {
            Event::DocumentStart(..) => {
                let offset = span.start.byte_offset().unwrap_or(0);
                let line_start = input[..offset].rfind('\n').map_or(0, |i| i + 1);
                start = Some((line_start, span.start.line()));
                content_line = span.start.line();
                nodes = 0;
                empty_scalar = false;
            }
            Event::DocumentEnd => {
                let Some((begin, first_line)) = start.take() else {
                    continue;
                };
                let end = span.end.byte_offset().unwrap_or(input.len()).max(begin);
                documents.push(YamlDocument {
                    text: &input[begin..end],
                    first_line,
                    content_line,
                    empty: nodes == 0 || (nodes == 1 && empty_scalar),
                });
                if documents.len() > MAX_DOCUMENTS {
                    return Err(CodecError::Parse {
                        path: None,
                        message: format!("more than {MAX_DOCUMENTS} YAML documents"),
                        position: Some(Position {
                            line: span.start.line() as u64,
                            column: span.start.col() as u64 + 1,
                        }),
                    });
                }
            }
            Event::Scalar(..) => {
                nodes += 1;
                if nodes == 1 {
                    content_line = span.start.line();
                }
                // An implicit null (a document with no content) takes no source bytes.
                empty_scalar = span.start.index() == span.end.index();
            }
            Event::MappingStart(..) | Event::SequenceStart(..) | Event::Alias(..) => {
                nodes += 1;
                if nodes == 1 {
                    content_line = span.start.line();
                }
            }
            _ => {}
        }
    }
    Ok(documents)
}

fn parse_error(input: &str, error: &serde_saphyr::Error) -> CodecError {
    let bare = error.without_snippet().to_string();
    let location = error.location().filter(|l| l.line() > 0);
    let message = match &location {
        Some(l) => {
            let suffix = format!(" at line {}, column {}", l.line(), l.column());
            bare.strip_suffix(&suffix).unwrap_or(&bare).to_owned()
        }
        None => bare,
    };
    let position = location.map(|l| Position {
        line: l.line(),
        column: l.column(),
    });
    let path = position.as_ref().and_then(|p| path_at(input, p));
    CodecError::Parse {
        path,
        message,
        position,
    }
}

/// One open collection while walking events.
enum Frame {
    Map {
        key: Option<String>,
        next_is_key: bool,
    },
    Seq {
        index: usize,
    },
}

fn render_path(stack: &[Frame], leaf_key: Option<&str>) -> String {
    let mut out = String::new();
    let push_key = |out: &mut String, key: &str| {
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(key);
    };
    for frame in stack {
        match frame {
            Frame::Map {
                key: Some(key),
                next_is_key: false,
            } => push_key(&mut out, key),
            Frame::Map { .. } => {}
            Frame::Seq { index } => out.push_str(&format!("[{index}]")),
        }
    }
    if let Some(key) = leaf_key {
        push_key(&mut out, key);
    }
    out
}

/// The dotted path of the node that starts at `position` (or, failing an exact hit, of the last
/// node starting before it).
fn path_at(input: &str, position: &Position) -> Option<String> {
    let target = (position.line as usize, position.column as usize);
    let mut parser = Parser::new_from_str(input);
    let mut stack: Vec<Frame> = Vec::new();
    let mut best: Option<String> = None;
    let mut exact: Option<String> = None;
    while let Some(Ok((event, span))) = parser.next_event() {
        let at = (span.start.line(), span.start.col() + 1);
        if at > target {
            break;
        }
        let is_node = matches!(
            event,
            Event::Scalar(..)
                | Event::MappingStart(..)
                | Event::SequenceStart(..)
                | Event::Alias(..)
        );
        if is_node {
            // A scalar in key position names the next path segment.
            let is_key = matches!(
                stack.last(),
                Some(Frame::Map {
                    next_is_key: true,
                    ..
                })
            );
            let here = match (&event, is_key) {
                (Event::Scalar(key, ..), true) => render_path(&stack, Some(key)),
                _ => render_path(&stack, None),
            };
            // A mapping and its first key start at the same place: the key, seen later, wins.
            if at == target {
                exact = Some(here);
            } else {
                best = Some(here);
            }
        }
        match event {
            Event::DocumentStart(..) => stack.clear(),
            Event::Scalar(value, ..) => advance(&mut stack, Some(value.into_owned())),
            Event::Alias(..) => advance(&mut stack, None),
            Event::MappingStart(..) => stack.push(Frame::Map {
                key: None,
                next_is_key: true,
            }),
            Event::SequenceStart(..) => stack.push(Frame::Seq { index: 0 }),
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                advance(&mut stack, None);
            }
            _ => {}
        }
    }
    exact.or(best)
}

/// Records that one complete node was consumed in the innermost collection.
fn advance(stack: &mut [Frame], scalar: Option<String>) {
    match stack.last_mut() {
        Some(Frame::Map { key, next_is_key }) => {
            if *next_is_key {
                *key = scalar;
                *next_is_key = false;
            } else {
                *next_is_key = true;
            }
        }
        Some(Frame::Seq { index }) => *index += 1,
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, serde::Serialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        name: String,
        items: Vec<Inner>,
    }

    #[derive(Debug, serde::Deserialize, serde::Serialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        port: u16,
    }

    #[test]
    fn unknown_key_error_names_path_line_and_column() {
        let input = "name: a\nitems:\n  - port: 1\n  - prot: 2\n";
        let err = from_yaml::<Outer>(input).unwrap_err();
        assert_eq!(err.path(), Some("items[1].prot"));
        assert_eq!(err.position(), Some(&Position { line: 4, column: 5 }));
        assert!(
            err.to_string()
                .starts_with("items[1].prot: unknown field `prot`"),
            "{err}"
        );
    }

    #[test]
    fn type_error_names_the_value_path() {
        let err = from_yaml::<Outer>("name: a\nitems:\n  - port: many\n").unwrap_err();
        assert_eq!(err.path(), Some("items[0].port"));
    }

    #[test]
    fn oversize_input_is_refused_before_parsing() {
        let input = format!("name: \"{}\"\nitems: []\n", "x".repeat(MAX_CONFIG_BYTES));
        assert!(matches!(
            from_yaml::<Outer>(&input),
            Err(CodecError::TooLarge { .. })
        ));
        assert!(matches!(
            split_documents(&input),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let input = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(from_yaml::<Vec<serde::de::IgnoredAny>>(&input).is_err());
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut input = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            input.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let parsed: Result<std::collections::BTreeMap<String, serde::de::IgnoredAny>, _> =
            from_yaml(&input);
        assert!(parsed.is_err());
    }

    #[test]
    fn split_documents_keeps_lines_of_the_whole_stream() {
        let input = "name: a\nitems: []\n---\nname: b\nitems:\n  - port: x\n...\n---\n";
        let docs = split_documents(input).unwrap();
        assert_eq!(docs.len(), 3);
        assert!(!docs[0].is_empty());
        assert!(docs[2].is_empty());
        assert_eq!(docs[0].decode::<Outer>().unwrap().name, "a");
        let err = docs[1].decode::<Outer>().unwrap_err();
        assert_eq!(err.path(), Some("items[0].port"));
        assert_eq!(err.position().map(|p| p.line), Some(6));
    }

    #[test]
    fn round_trip() {
        let value = Outer {
            name: "multi\nline: yes".into(),
            items: vec![Inner { port: 50000 }],
        };
        let text = to_yaml(&value).unwrap();
        assert_eq!(from_yaml::<Outer>(&text).unwrap(), value);
    }
}
