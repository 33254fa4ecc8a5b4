//! `talosctl list|ls [PATH]`.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::bail;
use clap::Args;
use serde::Serialize;
use talos_proto::machine::{FileInfo, ListRequest, list_request};

use crate::global::{self, GlobalArgs};
use crate::output::{self, OutputFormat, UtcTime};

/// Newer than this, LASTMOD shows the time of day; older, the year (upstream's six months).
const SIX_MONTHS: i64 = 6 * 30 * 24 * 3600;

pub const LIST_EXAMPLES: &str = "\
Examples:
  # The names in /etc
  talosctl -n 10.5.0.2 ls /etc

  # Mode, owner, size and modification time of everything under /var/log, two levels deep
  talosctl -n 10.5.0.2 list /var/log -l -d 2

  # Every directory below /system, with human-readable sizes and ages
  talosctl -n 10.5.0.2 ls /system -r -t d -l -H

Times are shown in UTC. Entries the node cannot read are reported on stderr as
`NODE: error reading file PATH: REASON`, and the exit status is then non-zero.";

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Directory (or file) on the node to list.
    #[arg(value_name = "PATH", default_value = "/")]
    pub path: String,

    /// Show mode, owner, size and modification time (NODE MODE UID GID SIZE(B) LASTMOD LABEL NAME).
    #[arg(short, long)]
    pub long: bool,

    /// Descend into subdirectories without a depth limit.
    #[arg(short, long)]
    pub recurse: bool,

    /// How many levels to descend (1: the directory's own entries).
    #[arg(
        short,
        long,
        default_value_t = 1,
        allow_negative_numbers = true,
        value_name = "N"
    )]
    pub depth: i32,

    /// Sizes and times for people: `4.2 MB`, `3 hours ago`.
    #[arg(short = 'H', long)]
    pub humanize: bool,

    /// Only these types: f (regular file), d (directory), l or L (symbolic link); e.g. `-t fl`
    /// or `-t f,d`.
    #[arg(short, long = "type", value_delimiter = ',', value_name = "TYPES")]
    pub types: Vec<String>,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// One entry, as `-o json|yaml` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileView {
    pub node: String,
    /// Relative to the listed path (`.` for the path itself).
    pub name: String,
    /// Absolute path on the node.
    pub path: String,
    /// Go's `os.FileMode` notation, e.g. `drwxr-xr-x`.
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    pub size: i64,
    /// Unix seconds.
    pub modified: i64,
    pub is_dir: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub link: String,
    /// The SELinux label (`security.selinux`), when the node reports one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub label: String,
}

impl FileView {
    pub fn new(node: String, info: &FileInfo) -> FileView {
        let label = info
            .xattrs
            .iter()
            .find(|x| x.name == "security.selinux")
            .map(|x| {
                String::from_utf8_lossy(&x.data)
                    .trim_matches(['\0', '\n'])
                    .to_owned()
            })
            .unwrap_or_default();
        FileView {
            node,
            name: info.relative_name.clone(),
            path: info.name.clone(),
            mode: output::file_mode_string(info.mode),
            uid: info.uid,
            gid: info.gid,
            size: info.size,
            modified: info.modified,
            is_dir: info.is_dir,
            link: info.link.clone(),
            label,
        }
    }
}

/// `-t` letters to request types, as upstream reads them (`find -type` and FileMode letters).
pub fn parse_types(values: &[String]) -> anyhow::Result<Vec<list_request::Type>> {
    let mut types = Vec::new();
    for c in values.iter().flat_map(|v| v.chars()) {
        types.push(match c {
            'f' => list_request::Type::Regular,
            'd' => list_request::Type::Directory,
            'l' | 'L' => list_request::Type::Symlink,
            other => bail!("invalid file type: {other}"),
        });
    }
    Ok(types)
}

/// The request upstream sends for these flags.
pub fn request(args: &ListArgs) -> anyhow::Result<ListRequest> {
    if args.recurse && args.depth != 1 {
        bail!("only one of flags --recurse and --depth can be specified at the same time");
    }
    let depth = if args.recurse { -1 } else { args.depth };
    Ok(ListRequest {
        root: args.path.clone(),
        recurse: depth > 1 || args.recurse,
        recursion_depth: depth,
        types: parse_types(&args.types)?
            .into_iter()
            .map(i32::from)
            .collect(),
        report_xattrs: args.long,
    })
}

pub async fn run(global: &GlobalArgs, args: ListArgs) -> anyhow::Result<()> {
    let request = request(&args)?;
    let targets = global::targets(global, false).await?;
    let (ok, failed) = global::each(&targets, |t| {
        let request = request.clone();
        async move {
            let mut entries = t.client.list(request).await?;
            let mut found = Vec::new();
            while let Some(info) = entries.next_entry().await? {
                found.push(info);
            }
            Ok(found)
        }
    })
    .await;

    let mut views = Vec::new();
    let mut unreadable = 0;
    for (label, entries) in ok {
        for info in entries {
            let node = global::node_label(&label, info.metadata.as_ref());
            if !info.error.is_empty() {
                unreadable += 1;
                eprintln!("{node}: error reading file {}: {}", info.name, info.error);
                continue;
            }
            views.push(FileView::new(node, &info));
        }
    }
    match args.output {
        OutputFormat::Table if args.long => {
            print!("{}", long_table(&views, args.humanize, unix_now()))
        }
        OutputFormat::Table if targets.len() == 1 => {
            for view in &views {
                println!("{}", view.name);
            }
        }
        OutputFormat::Table => print!("{}", names_table(&views)),
        format => print!("{}", output::render(format, &views)?),
    }
    global::check_failures(failed, targets.len())?;
    if unreadable > 0 {
        bail!("{unreadable} entries could not be read");
    }
    Ok(())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Several nodes without -l: `NODE NAME` (nothing at all when there are no entries).
pub fn names_table(views: &[FileView]) -> String {
    if views.is_empty() {
        return String::new();
    }
    let mut rows = vec![vec!["NODE".to_owned(), "NAME".to_owned()]];
    rows.extend(views.iter().map(|v| vec![v.node.clone(), v.name.clone()]));
    output::table(&rows)
}

/// `-l`: `NODE MODE UID GID SIZE(B) LASTMOD LABEL NAME`; `now` is Unix seconds.
pub fn long_table(views: &[FileView], humanize: bool, now: i64) -> String {
    if views.is_empty() {
        return String::new();
    }
    let mut rows = vec![
        [
            "NODE", "MODE", "UID", "GID", "SIZE(B)", "LASTMOD", "LABEL", "NAME",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for v in views {
        let size = if humanize {
            output::humanize_bytes(u64::try_from(v.size).unwrap_or(0))
        } else {
            v.size.to_string()
        };
        let modified = if humanize {
            output::humanize_time(v.modified, now)
        } else if now.saturating_sub(v.modified) < SIX_MONTHS {
            UtcTime::from_unix(v.modified).ls_recent()
        } else {
            UtcTime::from_unix(v.modified).ls_old()
        };
        let name = if v.link.is_empty() {
            v.name.clone()
        } else {
            format!("{} -> {}", v.name, v.link)
        };
        rows.push(vec![
            v.node.clone(),
            v.mode.clone(),
            v.uid.to_string(),
            v.gid.to_string(),
            size,
            modified,
            v.label.clone(),
            name,
        ]);
    }
    output::table(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(relative: &str, mode: u32, size: i64, modified: i64, link: &str) -> FileInfo {
        FileInfo {
            name: format!("/etc/{relative}"),
            relative_name: relative.to_owned(),
            mode,
            size,
            modified,
            link: link.to_owned(),
            uid: 0,
            gid: 50,
            ..FileInfo::default()
        }
    }

    #[test]
    fn long_table_golden() {
        let now = 1_715_000_000;
        let views = vec![
            FileView::new("n1".into(), &info(".", 0o040_755, 4096, now - 60, "")),
            FileView::new(
                "n1".into(),
                &info("hosts", 0o100_644, 1234, now - 400 * 86_400, ""),
            ),
            FileView::new(
                "n1".into(),
                &info("mtab", 0o120_777, 12, now - 60, "/proc/mounts"),
            ),
        ];
        assert_eq!(
            long_table(&views, false, now),
            "NODE   MODE         UID   GID   SIZE(B)   LASTMOD             LABEL   NAME\n\
             n1     drwxr-xr-x   0     50    4096      May  6 12:52:20             .\n\
             n1     -rw-r--r--   0     50    1234      Apr  2 2023 12:53           hosts\n\
             n1     Lrwxrwxrwx   0     50    12        May  6 12:52:20             mtab -> /proc/mounts\n"
        );
        assert_eq!(
            long_table(&views[1..2], true, now),
            "NODE   MODE         UID   GID   SIZE(B)   LASTMOD      LABEL   NAME\n\
             n1     -rw-r--r--   0     50    1.2 kB    1 year ago           hosts\n"
        );
        assert_eq!(long_table(&[], false, now), "");
        assert_eq!(names_table(&views[..1]), "NODE   NAME\nn1     .\n");
    }

    #[test]
    fn requests_follow_upstream() {
        let args = |recurse: bool, depth: i32, types: &[&str], long: bool| ListArgs {
            path: "/var".into(),
            long,
            recurse,
            depth,
            humanize: false,
            types: types.iter().map(|t| (*t).to_owned()).collect(),
            output: OutputFormat::Table,
        };
        let plain = request(&args(false, 1, &[], false)).unwrap();
        assert_eq!(
            plain,
            ListRequest {
                root: "/var".into(),
                recurse: false,
                recursion_depth: 1,
                types: vec![],
                report_xattrs: false,
            }
        );
        let deep = request(&args(false, 3, &["fl", "d"], true)).unwrap();
        assert!(deep.recurse && deep.report_xattrs);
        assert_eq!(deep.recursion_depth, 3);
        assert_eq!(deep.types, [0, 2, 1]);
        let all = request(&args(true, 1, &[], false)).unwrap();
        assert!(all.recurse);
        assert_eq!(all.recursion_depth, -1);
        let err = request(&args(true, 2, &[], false)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "only one of flags --recurse and --depth can be specified at the same time"
        );
        let err = request(&args(false, 1, &["x"], false)).unwrap_err();
        assert_eq!(err.to_string(), "invalid file type: x");
    }

    #[test]
    fn selinux_label_is_trimmed() {
        let mut with_label = info("f", 0o644, 0, 0, "");
        with_label.xattrs = vec![talos_proto::machine::Xattr {
            name: "security.selinux".into(),
            data: b"system_u:object_r:etc_t:s0\0".to_vec(),
        }];
        let view = FileView::new("n".into(), &with_label);
        assert_eq!(view.label, "system_u:object_r:etc_t:s0");
    }
}
