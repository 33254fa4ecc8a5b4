//! Boot chains, the artifacts they need from Debian packages, where those land, and the raw
//! region of the disk in front of the first partition.

use serde::Deserialize;

/// Bytes per logical block on the disks we write.
pub const SECTOR_BYTES: u64 = 512;

/// One way of booting the board (a "variant"): the first in a board's list is the default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Firmware {
    /// Unique within the board, e.g. `u-boot`, `uefi`.
    pub name: String,
    pub kind: BootKind,
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
}

impl Firmware {
    /// The file QEMU loads with `-bios` for this boot chain, if it has one.
    pub fn qemu_bios(&self) -> Option<&str> {
        self.artifacts
            .iter()
            .find(|a| a.placement == Placement::QemuBios)
            .map(|a| a.path.as_str())
    }
}

/// What loads the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootKind {
    /// Das U-Boot, from ROM, the Pi's VideoCore firmware or QEMU's `-bios`.
    UBoot,
    /// A UEFI firmware: the machine's own, QEMU_EFI.fd or OVMF.
    Uefi,
}

/// A file taken from a Debian package and put somewhere.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "ArtifactSpec")]
#[non_exhaustive]
pub struct Artifact {
    /// Debian binary package, e.g. `u-boot-rockchip`.
    pub package: String,
    /// Absolute path inside the package, e.g. `/usr/lib/u-boot/rpi_arm64/u-boot.bin`.
    pub path: String,
    pub placement: Placement,
}

/// Where an artifact goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Written raw into the disk at `offset` bytes; the file must fit in `max_bytes`.
    Raw { offset: u64, max_bytes: u64 },
    /// Copied into the FAT boot partition at `dest` (relative, `/`-separated).
    BootFile { dest: String },
    /// Not part of the image: QEMU loads it with `-bios`.
    QemuBios,
}

/// The TOML shape of an artifact, checked into [`Artifact`] while parsing.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ArtifactSpec {
    package: String,
    path: String,
    install: InstallKind,
    offset: Option<u64>,
    max_bytes: Option<u64>,
    dest: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum InstallKind {
    Raw,
    BootFile,
    QemuBios,
}

impl TryFrom<ArtifactSpec> for Artifact {
    type Error = String;

    fn try_from(spec: ArtifactSpec) -> Result<Self, Self::Error> {
        let what = format!("artifact {:?}", spec.path);
        let placement = match spec.install {
            InstallKind::Raw => match (spec.offset, spec.max_bytes, &spec.dest) {
                (Some(offset), Some(max_bytes), None) => Placement::Raw { offset, max_bytes },
                _ => {
                    return Err(format!(
                        "{what}: install = \"raw\" needs `offset` and `max_bytes` and no `dest`"
                    ));
                }
            },
            InstallKind::BootFile => match (spec.offset, spec.max_bytes, spec.dest) {
                (None, None, Some(dest)) => Placement::BootFile { dest },
                _ => {
                    return Err(format!(
                        "{what}: install = \"boot-file\" needs `dest` and no `offset` or `max_bytes`"
                    ));
                }
            },
            InstallKind::QemuBios => {
                if spec.offset.is_some() || spec.max_bytes.is_some() || spec.dest.is_some() {
                    return Err(format!(
                        "{what}: install = \"qemu-bios\" takes no `offset`, `max_bytes` or `dest`"
                    ));
                }
                Placement::QemuBios
            }
        };
        Ok(Artifact {
            package: spec.package,
            path: spec.path,
            placement,
        })
    }
}

/// The raw area before the first partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct DiskLayout {
    /// First LBA of the first partition (upstream's `PartitionOptions.Offset` when above 2048).
    pub partition_start_lba: u64,
    /// Entries in the GPT partition array (128 bytes each, from LBA 2).
    pub gpt_entries: u32,
    /// Sector 0 is a hybrid MBR: a FAT32 (LBA) entry for the EFI partition besides the
    /// GPT's protective entry, for boot ROMs that read only MBR (the Raspberry Pi 3's).
    pub hybrid_mbr: bool,
}

impl Default for DiskLayout {
    fn default() -> Self {
        DiskLayout {
            partition_start_lba: 2048,
            gpt_entries: 128,
            hybrid_mbr: false,
        }
    }
}

impl DiskLayout {
    /// First byte of the first partition.
    pub fn partition_start_bytes(&self) -> u64 {
        self.partition_start_lba * SECTOR_BYTES
    }

    /// First byte after the primary GPT: protective MBR, header, then the entry array.
    pub fn gpt_end_bytes(&self) -> u64 {
        2 * SECTOR_BYTES + u64::from(self.gpt_entries) * 128
    }
}

/// Device trees the board's firmware or bootloader hands to the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Dtbs {
    pub source: DtbSource,
    pub layout: DtbLayout,
    /// Paths relative to the source's DTB directory, e.g. `broadcom/bcm2711-rpi-4-b.dtb`.
    pub files: Vec<String>,
}

/// Where DTB files come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DtbSource {
    /// Debian's `linux-image-<release>` package, under `/usr/lib/linux-image-<release>/`.
    LinuxImage,
}

/// How DTB files are laid out on the boot partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DtbLayout {
    /// At the partition root by file name, where the Raspberry Pi firmware looks.
    FirmwareRoot,
    /// Under `dtb/<vendor>/`, where U-Boot's EFI loader looks.
    EfiDtbDir,
}

impl Dtbs {
    /// Where `file` (one of `files`) goes on the boot partition.
    pub fn destination(&self, file: &str) -> String {
        match self.layout {
            DtbLayout::FirmwareRoot => file.rsplit('/').next().unwrap_or(file).to_owned(),
            DtbLayout::EfiDtbDir => format!("dtb/{file}"),
        }
    }
}
