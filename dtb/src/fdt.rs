//! Flattened device trees (DTB) in memory: parsed, written back, and overlaid.
//!
//! [`Fdt::parse`] checks a blob completely and refuses malformed input with the reason, never
//! panicking; [`Fdt::to_bytes`] writes a version-17 blob; [`Fdt::apply_overlay`] merges an
//! overlay compiled with `dtc -@` the way libfdt's `fdt_overlay_apply` (behind `fdtoverlay`)
//! does, down to the order in which new properties and nodes land.
//!
//! Node lookups follow libfdt: a path component without a unit address (`serial`) also finds
//! the first child named with one (`serial@7e201000`), and a path that does not start with `/`
//! starts with an alias from `/aliases`.

use std::collections::HashMap;

/// The FDT header magic, big-endian at offset 0.
pub const FDT_MAGIC: u32 = 0xd00d_feed;
/// Largest blob [`Fdt::parse`] accepts.
pub const MAX_SIZE: usize = 16 << 20;
/// Deepest node nesting [`Fdt::parse`] accepts, the root counting as 1.
pub const MAX_DEPTH: usize = 64;

const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;

const HEADER_SIZE_V16: usize = 36;
const HEADER_SIZE_V17: usize = 40;
const RESERVATION_SIZE: usize = 16;
const WRITTEN_VERSION: u32 = 17;
const WRITTEN_LAST_COMPATIBLE_VERSION: u32 = 16;
/// The phandle value dtc writes where a reference still awaits a fixup; never a node's.
const UNRESOLVED_PHANDLE: u32 = u32::MAX;
const PHANDLE_PROPERTIES: [&str; 2] = ["phandle", "linux,phandle"];

/// Why a blob cannot be read or an overlay cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FdtError {
    #[error("not a DTB: magic {magic:#010x}, expected {FDT_MAGIC:#010x}")]
    NotADtb { magic: u32 },
    #[error("malformed DTB: {0}")]
    Malformed(String),
    #[error("malformed overlay: {0}")]
    MalformedOverlay(String),
    #[error("{fragment}: target-path {path:?} is not in the base device tree")]
    TargetPathNotFound { fragment: String, path: String },
    #[error("{fragment}: target phandle {phandle:#x} is not in the base device tree")]
    TargetPhandleNotFound { fragment: String, phandle: u32 },
    #[error(
        "overlay label {label:?} needs the base device tree's __symbols__, which it lacks \
         (compile the base with dtc -@)"
    )]
    NoSymbols { label: String },
    #[error("overlay label {label:?} is not in the base device tree's __symbols__")]
    UnknownLabel { label: String },
    #[error(
        "base __symbols__ label {label:?} names {path:?}, which is not in the base device tree"
    )]
    DanglingSymbol { label: String, path: String },
    #[error("no phandles left: the overlay's phandles shifted past 0xfffffffe")]
    PhandlesExhausted,
}

fn malformed(reason: String) -> FdtError {
    FdtError::Malformed(reason)
}

fn bad_overlay(reason: String) -> FdtError {
    FdtError::MalformedOverlay(reason)
}

/// A whole device tree: the node tree, the boot CPU and the memory reservations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fdt {
    pub root: Node,
    pub boot_cpuid: u32,
    /// `(address, size)` pairs of the memory reservation block.
    pub reservations: Vec<(u64, u64)>,
}

/// A node: its properties, then its children, in blob order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    /// Name with unit address (`serial@7e201000`); empty for the root.
    pub name: String,
    pub properties: Vec<Property>,
    pub children: Vec<Node>,
}

/// A property and its raw value (big-endian cells, NUL-terminated strings, bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    pub name: String,
    pub value: Vec<u8>,
}

impl Node {
    pub fn new(name: impl Into<String>) -> Self {
        Node {
            name: name.into(),
            ..Node::default()
        }
    }

    /// The first child called `name`, or named `name@...` when `name` has no unit address.
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.child_index(name).map(|i| &self.children[i])
    }

    /// Like [`Node::child`], for changing it.
    pub fn child_mut(&mut self, name: &str) -> Option<&mut Node> {
        self.child_index(name).map(|i| &mut self.children[i])
    }

    fn child_index(&self, name: &str) -> Option<usize> {
        let unit_less = !name.contains('@');
        self.children.iter().position(|child| {
            child.name == name
                || (unit_less
                    && child
                        .name
                        .strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with('@')))
        })
    }

    pub fn property(&self, name: &str) -> Option<&[u8]> {
        self.properties
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.value.as_slice())
    }

    fn property_mut(&mut self, name: &str) -> Option<&mut Vec<u8>> {
        self.properties
            .iter_mut()
            .find(|p| p.name == name)
            .map(|p| &mut p.value)
    }

    /// The property as one big-endian cell, if it is exactly 4 bytes.
    pub fn property_u32(&self, name: &str) -> Option<u32> {
        Some(u32::from_be_bytes(self.property(name)?.try_into().ok()?))
    }

    /// The property as one NUL-terminated UTF-8 string.
    pub fn property_str(&self, name: &str) -> Option<&str> {
        let text = self.property(name)?.strip_suffix(&[0])?;
        if text.contains(&0) {
            return None;
        }
        std::str::from_utf8(text).ok()
    }

    /// Property `name` as a list of NUL-terminated strings; empty when absent or not text.
    pub fn property_strings(&self, name: &str) -> Vec<&str> {
        self.property(name)
            .and_then(|value| value.strip_suffix(&[0]))
            .and_then(|text| std::str::from_utf8(text).ok())
            .map_or_else(Vec::new, |text| text.split('\0').collect())
    }

    /// Replaces the value of property `name`, or adds it before the others as libfdt does.
    pub fn set_property(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        let value = value.into();
        match self.property_mut(name) {
            Some(old) => *old = value,
            None => self.properties.insert(
                0,
                Property {
                    name: name.to_owned(),
                    value,
                },
            ),
        }
    }

    /// The node's phandle: `phandle`, else `linux,phandle`, when 4 bytes and not 0.
    pub fn phandle(&self) -> Option<u32> {
        PHANDLE_PROPERTIES
            .iter()
            .find_map(|name| self.property_u32(name))
            .filter(|phandle| *phandle != 0)
    }

    fn max_phandle(&self) -> u32 {
        self.children
            .iter()
            .map(Node::max_phandle)
            .fold(self.phandle().unwrap_or(0), u32::max)
    }
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(word.try_into().ok()?))
}

fn be64(bytes: &[u8], at: usize) -> Option<u64> {
    let word = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_be_bytes(word.try_into().ok()?))
}

fn align4(n: usize) -> usize {
    n.next_multiple_of(4)
}

/// The text of a C string property: up to the first NUL.
fn c_string(value: &[u8]) -> String {
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

fn child_path(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// The header fields `parse` needs, checked against the blob.
struct Header {
    total_size: usize,
    header_size: usize,
    struct_offset: usize,
    strings_offset: usize,
    reservations_offset: usize,
    boot_cpuid: u32,
    strings_size: usize,
    /// Absent before version 17.
    struct_size: Option<usize>,
}

impl Header {
    fn read(bytes: &[u8]) -> Result<Header, FdtError> {
        let too_short = |needed: usize| {
            malformed(format!(
                "{} bytes is too short for the {needed}-byte header",
                bytes.len()
            ))
        };
        let magic = be32(bytes, 0).ok_or_else(|| too_short(HEADER_SIZE_V16))?;
        if magic != FDT_MAGIC {
            return Err(FdtError::NotADtb { magic });
        }
        let field = |at: usize| be32(bytes, at).ok_or_else(|| too_short(HEADER_SIZE_V16));
        let version = field(20)?;
        if version < 16 {
            return Err(malformed(format!(
                "version {version}, expected 16 or later"
            )));
        }
        let last_compatible = field(24)?;
        if last_compatible > WRITTEN_VERSION {
            return Err(malformed(format!(
                "last compatible version {last_compatible} is newer than 17"
            )));
        }
        let header_size = if version >= 17 {
            HEADER_SIZE_V17
        } else {
            HEADER_SIZE_V16
        };
        if bytes.len() < header_size {
            return Err(too_short(header_size));
        }
        let total_size = field(4)? as usize;
        if total_size > MAX_SIZE {
            return Err(malformed(format!(
                "totalsize {total_size} is over the {} MiB limit",
                MAX_SIZE >> 20
            )));
        }
        if total_size > bytes.len() {
            return Err(malformed(format!(
                "totalsize {total_size} but only {} bytes",
                bytes.len()
            )));
        }
        if total_size < header_size {
            return Err(malformed(format!(
                "totalsize {total_size} is smaller than the {header_size}-byte header"
            )));
        }
        Ok(Header {
            total_size,
            header_size,
            struct_offset: field(8)? as usize,
            strings_offset: field(12)? as usize,
            reservations_offset: field(16)? as usize,
            boot_cpuid: field(28)?,
            strings_size: field(32)? as usize,
            struct_size: if version >= 17 {
                Some(field(36)? as usize)
            } else {
                None
            },
        })
    }

    /// The `size` bytes at `offset`, which must lie after the header and within the blob.
    fn block<'a>(
        &self,
        blob: &'a [u8],
        what: &str,
        offset: usize,
        size: usize,
    ) -> Result<&'a [u8], FdtError> {
        if offset < self.header_size {
            return Err(malformed(format!(
                "{what} block offset {offset} overlaps the header"
            )));
        }
        offset
            .checked_add(size)
            .and_then(|end| blob.get(offset..end))
            .ok_or_else(|| {
                malformed(format!(
                    "{what} block ({size} bytes at {offset}) runs past totalsize {}",
                    self.total_size
                ))
            })
    }
}

impl Fdt {
    /// Reads a flattened device tree (version 16 or later), checking every offset, size and
    /// token; bytes after `totalsize` are ignored.
    pub fn parse(bytes: &[u8]) -> Result<Fdt, FdtError> {
        let header = Header::read(bytes)?;
        let blob = &bytes[..header.total_size];

        if !header.struct_offset.is_multiple_of(4) {
            return Err(malformed(format!(
                "structure block offset {} is not 4-byte aligned",
                header.struct_offset
            )));
        }
        let struct_size = header
            .struct_size
            .unwrap_or_else(|| header.total_size.saturating_sub(header.struct_offset));
        let structure = header.block(blob, "structure", header.struct_offset, struct_size)?;
        let strings = header.block(blob, "strings", header.strings_offset, header.strings_size)?;
        let reservations = read_reservations(&header, blob)?;
        let root = StructReader {
            structure,
            strings,
            base: header.struct_offset,
        }
        .read()?;
        Ok(Fdt {
            root,
            boot_cpuid: header.boot_cpuid,
            reservations,
        })
    }

    /// Writes a version-17 blob: header, memory reservations, structure, deduplicated strings.
    ///
    /// # Panics
    ///
    /// If the tree does not fit the format's 32-bit sizes (4 GiB).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut writer = Writer::default();
        writer.node(&self.root);
        writer.word(END);

        let reservations_size = (self.reservations.len() + 1) * RESERVATION_SIZE;
        let struct_offset = HEADER_SIZE_V17 + reservations_size;
        let strings_offset = struct_offset + writer.structure.len();
        let total_size = strings_offset + writer.strings.len();
        let u32_of = |n: usize| u32::try_from(n).expect("a device tree under 4 GiB");

        let mut out = Vec::with_capacity(total_size);
        for field in [
            FDT_MAGIC,
            u32_of(total_size),
            u32_of(struct_offset),
            u32_of(strings_offset),
            u32_of(HEADER_SIZE_V17),
            WRITTEN_VERSION,
            WRITTEN_LAST_COMPATIBLE_VERSION,
            self.boot_cpuid,
            u32_of(writer.strings.len()),
            u32_of(writer.structure.len()),
        ] {
            out.extend_from_slice(&field.to_be_bytes());
        }
        for (address, size) in self.reservations.iter().chain([&(0, 0)]) {
            out.extend_from_slice(&address.to_be_bytes());
            out.extend_from_slice(&size.to_be_bytes());
        }
        out.extend_from_slice(&writer.structure);
        out.extend_from_slice(&writer.strings);
        out
    }

    /// The node at `path` (`/soc/serial@7e201000`, or `serial0/...` through `/aliases`).
    pub fn node(&self, path: &str) -> Option<&Node> {
        self.locate(path).map(|at| self.node_at(&at))
    }

    /// Like [`Fdt::node`], for changing it.
    pub fn node_mut(&mut self, path: &str) -> Option<&mut Node> {
        let at = self.locate(path)?;
        Some(self.node_at_mut(&at))
    }

    /// The root's `compatible` strings, most specific first.
    pub fn compatible(&self) -> Vec<&str> {
        self.root.property_strings("compatible")
    }

    /// Whether `overlay` is written for this device tree: their root `compatible` lists share
    /// an entry (an overlay names the SoCs it was written for).
    pub fn fits(&self, overlay: &Fdt) -> bool {
        let ours = self.compatible();
        overlay.compatible().iter().any(|c| ours.contains(c))
    }

    /// The highest phandle in the tree, 0 when there is none.
    pub fn max_phandle(&self) -> u32 {
        self.root.max_phandle()
    }

    /// Applies a compiled overlay like libfdt's `fdt_overlay_apply`: renumbers the overlay's
    /// phandles past ours, resolves its labels through our `__symbols__`, merges each
    /// fragment's `__overlay__` into its target and adds the overlay's `__symbols__` to ours.
    ///
    /// On error `self` is left unchanged.
    pub fn apply_overlay(&mut self, overlay: &Fdt) -> Result<(), FdtError> {
        let mut base = self.clone();
        let mut overlay = overlay.clone();

        let delta = base.max_phandle();
        renumber_phandles(&mut overlay.root, "/", delta)?;
        if let Some(local_fixups) = overlay.node("/__local_fixups__").cloned() {
            rewrite_local_references(&mut overlay.root, &local_fixups, "/", &mut |phandle| {
                phandle.wrapping_add(delta)
            })?;
        }
        resolve_fixups(&mut base, &mut overlay)?;
        keep_base_phandles(&base, &mut overlay)?;
        merge_fragments(&mut base, &overlay)?;
        add_symbols(&mut base, &overlay)?;

        *self = base;
        Ok(())
    }

    /// The child indices leading from the root to the node at `path`.
    fn locate(&self, path: &str) -> Option<Vec<usize>> {
        if path.is_empty() {
            return None;
        }
        let (mut at, rest) = if path.starts_with('/') {
            (Vec::new(), path)
        } else {
            let (alias, rest) = path.split_at(path.find('/').unwrap_or(path.len()));
            let target = c_string(self.root.child("aliases")?.property(alias)?);
            if !target.starts_with('/') {
                return None;
            }
            (self.locate(&target)?, rest)
        };
        let mut node = self.node_at(&at);
        for name in rest.split('/').filter(|name| !name.is_empty()) {
            let index = node.child_index(name)?;
            at.push(index);
            node = &node.children[index];
        }
        Some(at)
    }

    /// The child indices of the first node, in tree order, with this phandle.
    fn locate_phandle(&self, phandle: u32) -> Option<Vec<usize>> {
        fn search(node: &Node, phandle: u32, at: &mut Vec<usize>) -> bool {
            if node.phandle() == Some(phandle) {
                return true;
            }
            for (index, child) in node.children.iter().enumerate() {
                at.push(index);
                if search(child, phandle, at) {
                    return true;
                }
                at.pop();
            }
            false
        }
        let mut at = Vec::new();
        search(&self.root, phandle, &mut at).then_some(at)
    }

    fn node_at(&self, at: &[usize]) -> &Node {
        at.iter().fold(&self.root, |node, i| &node.children[*i])
    }

    fn node_at_mut(&mut self, at: &[usize]) -> &mut Node {
        at.iter()
            .fold(&mut self.root, |node, i| &mut node.children[*i])
    }

    fn path_of(&self, at: &[usize]) -> String {
        let mut node = &self.root;
        let mut path = String::new();
        for i in at {
            node = &node.children[*i];
            path.push('/');
            path.push_str(&node.name);
        }
        if path.is_empty() {
            path.push('/');
        }
        path
    }

    /// Where an overlay fragment applies: by its `target` phandle, else its `target-path`
    /// (returned too, as written, since libfdt uses it verbatim for `__symbols__`).
    fn fragment_target(&self, fragment: &Node) -> Result<(Vec<usize>, Option<String>), FdtError> {
        let name = &fragment.name;
        let phandle = match fragment.property("target") {
            None => 0,
            Some(value) => match <[u8; 4]>::try_from(value).map(u32::from_be_bytes) {
                Ok(phandle) if phandle != UNRESOLVED_PHANDLE => phandle,
                _ => {
                    return Err(bad_overlay(format!(
                        "{name}: target is not a resolved phandle"
                    )));
                }
            },
        };
        if phandle != 0 {
            let at =
                self.locate_phandle(phandle)
                    .ok_or_else(|| FdtError::TargetPhandleNotFound {
                        fragment: name.clone(),
                        phandle,
                    })?;
            return Ok((at, None));
        }
        let path = c_string(fragment.property("target-path").ok_or_else(|| {
            bad_overlay(format!(
                "{name} has an __overlay__ node but neither target nor target-path"
            ))
        })?);
        match self.locate(&path) {
            Some(at) => Ok((at, Some(path))),
            None => Err(FdtError::TargetPathNotFound {
                fragment: name.clone(),
                path,
            }),
        }
    }
}

fn read_reservations(header: &Header, blob: &[u8]) -> Result<Vec<(u64, u64)>, FdtError> {
    let offset = header.reservations_offset;
    if !offset.is_multiple_of(8) {
        return Err(malformed(format!(
            "memory reservation block offset {offset} is not 8-byte aligned"
        )));
    }
    if offset < header.header_size {
        return Err(malformed(format!(
            "memory reservation block offset {offset} overlaps the header"
        )));
    }
    let mut reservations = Vec::new();
    let mut at = offset;
    loop {
        let size = at.checked_add(8).and_then(|size_at| be64(blob, size_at));
        match be64(blob, at).zip(size) {
            None => {
                return Err(malformed(
                    "memory reservation block has no terminating entry".into(),
                ));
            }
            Some((0, 0)) => return Ok(reservations),
            Some(reservation) => reservations.push(reservation),
        }
        at += RESERVATION_SIZE;
    }
}

/// Walks the structure block into a tree.
struct StructReader<'a> {
    structure: &'a [u8],
    strings: &'a [u8],
    /// Where the structure block starts in the blob, for offsets in messages.
    base: usize,
}

impl StructReader<'_> {
    fn read(&self) -> Result<Node, FdtError> {
        let mut open: Vec<Node> = Vec::new();
        let mut root = None;
        let mut at = 0;
        loop {
            let token_at = self.base + at;
            let token = be32(self.structure, at).ok_or_else(|| {
                malformed(format!(
                    "structure block ends at {token_at} without an END token"
                ))
            })?;
            at += 4;
            match token {
                BEGIN_NODE => {
                    if root.is_some() {
                        return Err(malformed(format!(
                            "a second root node at offset {token_at}"
                        )));
                    }
                    if open.len() == MAX_DEPTH {
                        return Err(malformed(format!(
                            "nodes nest deeper than {MAX_DEPTH} at offset {token_at}"
                        )));
                    }
                    let name = self.node_name(at)?;
                    at = self.skip(at, name.len() + 1, "node name")?;
                    open.push(Node::new(name));
                }
                END_NODE => {
                    let node = open.pop().ok_or_else(|| {
                        malformed(format!("END_NODE without a node at offset {token_at}"))
                    })?;
                    match open.last_mut() {
                        Some(parent) => parent.children.push(node),
                        None => root = Some(node),
                    }
                }
                PROP => {
                    let truncated =
                        || malformed(format!("truncated property at offset {token_at}"));
                    let len = be32(self.structure, at).ok_or_else(truncated)? as usize;
                    let name_offset = be32(self.structure, at + 4).ok_or_else(truncated)?;
                    at += 8;
                    let value = at
                        .checked_add(len)
                        .and_then(|end| self.structure.get(at..end))
                        .ok_or_else(truncated)?
                        .to_vec();
                    at = self.skip(at, len, "property")?;
                    let name = self.string(name_offset as usize)?;
                    let node = open.last_mut().ok_or_else(|| {
                        malformed(format!("property {name:?} outside any node at {token_at}"))
                    })?;
                    node.properties.push(Property { name, value });
                }
                NOP => {}
                END => {
                    if !open.is_empty() {
                        return Err(malformed(format!(
                            "END at offset {token_at} with {} nodes still open",
                            open.len()
                        )));
                    }
                    return root.ok_or_else(|| malformed("no root node".into()));
                }
                other => {
                    return Err(malformed(format!(
                        "unknown token {other:#x} at offset {token_at}"
                    )));
                }
            }
        }
    }

    /// The offset after `len` bytes at `at`, padded to 4, if still inside the block.
    fn skip(&self, at: usize, len: usize, what: &str) -> Result<usize, FdtError> {
        at.checked_add(len)
            .map(align4)
            .filter(|end| *end <= self.structure.len())
            .ok_or_else(|| {
                malformed(format!(
                    "{what} at offset {} runs past the structure block",
                    self.base + at
                ))
            })
    }

    fn node_name(&self, at: usize) -> Result<String, FdtError> {
        let rest = &self.structure[at.min(self.structure.len())..];
        let len = rest.iter().position(|b| *b == 0).ok_or_else(|| {
            malformed(format!(
                "node name at offset {} runs past the structure block",
                self.base + at
            ))
        })?;
        String::from_utf8(rest[..len].to_vec()).map_err(|_| {
            malformed(format!(
                "node name at offset {} is not UTF-8",
                self.base + at
            ))
        })
    }

    fn string(&self, offset: usize) -> Result<String, FdtError> {
        let rest = self.strings.get(offset..).filter(|rest| !rest.is_empty());
        let rest = rest.ok_or_else(|| {
            malformed(format!(
                "string offset {offset} is outside the strings block"
            ))
        })?;
        let len = rest.iter().position(|b| *b == 0).ok_or_else(|| {
            malformed(format!(
                "string at offset {offset} is not NUL-terminated inside the strings block"
            ))
        })?;
        String::from_utf8(rest[..len].to_vec())
            .map_err(|_| malformed(format!("string at offset {offset} is not UTF-8")))
    }
}

/// Builds the structure and strings blocks.
#[derive(Default)]
struct Writer {
    structure: Vec<u8>,
    strings: Vec<u8>,
    string_offsets: HashMap<String, u32>,
}

impl Writer {
    fn word(&mut self, word: u32) {
        self.structure.extend_from_slice(&word.to_be_bytes());
    }

    fn bytes_padded(&mut self, bytes: &[u8]) {
        self.structure.extend_from_slice(bytes);
        self.structure.resize(align4(self.structure.len()), 0);
    }

    fn string(&mut self, name: &str) -> u32 {
        if let Some(offset) = self.string_offsets.get(name) {
            return *offset;
        }
        let offset = u32::try_from(self.strings.len()).expect("strings block under 4 GiB");
        self.strings.extend_from_slice(name.as_bytes());
        self.strings.push(0);
        self.string_offsets.insert(name.to_owned(), offset);
        offset
    }

    fn node(&mut self, node: &Node) {
        self.word(BEGIN_NODE);
        let mut name = node.name.as_bytes().to_vec();
        name.push(0);
        self.bytes_padded(&name);
        for property in &node.properties {
            self.word(PROP);
            self.word(u32::try_from(property.value.len()).expect("a property under 4 GiB"));
            let name_offset = self.string(&property.name);
            self.word(name_offset);
            self.bytes_padded(&property.value);
        }
        for child in &node.children {
            self.node(child);
        }
        self.word(END_NODE);
    }
}

/// Adds `delta` to every `phandle` and `linux,phandle` in the overlay.
fn renumber_phandles(node: &mut Node, path: &str, delta: u32) -> Result<(), FdtError> {
    for name in PHANDLE_PROPERTIES {
        let Some(value) = node.property_mut(name) else {
            continue;
        };
        let Ok(cell) = <[u8; 4]>::try_from(value.as_slice()) else {
            return Err(bad_overlay(format!(
                "{path}: {name} is {} bytes, not 4",
                value.len()
            )));
        };
        let phandle = u32::from_be_bytes(cell)
            .checked_add(delta)
            .filter(|phandle| *phandle != UNRESOLVED_PHANDLE)
            .ok_or(FdtError::PhandlesExhausted)?;
        *value = phandle.to_be_bytes().to_vec();
    }
    for child in &mut node.children {
        let child_path = child_path(path, &child.name);
        renumber_phandles(child, &child_path, delta)?;
    }
    Ok(())
}

/// Rewrites each phandle cell that `__local_fixups__` (mirroring the tree's layout) lists.
fn rewrite_local_references(
    node: &mut Node,
    fixups: &Node,
    path: &str,
    rewrite: &mut dyn FnMut(u32) -> u32,
) -> Result<(), FdtError> {
    for fixup in &fixups.properties {
        let name = &fixup.name;
        if !fixup.value.len().is_multiple_of(4) {
            return Err(bad_overlay(format!(
                "__local_fixups__ for {path}:{name} is not a list of 32-bit offsets"
            )));
        }
        let value = node.property_mut(name).ok_or_else(|| {
            bad_overlay(format!(
                "__local_fixups__ lists {path}:{name}, which is not in the overlay"
            ))
        })?;
        for offset in fixup.value.chunks_exact(4).filter_map(|cell| be32(cell, 0)) {
            let offset = offset as usize;
            let len = value.len();
            let cell: &mut [u8; 4] = offset
                .checked_add(4)
                .and_then(|end| value.get_mut(offset..end))
                .and_then(|cell| cell.try_into().ok())
                .ok_or_else(|| {
                    bad_overlay(format!(
                        "__local_fixups__ offset {offset} is past the end of {path}:{name} \
                         ({len} bytes)"
                    ))
                })?;
            *cell = rewrite(u32::from_be_bytes(*cell)).to_be_bytes();
        }
    }
    for fixup_child in &fixups.children {
        let child = node.child_mut(&fixup_child.name).ok_or_else(|| {
            bad_overlay(format!(
                "__local_fixups__ names {}, which is not in the overlay",
                child_path(path, &fixup_child.name)
            ))
        })?;
        let child_path = child_path(path, &child.name);
        rewrite_local_references(child, fixup_child, &child_path, rewrite)?;
    }
    Ok(())
}

/// One `path:property:offset` entry of a `__fixups__` property.
struct FixupSite<'a> {
    path: &'a str,
    property: &'a str,
    offset: usize,
}

/// The entries of the `__fixups__` property for `label`: NUL-terminated strings.
fn fixup_sites<'a>(label: &str, value: &'a [u8]) -> Result<Vec<FixupSite<'a>>, FdtError> {
    let malformed_fixup = || {
        bad_overlay(format!(
            "__fixups__ {label:?} is not a list of path:property:offset strings"
        ))
    };
    let Some(entries) = value.strip_suffix(&[0]) else {
        return Err(malformed_fixup());
    };
    entries
        .split(|b| *b == 0)
        .map(|entry| {
            let entry = std::str::from_utf8(entry).map_err(|_| malformed_fixup())?;
            let (path, rest) = entry.split_once(':').ok_or_else(malformed_fixup)?;
            let (property, offset) = rest.split_once(':').ok_or_else(malformed_fixup)?;
            let offset = Some(offset)
                .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|digits| digits.parse().ok())
                .ok_or_else(malformed_fixup)?;
            if property.is_empty() {
                return Err(malformed_fixup());
            }
            Ok(FixupSite {
                path,
                property,
                offset,
            })
        })
        .collect()
}

/// Writes, for every label in the overlay's `__fixups__`, the phandle of the base node our
/// `__symbols__` names at each listed place, giving that node a phandle if it has none.
fn resolve_fixups(base: &mut Fdt, overlay: &mut Fdt) -> Result<(), FdtError> {
    let Some(fixups) = overlay.node("/__fixups__").cloned() else {
        return Ok(());
    };
    for Property { name: label, value } in &fixups.properties {
        let symbols = base
            .node("/__symbols__")
            .ok_or_else(|| FdtError::NoSymbols {
                label: label.clone(),
            })?;
        let path = c_string(
            symbols
                .property(label)
                .ok_or_else(|| FdtError::UnknownLabel {
                    label: label.clone(),
                })?,
        );
        let at = base.locate(&path).ok_or_else(|| FdtError::DanglingSymbol {
            label: label.clone(),
            path,
        })?;
        let phandle = match base.node_at(&at).phandle() {
            Some(phandle) => phandle,
            None => {
                let phandle = base
                    .max_phandle()
                    .max(overlay.max_phandle())
                    .checked_add(1)
                    .filter(|phandle| *phandle != UNRESOLVED_PHANDLE)
                    .ok_or(FdtError::PhandlesExhausted)?;
                base.node_at_mut(&at)
                    .set_property("phandle", phandle.to_be_bytes());
                phandle
            }
        };
        for FixupSite {
            path,
            property,
            offset,
        } in fixup_sites(label, value)?
        {
            let node = overlay.node_mut(path).ok_or_else(|| {
                bad_overlay(format!(
                    "__fixups__ {label:?} names node {path:?}, which is not in the overlay"
                ))
            })?;
            let value = node.property_mut(property).ok_or_else(|| {
                bad_overlay(format!(
                    "__fixups__ {label:?} names {path}:{property}, which is not in the overlay"
                ))
            })?;
            let cell = offset
                .checked_add(4)
                .and_then(|end| value.get_mut(offset..end))
                .ok_or_else(|| {
                    bad_overlay(format!(
                        "__fixups__ {label:?} offset {offset} is past the end of {path}:{property}"
                    ))
                })?;
            cell.copy_from_slice(&phandle.to_be_bytes());
        }
    }
    Ok(())
}

/// Where an overlay node that has a phandle lands on a base node that has one too, gives the
/// overlay node the base's phandle (and its local references with it), so that merging does
/// not break the base's references (libfdt 1.7 and later).
fn keep_base_phandles(base: &Fdt, overlay: &mut Fdt) -> Result<(), FdtError> {
    /// `(overlay node, base phandle, overlay phandle)` for each clash under a fragment.
    fn clashes(
        base_node: &Node,
        overlay_node: &Node,
        at: &mut Vec<usize>,
        found: &mut Vec<(Vec<usize>, u32, u32)>,
    ) {
        if let (Some(kept), Some(replaced)) = (base_node.phandle(), overlay_node.phandle()) {
            found.push((at.clone(), kept, replaced));
        }
        for (index, child) in overlay_node.children.iter().enumerate() {
            if let Some(base_child) = base_node.child(&child.name) {
                at.push(index);
                clashes(base_child, child, at, found);
                at.pop();
            }
        }
    }

    let mut found = Vec::new();
    for (fragment_index, fragment) in overlay.root.children.iter().enumerate() {
        let Some(overlay_index) = fragment.child_index("__overlay__") else {
            continue;
        };
        let target = match base.fragment_target(fragment) {
            Ok((target, _)) => target,
            // Nothing there to overwrite; the merge reports the missing target.
            Err(FdtError::TargetPathNotFound { .. } | FdtError::TargetPhandleNotFound { .. }) => {
                continue;
            }
            Err(other) => return Err(other),
        };
        let mut at = vec![fragment_index, overlay_index];
        clashes(
            base.node_at(&target),
            &fragment.children[overlay_index],
            &mut at,
            &mut found,
        );
    }
    let local_fixups = overlay.node("/__local_fixups__").cloned();
    for (at, kept, replaced) in found {
        let node = overlay.node_at_mut(&at);
        for name in PHANDLE_PROPERTIES {
            if let Some(value) = node.property_mut(name)
                && value.len() == 4
            {
                *value = kept.to_be_bytes().to_vec();
            }
        }
        if let Some(local_fixups) = &local_fixups {
            rewrite_local_references(&mut overlay.root, local_fixups, "/", &mut |phandle| {
                if phandle == replaced { kept } else { phandle }
            })?;
        }
    }
    Ok(())
}

/// Merges every fragment's `__overlay__` node into its target.
fn merge_fragments(base: &mut Fdt, overlay: &Fdt) -> Result<(), FdtError> {
    for fragment in &overlay.root.children {
        let Some(changes) = fragment.child("__overlay__") else {
            continue;
        };
        let (target, _) = base.fragment_target(fragment)?;
        merge_node(base.node_at_mut(&target), changes);
    }
    Ok(())
}

/// Sets every property of `changes` on `target` and merges its children, adding missing
/// ones before the existing children as libfdt does.
fn merge_node(target: &mut Node, changes: &Node) {
    for property in &changes.properties {
        target.set_property(&property.name, property.value.clone());
    }
    for change in &changes.children {
        let index = target.child_index(&change.name).unwrap_or_else(|| {
            target.children.insert(0, Node::new(change.name.clone()));
            0
        });
        merge_node(&mut target.children[index], change);
    }
}

/// Adds the overlay's labels to our `__symbols__`, `/fragment@N/__overlay__/x` becoming
/// `<target>/x`, the target being written as the fragment's target-path or else the path of
/// its target node. Labels outside any `__overlay__` are skipped.
fn add_symbols(base: &mut Fdt, overlay: &Fdt) -> Result<(), FdtError> {
    let Some(symbols) = overlay.root.child("__symbols__") else {
        return Ok(());
    };
    let symbols_index = base.root.child_index("__symbols__").unwrap_or_else(|| {
        base.root.children.insert(0, Node::new("__symbols__"));
        0
    });
    for Property { name: label, value } in &symbols.properties {
        let path = value
            .strip_suffix(&[0])
            .filter(|path| !path.contains(&0))
            .and_then(|path| std::str::from_utf8(path).ok())
            .and_then(|path| path.strip_prefix('/'))
            .ok_or_else(|| bad_overlay(format!("__symbols__ {label:?} is not an absolute path")))?;
        let Some((fragment_name, inside)) = path.split_once('/') else {
            continue;
        };
        let relative = match inside.strip_prefix("__overlay__/") {
            Some(relative) => relative,
            None if inside == "__overlay__" => "",
            None => continue,
        };
        let fragment = overlay
            .root
            .child(fragment_name)
            .filter(|fragment| fragment.child("__overlay__").is_some())
            .ok_or_else(|| {
                bad_overlay(format!(
                    "__symbols__ {label:?} is in {fragment_name}, which is not a fragment"
                ))
            })?;
        let (target, target_path) = base.fragment_target(fragment)?;
        let target_path = target_path.unwrap_or_else(|| base.path_of(&target));
        let mut symbol = if target_path.len() > 1 {
            format!("{target_path}/{relative}")
        } else {
            format!("/{relative}")
        }
        .into_bytes();
        symbol.push(0);
        base.root.children[symbols_index].set_property(label, symbol);
    }
    Ok(())
}
