//! Kernel config fragments and a checker that compares a kernel's `.config` with them.
//!
//! A fragment is in `.config` syntax: `CONFIG_X=y`, `CONFIG_X=m`, `CONFIG_X=<value>` or
//! `# CONFIG_X is not set`. A comment line `# [all]`, `# [arm64]` or `# [x86_64]` scopes the
//! lines after it to one architecture. An option absent from a `.config` counts as not set.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A fragment's role: required options fail a check, hardening ones are only reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FragmentKind {
    Required,
    Hardening,
}

/// One option's value in a `.config` or a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Builtin,
    Module,
    NotSet,
    /// A number or quoted string, as written.
    Other(String),
}

/// Architectures a fragment line can be scoped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelArch {
    Arm64,
    X86_64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    All,
    Only(KernelArch),
}

/// One wanted option of a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub option: String,
    pub wanted: Value,
    scope: Scope,
}

/// A parsed fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    pub name: String,
    pub kind: FragmentKind,
    pub entries: Vec<Entry>,
}

/// A parsed `.config`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KernelConfig {
    options: BTreeMap<String, Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("Cannot read kernel config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{name}, line {line}: {reason}: {text:?}")]
    Syntax {
        name: String,
        line: usize,
        reason: &'static str,
        text: String,
    },
}

/// The outcome for one option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Wanted built in, found as a module: present, but it must be loaded before use.
    AsModule,
    /// A required option is missing or has another value.
    Missing,
    /// A hardening recommendation the kernel does not follow.
    Gap,
}

/// One row of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub fragment: String,
    pub option: String,
    pub wanted: Value,
    pub found: Value,
    pub status: Status,
}

/// All rows of a check, in fragment order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub arch: Option<KernelArch>,
    pub rows: Vec<Row>,
}

const FRAGMENTS: [(&str, FragmentKind, &str); 3] = [
    (
        "machined.config",
        FragmentKind::Required,
        include_str!("../fragments/machined.config"),
    ),
    (
        "containers.config",
        FragmentKind::Required,
        include_str!("../fragments/containers.config"),
    ),
    (
        "hardening.config",
        FragmentKind::Hardening,
        include_str!("../fragments/hardening.config"),
    ),
];

/// Our fragments from `kernel/fragments/`, built into the crate.
pub fn fragments() -> Vec<Fragment> {
    FRAGMENTS
        .iter()
        .map(|(name, kind, text)| {
            Fragment::parse(name, *kind, text).expect("the built-in fragments parse")
        })
        .collect()
}

/// A `.config` line as (option, value), or None for blank lines and other comments.
fn parse_line(
    name: &str,
    number: usize,
    line: &str,
) -> Result<Option<(String, Value)>, KernelError> {
    let syntax = |reason| KernelError::Syntax {
        name: name.to_owned(),
        line: number,
        reason,
        text: line.to_owned(),
    };
    let line = line.trim();
    if let Some(rest) = line.strip_prefix("# CONFIG_") {
        return match rest.strip_suffix(" is not set") {
            Some(option) if is_option(option) => {
                Ok(Some((format!("CONFIG_{option}"), Value::NotSet)))
            }
            _ if rest.ends_with(" is not set") => Err(syntax("bad option name")),
            _ => Ok(None),
        };
    }
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (option, value) = line
        .split_once('=')
        .ok_or_else(|| syntax("expected CONFIG_X=value"))?;
    let Some(bare) = option.strip_prefix("CONFIG_").filter(|o| is_option(o)) else {
        return Err(syntax("bad option name"));
    };
    let value = match value {
        "y" => Value::Builtin,
        "m" => Value::Module,
        "" => return Err(syntax("empty value")),
        other => Value::Other(other.to_owned()),
    };
    Ok(Some((format!("CONFIG_{bare}"), value)))
}

fn is_option(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl KernelConfig {
    pub fn parse(name: &str, text: &str) -> Result<KernelConfig, KernelError> {
        let mut options = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            if let Some((option, value)) = parse_line(name, i + 1, line)? {
                options.insert(option, value);
            }
        }
        Ok(KernelConfig { options })
    }

    pub fn read(path: &Path) -> Result<KernelConfig, KernelError> {
        let text = std::fs::read_to_string(path).map_err(|source| KernelError::Read {
            path: path.to_owned(),
            source,
        })?;
        KernelConfig::parse(&path.display().to_string(), &text)
    }

    /// The option's value; an absent option is not set.
    pub fn get(&self, option: &str) -> &Value {
        self.options.get(option).unwrap_or(&Value::NotSet)
    }

    /// From `CONFIG_ARM64` or `CONFIG_X86_64`.
    pub fn arch(&self) -> Option<KernelArch> {
        if *self.get("CONFIG_ARM64") == Value::Builtin {
            Some(KernelArch::Arm64)
        } else if *self.get("CONFIG_X86_64") == Value::Builtin {
            Some(KernelArch::X86_64)
        } else {
            None
        }
    }
}

impl Fragment {
    pub fn parse(name: &str, kind: FragmentKind, text: &str) -> Result<Fragment, KernelError> {
        let mut scope = Scope::All;
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            match line.trim() {
                "# [all]" => scope = Scope::All,
                "# [arm64]" => scope = Scope::Only(KernelArch::Arm64),
                "# [x86_64]" => scope = Scope::Only(KernelArch::X86_64),
                _ => {
                    if let Some((option, wanted)) = parse_line(name, i + 1, line)? {
                        entries.push(Entry {
                            option,
                            wanted,
                            scope,
                        });
                    }
                }
            }
        }
        Ok(Fragment {
            name: name.to_owned(),
            kind,
            entries,
        })
    }
}

/// Compares `config` with every entry of `fragments` that applies to its architecture.
pub fn check(config: &KernelConfig, fragments: &[Fragment]) -> Report {
    let arch = config.arch();
    let mut rows = Vec::new();
    for fragment in fragments {
        for entry in &fragment.entries {
            if let Scope::Only(only) = entry.scope
                && Some(only) != arch
            {
                continue;
            }
            let found = config.get(&entry.option).clone();
            let status = match (&entry.wanted, &found) {
                (wanted, found) if wanted == found => Status::Ok,
                (Value::Module, Value::Builtin) => Status::Ok,
                (Value::Builtin, Value::Module) => Status::AsModule,
                _ if fragment.kind == FragmentKind::Hardening => Status::Gap,
                _ => Status::Missing,
            };
            rows.push(Row {
                fragment: fragment.name.clone(),
                option: entry.option.clone(),
                wanted: entry.wanted.clone(),
                found,
                status,
            });
        }
    }
    Report { arch, rows }
}

impl Report {
    /// Required options the kernel lacks.
    pub fn missing_required(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.status == Status::Missing)
    }

    /// Hardening recommendations the kernel does not follow.
    pub fn hardening_gaps(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.status == Status::Gap)
    }

    /// A table of every row that is not plainly OK, then one summary line per fragment.
    pub fn table(&self) -> String {
        let shown: Vec<[String; 5]> = self
            .rows
            .iter()
            .filter(|r| r.status != Status::Ok)
            .map(|r| {
                [
                    r.fragment.clone(),
                    r.option.clone(),
                    r.wanted.to_string(),
                    r.found.to_string(),
                    r.status.to_string(),
                ]
            })
            .collect();
        let header = ["fragment", "option", "wanted", "found", "status"].map(str::to_owned);
        let mut widths = header.clone().map(|h| h.len());
        for row in &shown {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        let format_row = |cells: &[String; 5]| {
            let mut line = String::new();
            for (cell, width) in cells.iter().zip(widths) {
                line.push_str(&format!("{cell:<width$}  "));
            }
            line.trim_end().to_owned() + "\n"
        };
        let mut out = String::new();
        if shown.is_empty() {
            out.push_str("every option as wanted\n");
        } else {
            out.push_str(&format_row(&header));
            for row in &shown {
                out.push_str(&format_row(row));
            }
        }
        let mut fragments: Vec<&str> = Vec::new();
        for row in &self.rows {
            if !fragments.contains(&row.fragment.as_str()) {
                fragments.push(&row.fragment);
            }
        }
        for fragment in fragments {
            let count = |status: Status| {
                self.rows
                    .iter()
                    .filter(|r| r.fragment == fragment && r.status == status)
                    .count()
            };
            out.push_str(&format!(
                "{fragment}: {} ok, {} as modules, {} missing, {} hardening gaps\n",
                count(Status::Ok),
                count(Status::AsModule),
                count(Status::Missing),
                count(Status::Gap)
            ));
        }
        out
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Builtin => f.write_str("y"),
            Value::Module => f.write_str("m"),
            Value::NotSet => f.write_str("not set"),
            Value::Other(v) => f.write_str(v),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::AsModule => "present as a module (load it first)",
            Status::Missing => "MISSING",
            Status::Gap => "hardening gap",
        })
    }
}

impl fmt::Display for KernelArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KernelArch::Arm64 => "arm64",
            KernelArch::X86_64 => "x86_64",
        })
    }
}
