//! Text, JSON and YAML rendering of command results (upstream-compatible layouts).

use std::fmt::Write as _;

use clap::ValueEnum;
use serde::Serialize;
use serde::ser::SerializeMap;
use talos_proto::machine::{MemInfo, ServiceInfo, VersionInfo};

/// `-o/--output` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    /// Aligned columns, as upstream talosctl prints them.
    #[default]
    Table,
    /// One JSON document.
    Json,
    /// One YAML document.
    Yaml,
}

/// Renders `value` as JSON or YAML (callers handle `Table` themselves).
pub fn render<T: Serialize>(format: OutputFormat, value: &T) -> anyhow::Result<String> {
    Ok(match format {
        OutputFormat::Json => {
            let mut text = serde_json::to_string_pretty(value)?;
            text.push('\n');
            text
        }
        OutputFormat::Yaml => talos_machinery::codec::to_yaml(value)?,
        OutputFormat::Table => anyhow::bail!("table output is rendered by each command"),
    })
}

/// Left-aligned columns separated by three spaces (like Go's tabwriter with padding 3);
/// the last cell of a row is not padded.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<width$}", width = widths[i] + 3);
            }
        }
        out.push('\n');
    }
    out
}

/// A duration the way Go prints a `time.Duration` rounded to seconds: `0s`, `42s`, `3m7s`, `2h0m5s`.
pub fn go_duration(seconds: i64) -> String {
    let sign = if seconds < 0 { "-" } else { "" };
    let s = seconds.unsigned_abs();
    let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
    if h > 0 {
        format!("{sign}{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{sign}{m}m{s}s")
    } else {
        format!("{sign}{s}s")
    }
}

/// go-humanize's `Bytes`: SI units with one decimal below 10 (`9 B`, `1.2 kB`, `15 MB`).
pub fn humanize_bytes(bytes: u64) -> String {
    const SUFFIXES: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if bytes < 10 {
        return format!("{bytes} B");
    }
    let value = bytes as f64;
    let exponent = (value.ln() / 1000f64.ln()).floor();
    let suffix = SUFFIXES[(exponent as usize).min(SUFFIXES.len() - 1)];
    let scaled = (value / 1000f64.powf(exponent) * 10.0 + 0.5).floor() / 10.0;
    if scaled < 10.0 {
        format!("{scaled:.1} {suffix}")
    } else {
        format!("{scaled:.0} {suffix}")
    }
}

/// go-humanize's `Time`: how long before (`3 minutes ago`) or after (`2 days from now`) `now`
/// the Unix time `then` is.
pub fn humanize_time(then: i64, now: i64) -> String {
    const MINUTE: i64 = 60;
    const HOUR: i64 = 60 * MINUTE;
    const DAY: i64 = 24 * HOUR;
    const WEEK: i64 = 7 * DAY;
    const MONTH: i64 = 30 * DAY;
    const YEAR: i64 = 12 * MONTH;
    // (below this many seconds, format, unit): upstream's magnitudes.
    const MAGNITUDES: [(i64, &str, i64); 16] = [
        (1, "now", 0),
        (2, "1 second", 0),
        (MINUTE, "seconds", 1),
        (2 * MINUTE, "1 minute", 0),
        (HOUR, "minutes", MINUTE),
        (2 * HOUR, "1 hour", 0),
        (DAY, "hours", HOUR),
        (2 * DAY, "1 day", 0),
        (WEEK, "days", DAY),
        (2 * WEEK, "1 week", 0),
        (MONTH, "weeks", WEEK),
        (2 * MONTH, "1 month", 0),
        (YEAR, "months", MONTH),
        (18 * MONTH, "1 year", 0),
        (2 * YEAR, "2 years", 0),
        (37 * YEAR, "years", YEAR),
    ];
    let (label, diff) = if then <= now {
        ("ago", now.saturating_sub(then))
    } else {
        ("from now", then.saturating_sub(now))
    };
    match MAGNITUDES.iter().find(|(below, _, _)| diff < *below) {
        Some((_, "now", _)) => "now".to_owned(),
        Some((_, text, 0)) => format!("{text} {label}"),
        Some((_, unit, per)) => format!("{} {unit} {label}", diff / per),
        None => format!("a long while {label}"),
    }
}

/// Go's `os.FileMode.String()` (`drwxr-xr-x`, `Lrwxrwxrwx`, `Dcrw-rw-rw-`).
///
/// Upstream nodes send Go's FileMode bits; talos-rs nodes send the Unix `st_mode`. Go's bits 9 to
/// 18 are always clear, and a Unix mode always has its file type in bits 12 to 15, so the two are
/// told apart by those bits.
pub fn file_mode_string(mode: u32) -> String {
    const GO_TYPE_CHARS: &str = "dalTLDpSugct?";
    let go = go_file_mode(mode);
    let mut out = String::new();
    for (i, c) in GO_TYPE_CHARS.chars().enumerate() {
        if go & (1 << (31 - i)) != 0 {
            out.push(c);
        }
    }
    if out.is_empty() {
        out.push('-');
    }
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        out.push(if go & (1 << (8 - i)) != 0 { c } else { '-' });
    }
    out
}

/// A mode in Go's `os.FileMode` bits; a Unix `st_mode` (older talos-rs nodes) is converted.
fn go_file_mode(mode: u32) -> u32 {
    if mode & 0o177_000 == 0 {
        return mode;
    }
    talos_machinery::file_mode::from_unix(mode)
}

/// A UTC calendar time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

impl UtcTime {
    /// The calendar time of Unix seconds (proleptic Gregorian, as Go and `date -u` count).
    pub fn from_unix(seconds: i64) -> UtcTime {
        let days = seconds.div_euclid(86_400);
        let secs = seconds.rem_euclid(86_400);
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let small = |v: i64| u32::try_from(v).unwrap_or(0);
        UtcTime {
            year,
            month: small(month),
            day: small(day),
            hour: small(secs / 3600),
            minute: small(secs % 3600 / 60),
            second: small(secs % 60),
        }
    }

    fn month_name(&self) -> &'static str {
        MONTHS[usize::try_from(self.month.saturating_sub(1)).unwrap_or(0) % 12]
    }

    /// Go's `Jan _2 15:04:05` (`ls -l` style for the last six months).
    pub fn ls_recent(&self) -> String {
        format!(
            "{} {:>2} {:02}:{:02}:{:02}",
            self.month_name(),
            self.day,
            self.hour,
            self.minute,
            self.second
        )
    }

    /// Go's `Jan _2 2006 15:04` (`ls -l` style for older times).
    pub fn ls_old(&self) -> String {
        format!(
            "{} {:>2} {} {:02}:{:02}",
            self.month_name(),
            self.day,
            self.year,
            self.hour,
            self.minute
        )
    }

    /// RFC 3339 with a `Z`, e.g. `2024-05-06T07:08:09Z`.
    pub fn rfc3339(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// Go's `time.Time.String()` of a UTC time: `2024-05-06 07:08:09.1234 +0000 UTC` (trailing zeros
/// of the fraction dropped, no fraction at whole seconds).
pub fn go_utc_string(seconds: i64, nanos: i32) -> String {
    let t = UtcTime::from_unix(seconds);
    let mut out = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    );
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        let _ = write!(out, ".{}", fraction.trim_end_matches('0'));
    }
    out.push_str(" +0000 UTC");
    out
}

// ---- version ----

/// One version block's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub tag: String,
    pub sha: String,
    pub built: String,
    /// Upstream's "Go version" line; ours names the Rust compiler.
    pub go_version: String,
    pub os: String,
    pub arch: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rbac: Option<bool>,
}

impl VersionView {
    pub fn from_server(node: String, info: &VersionInfo, rbac: Option<bool>) -> VersionView {
        VersionView {
            node: Some(node),
            tag: info.tag.clone(),
            sha: info.sha.clone(),
            built: info.built.clone(),
            go_version: info.go_version.clone(),
            os: info.os.clone(),
            arch: info.arch.clone(),
            rbac,
        }
    }
}

/// `Client:` or one `Server:` block.
pub fn version_block(title: &str, view: &VersionView, short: bool) -> String {
    let mut out = format!("{title}:\n");
    let mut line = |label: &str, value: &str| {
        let _ = writeln!(out, "\t{label:<13}{value}");
    };
    if let Some(node) = &view.node {
        line("NODE:", node);
    }
    if short {
        line("Tag:", &view.tag);
        return out;
    }
    line("Tag:", &view.tag);
    line("SHA:", &view.sha);
    line("Built:", &view.built);
    line("Go version:", &view.go_version);
    line("OS/Arch:", &format!("{}/{}", view.os, view.arch));
    if view.rbac == Some(true) {
        line("Enabled:", "RBAC");
    }
    out
}

// ---- memory ----

const KIB_PER_MIB: u64 = 1024;

/// One row of `talosctl memory`, in MiB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryView {
    pub node: String,
    pub total: u64,
    pub used: u64,
    pub free: u64,
    pub shared: u64,
    pub buffers: u64,
    pub cache: u64,
    pub available: u64,
    /// Every /proc/meminfo value (kB, counts for HugePages_*), with `-v`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meminfo: Option<MemInfoFields>,
}

impl MemoryView {
    pub fn new(node: String, m: &MemInfo, verbose: bool) -> MemoryView {
        let used = m
            .memtotal
            .saturating_sub(m.memfree)
            .saturating_sub(m.cached)
            .saturating_sub(m.buffers);
        MemoryView {
            node,
            total: m.memtotal / KIB_PER_MIB,
            used: used / KIB_PER_MIB,
            free: m.memfree / KIB_PER_MIB,
            shared: m.shmem / KIB_PER_MIB,
            buffers: m.buffers / KIB_PER_MIB,
            cache: m.cached / KIB_PER_MIB,
            available: m.memavailable / KIB_PER_MIB,
            meminfo: verbose.then(|| MemInfoFields(meminfo_fields(m).to_vec())),
        }
    }
}

/// /proc/meminfo names and values in kernel order; serialises as an ordered map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemInfoFields(pub Vec<(&'static str, u64)>);

impl Serialize for MemInfoFields {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// The 48 MemInfo values under their /proc/meminfo names.
pub fn meminfo_fields(m: &MemInfo) -> [(&'static str, u64); 48] {
    [
        ("MemTotal", m.memtotal),
        ("MemFree", m.memfree),
        ("MemAvailable", m.memavailable),
        ("Buffers", m.buffers),
        ("Cached", m.cached),
        ("SwapCached", m.swapcached),
        ("Active", m.active),
        ("Inactive", m.inactive),
        ("Active(anon)", m.activeanon),
        ("Inactive(anon)", m.inactiveanon),
        ("Active(file)", m.activefile),
        ("Inactive(file)", m.inactivefile),
        ("Unevictable", m.unevictable),
        ("Mlocked", m.mlocked),
        ("SwapTotal", m.swaptotal),
        ("SwapFree", m.swapfree),
        ("Dirty", m.dirty),
        ("Writeback", m.writeback),
        ("AnonPages", m.anonpages),
        ("Mapped", m.mapped),
        ("Shmem", m.shmem),
        ("Slab", m.slab),
        ("SReclaimable", m.sreclaimable),
        ("SUnreclaim", m.sunreclaim),
        ("KernelStack", m.kernelstack),
        ("PageTables", m.pagetables),
        ("NFS_Unstable", m.nfsunstable),
        ("Bounce", m.bounce),
        ("WritebackTmp", m.writebacktmp),
        ("CommitLimit", m.commitlimit),
        ("Committed_AS", m.committedas),
        ("VmallocTotal", m.vmalloctotal),
        ("VmallocUsed", m.vmallocused),
        ("VmallocChunk", m.vmallocchunk),
        ("HardwareCorrupted", m.hardwarecorrupted),
        ("AnonHugePages", m.anonhugepages),
        ("ShmemHugePages", m.shmemhugepages),
        ("ShmemPmdMapped", m.shmempmdmapped),
        ("CmaTotal", m.cmatotal),
        ("CmaFree", m.cmafree),
        ("HugePages_Total", m.hugepagestotal),
        ("HugePages_Free", m.hugepagesfree),
        ("HugePages_Rsvd", m.hugepagesrsvd),
        ("HugePages_Surp", m.hugepagessurp),
        ("Hugepagesize", m.hugepagesize),
        ("DirectMap4k", m.directmap4k),
        ("DirectMap2M", m.directmap2m),
        ("DirectMap1G", m.directmap1g),
    ]
}

pub fn memory_table(rows: &[MemoryView]) -> String {
    let mut cells = vec![
        [
            "NODE",
            "TOTAL",
            "USED",
            "FREE",
            "SHARED",
            "BUFFERS",
            "CACHE",
            "AVAILABLE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in rows {
        cells.push(vec![
            r.node.clone(),
            r.total.to_string(),
            r.used.to_string(),
            r.free.to_string(),
            r.shared.to_string(),
            r.buffers.to_string(),
            r.cache.to_string(),
            r.available.to_string(),
        ]);
    }
    table(&cells)
}

/// `memory -v`: one /proc/meminfo-style listing per node.
pub fn memory_verbose(rows: &[MemoryView]) -> String {
    let mut out = String::new();
    for r in rows {
        let _ = writeln!(out, "NODE: {}", r.node);
        for (name, value) in r.meminfo.iter().flat_map(|f| f.0.iter()) {
            let unit = if name.starts_with("HugePages_") {
                ""
            } else {
                " kB"
            };
            let _ = writeln!(out, "{:<18}{value:>12}{unit}", format!("{name}:"));
        }
    }
    out
}

// ---- services ----

/// One service of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceView {
    pub node: String,
    pub id: String,
    pub state: String,
    /// `?` (unknown), `OK` or `Fail`, as upstream prints it.
    pub health: String,
    pub health_message: String,
    pub events: Vec<ServiceEventView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceEventView {
    pub state: String,
    pub msg: String,
    /// Unix seconds.
    pub ts: Option<i64>,
}

impl ServiceView {
    pub fn new(node: String, info: &ServiceInfo) -> ServiceView {
        let health = info.health.as_ref();
        let health_status = match health {
            Some(h) if h.unknown => "?",
            Some(h) if h.healthy => "OK",
            Some(_) => "Fail",
            None => "?",
        };
        ServiceView {
            node,
            id: info.id.clone(),
            state: info.state.clone(),
            health: health_status.to_owned(),
            health_message: health.map(|h| h.last_message.clone()).unwrap_or_default(),
            events: info
                .events
                .iter()
                .flat_map(|e| e.events.iter())
                .map(|e| ServiceEventView {
                    state: e.state.clone(),
                    msg: e.msg.clone(),
                    ts: e.ts.as_ref().map(|ts| ts.seconds),
                })
                .collect(),
        }
    }
}

/// `3m10s ago`; an event stamped ahead of `now` (the node's clock runs fast) reads `0s ago`.
fn ago(ts: Option<i64>, now: i64) -> String {
    ts.map(|ts| format!("{} ago", go_duration(now.saturating_sub(ts).max(0))))
        .unwrap_or_default()
}

/// `services`: `NODE SERVICE STATE HEALTH LAST CHANGE LAST EVENT`; `now` is Unix seconds.
pub fn services_table(rows: &[ServiceView], now: i64) -> String {
    let mut cells = vec![
        [
            "NODE",
            "SERVICE",
            "STATE",
            "HEALTH",
            "LAST CHANGE",
            "LAST EVENT",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for s in rows {
        let last = s.events.last();
        cells.push(vec![
            s.node.clone(),
            s.id.clone(),
            s.state.clone(),
            s.health.clone(),
            ago(last.and_then(|e| e.ts), now),
            last.map(|e| e.msg.clone()).unwrap_or_default(),
        ]);
    }
    table(&cells)
}

/// `service ID`: the detail view of one service.
pub fn service_detail(s: &ServiceView, now: i64) -> String {
    let mut cells = vec![
        vec!["NODE".to_owned(), s.node.clone()],
        vec!["ID".to_owned(), s.id.clone()],
        vec!["STATE".to_owned(), s.state.clone()],
        vec!["HEALTH".to_owned(), s.health.clone()],
    ];
    if !s.health_message.is_empty() {
        cells.push(vec!["LAST HEALTH MSG".to_owned(), s.health_message.clone()]);
    }
    for (i, e) in s.events.iter().enumerate() {
        let label = if i == 0 { "EVENTS" } else { "" };
        let when = ago(e.ts, now);
        let text = if when.is_empty() {
            format!("[{}]: {}", e.state, e.msg)
        } else {
            format!("[{}]: {} ({when})", e.state, e.msg)
        };
        cells.push(vec![label.to_owned(), text]);
    }
    table(&cells)
}

#[cfg(test)]
mod tests {
    use super::*;
    use talos_proto::machine::{ServiceEvent, ServiceEvents, ServiceHealth};
    use talos_proto::prost_types::Timestamp;

    #[test]
    fn table_pads_all_but_last_column() {
        let rows = vec![
            vec!["NODE".to_owned(), "A".to_owned(), "LAST".to_owned()],
            vec![
                "10.0.0.2".to_owned(),
                "long value".to_owned(),
                "x".to_owned(),
            ],
        ];
        assert_eq!(
            table(&rows),
            "NODE       A            LAST\n10.0.0.2   long value   x\n"
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(42), "42s");
        assert_eq!(go_duration(187), "3m7s");
        assert_eq!(go_duration(7205), "2h0m5s");
        assert_eq!(go_duration(-3), "-3s");
    }

    #[test]
    fn version_blocks() {
        let view = VersionView {
            node: Some("10.5.0.2".into()),
            tag: "v0.1.0".into(),
            sha: "abc123".into(),
            built: String::new(),
            go_version: "rustc 1.95.0".into(),
            os: "linux".into(),
            arch: "arm64".into(),
            rbac: Some(true),
        };
        assert_eq!(
            version_block("Server", &view, false),
            "Server:\n\tNODE:        10.5.0.2\n\tTag:         v0.1.0\n\tSHA:         abc123\n\
             \tBuilt:       \n\tGo version:  rustc 1.95.0\n\tOS/Arch:     linux/arm64\n\
             \tEnabled:     RBAC\n"
        );
        assert_eq!(
            version_block("Server", &view, true),
            "Server:\n\tNODE:        10.5.0.2\n\tTag:         v0.1.0\n"
        );
    }

    fn meminfo() -> MemInfo {
        MemInfo {
            memtotal: 2_048 * 1024,
            memfree: 1_024 * 1024,
            memavailable: 1_536 * 1024,
            buffers: 64 * 1024,
            cached: 256 * 1024,
            shmem: 8 * 1024,
            directmap1g: 3,
            hugepagestotal: 2,
            ..Default::default()
        }
    }

    #[test]
    fn memory_table_in_mib() {
        let rows = vec![MemoryView::new("10.5.0.2".into(), &meminfo(), false)];
        assert_eq!(
            memory_table(&rows),
            "NODE       TOTAL   USED   FREE   SHARED   BUFFERS   CACHE   AVAILABLE\n\
             10.5.0.2   2048    704    1024   8        64        256     1536\n"
        );
        assert_eq!(
            render(OutputFormat::Json, &rows).unwrap(),
            "[\n  {\n    \"node\": \"10.5.0.2\",\n    \"total\": 2048,\n    \"used\": 704,\n    \
             \"free\": 1024,\n    \"shared\": 8,\n    \"buffers\": 64,\n    \"cache\": 256,\n    \
             \"available\": 1536\n  }\n]\n"
        );
    }

    #[test]
    fn memory_verbose_lists_meminfo_in_kernel_order() {
        let rows = vec![MemoryView::new("n1".into(), &meminfo(), true)];
        let text = memory_verbose(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 49);
        assert_eq!(lines[0], "NODE: n1");
        assert_eq!(lines[1], "MemTotal:              2097152 kB");
        assert_eq!(lines[41], "HugePages_Total:             2");
        assert_eq!(lines[48], "DirectMap1G:                 3 kB");
        let json = render(OutputFormat::Json, &rows).unwrap();
        let first = json.find("\"MemTotal\"").unwrap();
        let last = json.find("\"DirectMap1G\"").unwrap();
        assert!(first < last);
    }

    fn service() -> ServiceInfo {
        ServiceInfo {
            id: "apid".into(),
            state: "Running".into(),
            events: Some(ServiceEvents {
                events: vec![
                    ServiceEvent {
                        msg: "Starting".into(),
                        state: "Preparing".into(),
                        ts: Some(Timestamp {
                            seconds: 1_000,
                            nanos: 0,
                        }),
                    },
                    ServiceEvent {
                        msg: "Health check successful".into(),
                        state: "Running".into(),
                        ts: Some(Timestamp {
                            seconds: 1_010,
                            nanos: 0,
                        }),
                    },
                ],
            }),
            health: Some(ServiceHealth {
                unknown: false,
                healthy: true,
                last_message: String::new(),
                last_change: None,
            }),
        }
    }

    #[test]
    fn services_table_golden() {
        let unknown = ServiceInfo {
            id: "udevd".into(),
            state: "Waiting".into(),
            ..Default::default()
        };
        let rows = vec![
            ServiceView::new("10.5.0.2".into(), &service()),
            ServiceView::new("10.5.0.2".into(), &unknown),
        ];
        assert_eq!(
            services_table(&rows, 1_200),
            "NODE       SERVICE   STATE     HEALTH   LAST CHANGE   LAST EVENT\n\
             10.5.0.2   apid      Running   OK       3m10s ago     Health check successful\n\
             10.5.0.2   udevd     Waiting   ?                      \n"
        );
    }

    #[test]
    fn ages_from_a_node_clock_ahead_are_zero() {
        assert_eq!(ago(Some(1_001), 1_000), "0s ago");
        assert_eq!(ago(Some(990), 1_000), "10s ago");
        assert_eq!(ago(None, 1_000), "");
        let rows = vec![ServiceView::new("n".into(), &service())];
        assert!(services_table(&rows, 1_009).contains("   0s ago   "));
    }

    #[test]
    fn service_detail_golden() {
        let view = ServiceView::new("10.5.0.2".into(), &service());
        assert_eq!(
            service_detail(&view, 1_200),
            "NODE     10.5.0.2\nID       apid\nSTATE    Running\nHEALTH   OK\n\
             EVENTS   [Preparing]: Starting (3m20s ago)\n         \
             [Running]: Health check successful (3m10s ago)\n"
        );
    }

    #[test]
    fn humanized_bytes_match_go_humanize() {
        assert_eq!(humanize_bytes(0), "0 B");
        assert_eq!(humanize_bytes(9), "9 B");
        assert_eq!(humanize_bytes(999), "999 B");
        assert_eq!(humanize_bytes(1000), "1.0 kB");
        assert_eq!(humanize_bytes(1234), "1.2 kB");
        assert_eq!(humanize_bytes(15_000_000), "15 MB");
        assert_eq!(humanize_bytes(4_096 * 1024), "4.2 MB");
        assert_eq!(humanize_bytes(u64::MAX), "18 EB");
    }

    #[test]
    fn humanized_times_match_go_humanize() {
        let now = 1_000_000_000;
        assert_eq!(humanize_time(now, now), "now");
        assert_eq!(humanize_time(now - 1, now), "1 second ago");
        assert_eq!(humanize_time(now - 42, now), "42 seconds ago");
        assert_eq!(humanize_time(now - 90, now), "1 minute ago");
        assert_eq!(humanize_time(now - 3 * 3600, now), "3 hours ago");
        assert_eq!(humanize_time(now - 10 * 86_400, now), "1 week ago");
        assert_eq!(humanize_time(now - 400 * 86_400, now), "1 year ago");
        assert_eq!(humanize_time(now + 2 * 86_400, now), "2 days from now");
        assert_eq!(humanize_time(0, now), "32 years ago");
    }

    #[test]
    fn file_modes_from_go_and_unix_bits() {
        assert_eq!(file_mode_string(0o644), "-rw-r--r--");
        assert_eq!(file_mode_string(0o100_644), "-rw-r--r--");
        assert_eq!(file_mode_string((1 << 31) | 0o755), "drwxr-xr-x");
        assert_eq!(file_mode_string(0o040_755), "drwxr-xr-x");
        assert_eq!(file_mode_string(0o120_777), "Lrwxrwxrwx");
        assert_eq!(file_mode_string(0o020_666), "Dcrw-rw-rw-");
        assert_eq!(file_mode_string(0o060_660), "Drw-rw----");
        assert_eq!(file_mode_string(0o041_777), "dtrwxrwxrwx");
        assert_eq!(file_mode_string(0o104_755), "urwxr-xr-x");
        assert_eq!(file_mode_string(0), "----------");
    }

    #[test]
    fn utc_calendar() {
        let t = UtcTime::from_unix(1_715_000_000);
        assert_eq!(t.rfc3339(), "2024-05-06T12:53:20Z");
        assert_eq!(t.ls_recent(), "May  6 12:53:20");
        assert_eq!(t.ls_old(), "May  6 2024 12:53");
        assert_eq!(UtcTime::from_unix(0).rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(UtcTime::from_unix(-1).rfc3339(), "1969-12-31T23:59:59Z");
        assert_eq!(
            UtcTime::from_unix(951_782_400).rfc3339(),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            go_utc_string(1_715_000_000, 0),
            "2024-05-06 12:53:20 +0000 UTC"
        );
        assert_eq!(
            go_utc_string(1_715_000_000, 120_000_000),
            "2024-05-06 12:53:20.12 +0000 UTC"
        );
    }
}
