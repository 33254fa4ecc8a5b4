//! Raw GPT disk images: EFI (FAT, both boot chains, slot A filled) and META (empty Talos ADV).
//! The node adds STATE and EPHEMERAL on first boot. Built in a sparse file without root or
//! loop devices.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use talos_disk::adv::Meta;
use talos_disk::gpt::{GptError, Guid};
use talos_disk::layout::{self, SystemDisk};
use talos_disk::slots::{self, AbEnv, EntryName, Slot, SlotBoot};
use talos_disk::uimage::{self, UbootArch};

const MIB: u64 = 1024 * 1024;
/// The EFI partition holds both slots and room for a larger upgrade.
const EFI_MIN: u64 = 100 * MIB;
const EFI_HEADROOM: u64 = 16 * MIB;

/// A bootable system: what slot A of a fresh image holds.
#[derive(Debug, Clone)]
pub struct SlotContents {
    pub kernel: Vec<u8>,
    pub initramfs: Vec<u8>,
    /// A device tree copied into the slot directory, `(file name, bytes)`.
    pub devicetree: Option<(String, Vec<u8>)>,
    pub boot: SlotBoot,
}

#[derive(Debug, Clone)]
pub struct DiskImageSpec {
    /// Seeds the disk and partition GUIDs and the FAT volume id.
    pub seed: String,
    pub uboot_arch: UbootArch,
    /// Bytes before the first partition (raw bootloaders live there).
    pub first_offset: u64,
    pub system: SlotContents,
    /// Files at fixed paths on the EFI partition: systemd-boot, Pi firmware, config.txt.
    pub boot_files: Vec<(String, Vec<u8>)>,
    /// Bootloaders written raw at a byte offset in front of the first partition.
    pub raw: Vec<(u64, Vec<u8>)>,
    /// A hybrid MBR with a FAT32 entry for the EFI partition, which is then FAT32, for boot
    /// ROMs that read only MBR (the Raspberry Pi 3's).
    pub hybrid_mbr: bool,
    /// Entries in the GPT partition array (the board's `gpt_entries`).
    pub gpt_entries: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum DiskImageError {
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing {path} on the EFI partition")]
    Fat {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Gpt(#[from] GptError),
    #[error(
        "raw bootloader at byte {offset} ({len} bytes) must lie between the GPT (ends at {gpt_end}) and the first partition ({first_partition})"
    )]
    RawOverlap {
        offset: u64,
        len: u64,
        gpt_end: u64,
        first_partition: u64,
    },
    #[error(transparent)]
    Meta(#[from] talos_disk::adv::AdvError),
}

/// What was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskImageReport {
    pub size: u64,
    pub efi_size: u64,
}

/// A window of a file, so the FAT writer sees a partition as a whole disk.
struct Window<'a> {
    file: &'a mut File,
    start: u64,
    len: u64,
    pos: u64,
}

impl Read for Window<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min((self.len.saturating_sub(self.pos)) as usize);
        self.file.seek(SeekFrom::Start(self.start + self.pos))?;
        let n = self.file.read(&mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Window<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pos + buf.len() as u64 > self.len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        self.file.seek(SeekFrom::Start(self.start + self.pos))?;
        let n = self.file.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for Window<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.filter(|p| *p <= self.len).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "seek outside the partition")
        })?;
        Ok(self.pos)
    }
}

fn efi_size(spec: &DiskImageSpec) -> u64 {
    let slot = (spec.system.kernel.len()
        + spec.system.initramfs.len()
        + spec.system.devicetree.as_ref().map_or(0, |(_, d)| d.len())) as u64;
    let fixed: u64 = spec.boot_files.iter().map(|(_, d)| d.len() as u64).sum();
    // Room for two slots, each up to 25% larger than today's.
    (slot * 5 / 2 + fixed + EFI_HEADROOM)
        .max(EFI_MIN)
        .div_ceil(8 * MIB)
        * 8
        * MIB
}

/// The files of the EFI partition, as `(path, contents)`.
pub fn efi_files(spec: &DiskImageSpec) -> Vec<(String, Vec<u8>)> {
    let system = &spec.system;
    let mut files = spec.boot_files.clone();
    let entry = EntryName {
        generation: 1,
        slot: Slot::A,
        tries: None,
    };
    files.push((slots::LOADER_CONF.into(), slots::loader_conf().into()));
    files.push((entry.path(), system.boot.entry(Slot::A).into_bytes()));
    let ab = AbEnv {
        active: Slot::A,
        trial: None,
    };
    files.push((slots::AB_ENV.into(), ab.render().into_bytes()));
    files.push((
        slots::BOOT_SCRIPT.into(),
        uimage::script_image(slots::boot_script(), spec.uboot_arch, "talos A/B"),
    ));
    let dtb_name = system.devicetree.as_ref().map(|(name, _)| name.as_str());
    files.push((
        Slot::A.file(slots::SLOT_ENV),
        slots::slot_env(&system.boot.cmdline, dtb_name).into_bytes(),
    ));
    files.push((Slot::A.file(slots::KERNEL), system.kernel.clone()));
    files.push((Slot::A.file(slots::INITRAMFS), system.initramfs.clone()));
    if let Some((name, dtb)) = &system.devicetree {
        files.push((Slot::A.file(name), dtb.clone()));
    }
    files
}

fn write_fat(
    window: Window<'_>,
    volume_id: u32,
    fat32: bool,
    files: &[(String, Vec<u8>)],
    progress: &mut dyn FnMut(u64),
) -> Result<(), DiskImageError> {
    let fat_err = |path: &str| {
        let path = path.to_owned();
        move |source| DiskImageError::Fat { path, source }
    };
    let mut window = window;
    let mut options = fatfs::FormatVolumeOptions::new()
        .volume_id(volume_id)
        .volume_label(*b"EFI        ");
    // fatfs picks FAT16 below 512 MiB; an MBR entry of type 0x0C promises FAT32.
    if fat32 {
        options = options.fat_type(fatfs::FatType::Fat32);
    }
    fatfs::format_volume(&mut window, options).map_err(fat_err("/"))?;
    let fs = fatfs::FileSystem::new(window, fatfs::FsOptions::new()).map_err(fat_err("/"))?;
    let root = fs.root_dir();
    for (path, contents) in files {
        let mut dir = root.clone();
        let mut parts: Vec<&str> = path.split('/').collect();
        let name = parts.pop().unwrap_or_default();
        for part in parts {
            dir = match dir.open_dir(part) {
                Ok(d) => d,
                Err(_) => dir.create_dir(part).map_err(fat_err(path))?,
            };
        }
        let mut file = dir.create_file(name).map_err(fat_err(path))?;
        file.truncate().map_err(fat_err(path))?;
        for chunk in contents.chunks(MIB as usize) {
            file.write_all(chunk).map_err(fat_err(path))?;
            progress(chunk.len() as u64);
        }
    }
    drop(root);
    fs.unmount().map_err(fat_err("/"))?;
    Ok(())
}

/// Builds the image at `out`. `progress(done, total)` counts bytes written to the EFI
/// partition, the bulk of the work.
pub fn build(
    spec: &DiskImageSpec,
    out: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<DiskImageReport, DiskImageError> {
    let io_err = |action: &'static str| {
        let path = out.to_owned();
        move |source| DiskImageError::Io {
            action,
            path,
            source,
        }
    };
    let efi_size = efi_size(spec);
    let disk =
        SystemDisk::new(&spec.seed, spec.first_offset, efi_size).with_gpt_entries(spec.gpt_entries);
    let efi = disk.partition(layout::EFI).clone();
    let gpt_end = disk.table.first_usable_lba() * 512;
    for (offset, data) in &spec.raw {
        let len = data.len() as u64;
        if *offset < gpt_end || offset + len > efi.offset() {
            return Err(DiskImageError::RawOverlap {
                offset: *offset,
                len,
                gpt_end,
                first_partition: efi.offset(),
            });
        }
    }

    let _ = std::fs::remove_file(out);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(io_err("creating"))?;
    file.set_len(disk.size()).map_err(io_err("sizing"))?;
    if spec.hybrid_mbr {
        disk.table.write_hybrid_to(&mut file, layout::EFI)?;
    } else {
        disk.table.write_to(&mut file)?;
    }
    for (offset, data) in &spec.raw {
        file.seek(SeekFrom::Start(*offset))
            .map_err(io_err("seeking in"))?;
        file.write_all(data)
            .map_err(io_err("writing a bootloader into"))?;
    }

    let files = efi_files(spec);
    let total: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();
    let mut done = 0;
    let volume_id = u32::from_be_bytes(
        Guid::derived(&format!("{}/EFI/fs", spec.seed)).0[..4]
            .try_into()
            .unwrap_or_default(),
    );
    let window = Window {
        file: &mut file,
        start: efi.offset(),
        len: efi.len(),
        pos: 0,
    };
    write_fat(window, volume_id, spec.hybrid_mbr, &files, &mut |n| {
        done += n;
        progress(done, total);
    })?;

    let meta = disk.partition(layout::META);
    file.seek(SeekFrom::Start(meta.offset()))
        .map_err(io_err("seeking in"))?;
    file.write_all(&Meta::default().encode()?)
        .map_err(io_err("writing META into"))?;
    file.sync_all().map_err(io_err("syncing"))?;
    Ok(DiskImageReport {
        size: disk.size(),
        efi_size,
    })
}

#[cfg(test)]
mod tests;
