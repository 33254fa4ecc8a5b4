//! `talosctl image flash`: writes a raw disk image to a block device or a disk file.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufRead as _, IsTerminal as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use talos_images::flash::{self, FlashPhase};

const MOUNTINFO: &str = "/proc/self/mountinfo";
const SYS_BLOCK: &str = "/sys/class/block";

pub const FLASH_EXAMPLES: &str = "\
Examples:
  # Write an image to an SD card, asking for confirmation first
  talosctl image flash talos-rpi_generic-arm64.raw --device /dev/mmcblk0

  # The same in a script, through a stable device name
  talosctl image flash talos.raw --device /dev/disk/by-id/usb-Generic_SD_Reader-0:0 --yes

  # Make a disk file for QEMU (no confirmation needed)
  talosctl image flash talos.raw --device disk.raw

  # Compressed images must be decompressed first
  xz -d talos-rpi_generic-arm64.raw.xz";

#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Write a raw disk image to an SD card, USB stick or disk, or to a disk file, and verify it.
    ///
    /// Only the image's data is written (its holes are skipped), then everything written is read
    /// back and compared. A block device is refused while it or one of its partitions is mounted
    /// (--force writes anyway), when it holds this host's root filesystem, or when it is smaller
    /// than the image. Before overwriting a block device talosctl asks for confirmation; --yes
    /// skips the question, and without a terminal on stdin --yes is required. A disk file is
    /// created or replaced without asking. Compressed images (.xz, .zst, .gz) must be
    /// decompressed first.
    ///
    /// Upstream talosctl has no such command (its `image` commands manage container images).
    #[command(after_help = FLASH_EXAMPLES)]
    Flash(FlashArgs),
}

#[derive(Debug, Args)]
pub struct FlashArgs {
    /// Raw disk image to write.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,

    /// Block device (/dev/sdX, /dev/mmcblkN, a /dev/disk/by-id/ link) or disk file to write;
    /// a missing file is created.
    #[arg(long, value_name = "DEV_OR_FILE")]
    pub device: PathBuf,

    /// Write even though the device or one of its partitions is mounted.
    #[arg(long)]
    pub force: bool,

    /// Do not ask before overwriting a block device.
    #[arg(short, long)]
    pub yes: bool,
}

pub fn run(args: ImageArgs) -> anyhow::Result<()> {
    match args.command {
        ImageCommand::Flash(args) => flash_image(&args),
    }
}

fn flash_image(args: &FlashArgs) -> anyhow::Result<()> {
    let image = &args.image;
    refuse_compressed(image)?;
    let image_meta =
        fs::metadata(image).with_context(|| format!("reading the image {}", image.display()))?;
    if !image_meta.is_file() {
        bail!("the image {} is not a regular file", image.display());
    }
    let target_meta = fs::metadata(&args.device).ok();
    if let Some(meta) = &target_meta
        && (meta.dev(), meta.ino()) == (image_meta.dev(), image_meta.ino())
    {
        bail!("--device {} is the image itself", args.device.display());
    }
    if target_meta.is_some_and(|m| m.file_type().is_block_device()) {
        let target = block_target(&args.device, Path::new(SYS_BLOCK))?;
        let mountinfo = fs::read_to_string(MOUNTINFO)
            .with_context(|| format!("reading {MOUNTINFO} to check {}", target.path))?;
        check_block_target(&target, &mountinfo, image_meta.len(), args.force)?;
        if !args.yes {
            if !std::io::stdin().is_terminal() {
                bail!(
                    "refusing to overwrite {} without confirmation: stdin is not a terminal; \
                     pass --yes",
                    target.path
                );
            }
            confirm(&target, image, image_meta.len())?;
        }
    }

    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{msg:>9} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )?
        .progress_chars("=> "),
    );
    let mut phase = None;
    let report = flash::flash(image, &args.device, &mut |progress| {
        if phase != Some(progress.phase) {
            phase = Some(progress.phase);
            bar.reset();
            bar.set_length(progress.total);
            bar.set_message(match progress.phase {
                FlashPhase::Write => "writing",
                FlashPhase::Verify => "verifying",
            });
        }
        bar.set_position(progress.done);
    });
    bar.finish_and_clear();
    let report = report?;
    println!(
        "{}: wrote and verified {} of data from {} ({} image)",
        args.device.display(),
        HumanBytes(report.data_bytes),
        image.display(),
        HumanBytes(report.image_len)
    );
    Ok(())
}

fn refuse_compressed(image: &Path) -> anyhow::Result<()> {
    let tool = match image.extension().and_then(|e| e.to_str()) {
        Some("xz") => "xz",
        Some("zst") => "zstd",
        Some("gz") => "gzip",
        _ => return Ok(()),
    };
    bail!(
        "{} is compressed; decompress first: {tool} -d {}",
        image.display(),
        image.display()
    )
}

fn confirm(target: &BlockTarget, image: &Path, image_len: u64) -> anyhow::Result<()> {
    let model = fs::read_to_string(Path::new(SYS_BLOCK).join(&target.name).join("device/model"))
        .map(|m| format!("{}, ", m.trim()))
        .unwrap_or_default();
    eprint!(
        "Overwrite {} ({model}{}) with {} ({})? Everything on it will be lost. Type yes to go on: ",
        target.path,
        HumanBytes(target.capacity),
        image.display(),
        HumanBytes(image_len)
    );
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        bail!("not confirmed; {} was left untouched", target.path);
    }
    Ok(())
}

/// What the safety checks know about a block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockTarget {
    /// Canonical path, e.g. `/dev/sdb` for a `/dev/disk/by-id/` link.
    pub path: String,
    /// Kernel name, e.g. `sdb`.
    pub name: String,
    /// `major:minor` of the device, its partitions and whatever is stacked on them (LVM,
    /// dm-crypt, md), so a mount that names none of them (`/dev/root`, `/dev/mapper/…`) counts.
    pub numbers: Vec<String>,
    /// Size in bytes.
    pub capacity: u64,
}

fn block_target(device: &Path, sys_block: &Path) -> anyhow::Result<BlockTarget> {
    let path = fs::canonicalize(device)
        .with_context(|| format!("resolving --device {}", device.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // sysfs gives the size in 512-byte sectors without opening the device.
    let sectors = fs::read_to_string(sys_block.join(&name).join("size"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let capacity = match sectors {
        Some(sectors) => sectors * 512,
        None => File::open(&path)
            .and_then(|mut f| f.seek(SeekFrom::End(0)))
            .with_context(|| format!("measuring {}", path.display()))?,
    };
    Ok(BlockTarget {
        path: path.display().to_string(),
        numbers: stacked_numbers(sys_block, &name),
        name,
        capacity,
    })
}

/// `major:minor` of block device `name`, its partitions and, through `holders/`, every device
/// built on them, as sysfs (`sys_block` is `/sys/class/block`) shows them.
fn stacked_numbers(sys_block: &Path, name: &str) -> Vec<String> {
    let mut numbers = Vec::new();
    let mut seen = HashSet::new();
    let mut pending = vec![sys_block.join(name)];
    while let Some(dir) = pending.pop() {
        if !seen.insert(dir.clone()) {
            continue;
        }
        if let Ok(dev) = fs::read_to_string(dir.join("dev")) {
            numbers.push(dev.trim().to_owned());
        }
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.path().join("partition").exists() {
                pending.push(entry.path());
            }
        }
        for holder in fs::read_dir(dir.join("holders"))
            .into_iter()
            .flatten()
            .flatten()
        {
            pending.push(sys_block.join(holder.file_name()));
        }
    }
    numbers
}

/// One line of /proc/self/mountinfo, as far as the checks need it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    number: String,
    mount_point: String,
    source: String,
}

/// Fields: id, parent, major:minor, root, mount point, options, optional fields, `-`, fs type,
/// source, super options.
fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let separator = 6 + fields.get(6..)?.iter().position(|f| *f == "-")?;
    Some(Mount {
        number: (*fields.get(2)?).to_owned(),
        mount_point: unescape(fields.get(4)?),
        source: unescape(fields.get(separator + 2)?),
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(digits)) => {
                let value = digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `source` is the disk `disk` or one of its partitions by kernel naming: `sdb1` for
/// `sdb`, `mmcblk0p1` for `mmcblk0`, `nvme0n1p1` for `nvme0n1` (a `p` when the name ends in a digit).
fn is_disk_or_partition(disk: &str, source: &str) -> bool {
    let Some(rest) = source.strip_prefix(disk) else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let number = if disk.ends_with(|c: char| c.is_ascii_digit()) {
        rest.strip_prefix('p')
    } else {
        Some(rest)
    };
    number.is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Refuses a block device that holds this host's root filesystem or is smaller than the image
/// (always), or that has anything mounted (unless `force`).
pub fn check_block_target(
    target: &BlockTarget,
    mountinfo: &str,
    image_len: u64,
    force: bool,
) -> anyhow::Result<()> {
    let mounts: Vec<Mount> = mountinfo
        .lines()
        .filter_map(parse_mountinfo_line)
        .filter(|m| {
            is_disk_or_partition(&target.path, &m.source) || target.numbers.contains(&m.number)
        })
        .collect();
    if let Some(root) = mounts.iter().find(|m| m.mount_point == "/") {
        bail!(
            "refusing to flash {}: it holds this host's root filesystem ({} is mounted at /); \
             --force does not override this",
            target.path,
            root.source
        );
    }
    if image_len > target.capacity {
        bail!(
            "refusing to flash {}: the image needs {} but the device holds {}",
            target.path,
            HumanBytes(image_len),
            HumanBytes(target.capacity)
        );
    }
    if !mounts.is_empty() && !force {
        let list: Vec<String> = mounts
            .iter()
            .map(|m| format!("{} at {}", m.source, m.mount_point))
            .collect();
        bail!(
            "refusing to flash {}: it is mounted ({}); unmount it first, or pass --force to \
             write anyway",
            target.path,
            list.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A laptop: root on LVM over nvme0n1p3, /boot on nvme0n1p2, an SD card with a mounted
    /// partition, a USB stick mounted through a by-uuid style name, a path with a space.
    const SAMPLE_MOUNTINFO: &str = "\
22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/mapper/vg-root rw
23 22 0:21 / /proc rw,nosuid shared:5 - proc proc rw
24 22 259:2 / /boot rw,relatime shared:30 - ext4 /dev/nvme0n1p2 rw
25 22 259:1 / /boot/efi rw,relatime shared:31 - vfat /dev/nvme0n1p1 rw
90 22 179:1 / /media/me/boot\\040fs rw,nosuid shared:40 - vfat /dev/mmcblk0p1 rw
91 22 8:17 / /media/me/STICK rw,nosuid shared:41 - vfat /dev/sdb1 rw
";

    fn target(path: &str, numbers: &[&str], capacity: u64) -> BlockTarget {
        BlockTarget {
            path: path.to_owned(),
            name: path.trim_start_matches("/dev/").to_owned(),
            numbers: numbers.iter().map(|n| (*n).to_owned()).collect(),
            capacity,
        }
    }

    const GIB: u64 = 1 << 30;

    #[test]
    fn partition_names() {
        assert!(is_disk_or_partition("/dev/sdb", "/dev/sdb"));
        assert!(is_disk_or_partition("/dev/sdb", "/dev/sdb1"));
        assert!(is_disk_or_partition("/dev/sdb", "/dev/sdb15"));
        assert!(!is_disk_or_partition("/dev/sdb", "/dev/sdba"));
        assert!(!is_disk_or_partition("/dev/sdb", "/dev/sdba1"));
        assert!(!is_disk_or_partition("/dev/sd", "/dev/sdb"));
        assert!(is_disk_or_partition("/dev/mmcblk0", "/dev/mmcblk0p1"));
        assert!(!is_disk_or_partition("/dev/mmcblk0", "/dev/mmcblk01"));
        assert!(!is_disk_or_partition("/dev/mmcblk0", "/dev/mmcblk0boot0"));
        assert!(!is_disk_or_partition("/dev/mmcblk1", "/dev/mmcblk10p1"));
        assert!(is_disk_or_partition("/dev/nvme0n1", "/dev/nvme0n1p1"));
        assert!(!is_disk_or_partition("/dev/nvme0n1", "/dev/nvme0n10"));
        assert!(!is_disk_or_partition("/dev/nvme0n1", "/dev/nvme0n1p"));
    }

    #[test]
    fn mountinfo_lines() {
        let mount = parse_mountinfo_line(SAMPLE_MOUNTINFO.lines().nth(4).unwrap()).unwrap();
        assert_eq!(
            mount,
            Mount {
                number: "179:1".into(),
                mount_point: "/media/me/boot fs".into(),
                source: "/dev/mmcblk0p1".into(),
            }
        );
        // Optional fields vary in number; the source follows the `-` separator.
        let mount =
            parse_mountinfo_line("36 35 98:0 /mnt1 /mnt2 rw - ext3 /dev/root rw,errors=continue")
                .unwrap();
        assert_eq!(
            (mount.number.as_str(), mount.source.as_str()),
            ("98:0", "/dev/root")
        );
        assert_eq!(parse_mountinfo_line("garbage"), None);
        assert_eq!(unescape("a\\134b\\011c\\9"), "a\\b\tc\\9");
    }

    #[test]
    fn an_unmounted_device_that_fits_is_accepted() {
        let sdc = target("/dev/sdc", &["8:32", "8:33"], 32 * GIB);
        check_block_target(&sdc, SAMPLE_MOUNTINFO, 2 * GIB, false).unwrap();
        // The image may fill the device exactly.
        check_block_target(&sdc, SAMPLE_MOUNTINFO, 32 * GIB, false).unwrap();
    }

    #[test]
    fn a_mounted_partition_is_refused_unless_forced() {
        for (path, number, shown) in [
            ("/dev/sdb", "8:16", "/dev/sdb1 at /media/me/STICK"),
            (
                "/dev/mmcblk0",
                "179:0",
                "/dev/mmcblk0p1 at /media/me/boot fs",
            ),
        ] {
            // By name alone, as when sysfs shows nothing.
            for numbers in [vec![], vec![number]] {
                let t = target(path, &numbers, 32 * GIB);
                let err = check_block_target(&t, SAMPLE_MOUNTINFO, GIB, false).unwrap_err();
                let text = err.to_string();
                assert!(
                    text.starts_with(&format!("refusing to flash {path}:")),
                    "{text}"
                );
                assert!(text.contains(shown), "{text}");
                assert!(text.contains("--force"), "{text}");
                check_block_target(&t, SAMPLE_MOUNTINFO, GIB, true).unwrap();
            }
        }
    }

    #[test]
    fn every_mount_is_named() {
        // nvme0n1's own partitions, found by name; its LVM volume is root (next test).
        let nvme = target("/dev/nvme0n1", &[], 512 * GIB);
        let text = check_block_target(&nvme, SAMPLE_MOUNTINFO, GIB, false)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("(/dev/nvme0n1p2 at /boot, /dev/nvme0n1p1 at /boot/efi)"),
            "{text}"
        );
    }

    #[test]
    fn the_root_device_is_refused_even_with_force() {
        // Root is /dev/mapper/vg-root (253:0), a holder of nvme0n1p3: only its number matches.
        let nvme = target(
            "/dev/nvme0n1",
            &["259:0", "259:1", "259:2", "259:3", "253:0"],
            512 * GIB,
        );
        let err = check_block_target(&nvme, SAMPLE_MOUNTINFO, GIB, true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "refusing to flash /dev/nvme0n1: it holds this host's root filesystem \
             (/dev/mapper/vg-root is mounted at /); --force does not override this"
        );
        // A root named /dev/root is found by its number too.
        let mountinfo = "1 0 8:2 / / rw - ext4 /dev/root rw\n";
        let sda = target("/dev/sda", &["8:0", "8:1", "8:2"], 64 * GIB);
        let err = check_block_target(&sda, mountinfo, GIB, true).unwrap_err();
        assert!(
            err.to_string().contains("/dev/root is mounted at /"),
            "{err}"
        );
    }

    #[test]
    fn a_device_smaller_than_the_image_is_refused() {
        let sdc = target("/dev/sdc", &[], 2 * GIB);
        let err = check_block_target(&sdc, SAMPLE_MOUNTINFO, 2 * GIB + 1, true).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("refusing to flash /dev/sdc: the image needs 2.00 GiB"),
            "{err}"
        );
    }

    #[test]
    fn stacked_numbers_follow_partitions_and_holders() {
        let sys = tempfile::tempdir().unwrap();
        let put = |path: &str, text: &str| {
            let path = sys.path().join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        put("nvme0n1/dev", "259:0\n");
        put("nvme0n1/nvme0n1p1/dev", "259:1\n");
        put("nvme0n1/nvme0n1p1/partition", "1\n");
        put("nvme0n1/nvme0n1p2/dev", "259:2\n");
        put("nvme0n1/nvme0n1p2/partition", "2\n");
        put("nvme0n1/nvme0n1p2/holders/dm-0", "");
        put("nvme0n1/queue/dev", "not a partition\n");
        put("dm-0/dev", "253:0\n");
        put("dm-0/holders/dm-1", "");
        put("dm-1/dev", "253:1\n");
        let mut numbers = stacked_numbers(sys.path(), "nvme0n1");
        numbers.sort();
        assert_eq!(numbers, ["253:0", "253:1", "259:0", "259:1", "259:2"]);
        assert!(stacked_numbers(sys.path(), "sdz").is_empty());
    }

    #[test]
    fn compressed_images_are_refused() {
        let err = refuse_compressed(Path::new("talos.raw.xz")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "talos.raw.xz is compressed; decompress first: xz -d talos.raw.xz"
        );
        let err = refuse_compressed(Path::new("a/talos.raw.zst")).unwrap_err();
        assert!(
            err.to_string().ends_with("zstd -d a/talos.raw.zst"),
            "{err}"
        );
        refuse_compressed(Path::new("talos.raw")).unwrap();
    }

    #[test]
    fn flashes_a_disk_file_without_asking() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("image.raw");
        fs::write(&image, vec![0xA5u8; 64 * 1024]).unwrap();
        let device = dir.path().join("disk.raw");
        let args = FlashArgs {
            image: image.clone(),
            device: device.clone(),
            force: false,
            yes: false,
        };
        flash_image(&args).unwrap();
        assert_eq!(fs::read(&device).unwrap(), fs::read(&image).unwrap());

        let onto_itself = FlashArgs {
            device: image.clone(),
            ..args
        };
        let err = flash_image(&onto_itself).unwrap_err();
        assert!(err.to_string().ends_with("is the image itself"), "{err}");
        assert_eq!(fs::read(&image).unwrap().len(), 64 * 1024);
    }
}
