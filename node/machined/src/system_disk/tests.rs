use std::sync::Arc;

use talos_disk::layout::SystemDisk;
use talos_node_sys::fake::{Call, FakeSystem};
use talos_node_sys::fs::{MountFlags, MountSpec};

use super::*;

const MIB: u64 = 1024 * 1024;
const DISK: u64 = 300 * MIB;

/// The kernel as tests see it: /sys/block and /dev in a temporary directory, each partition
/// a file of its own (as /dev/vda3 is), made when the kernel is told about it.
struct Kernel {
    host: Host,
    disk: PathBuf,
    calls: FakeSystem,
}

impl Kernel {
    fn new(dir: &Path) -> Kernel {
        let host = Host {
            sys_block: dir.join("sys/block"),
            dev: dir.join("dev"),
            mkfs: PathBuf::from("mkfs.ext4"),
        };
        std::fs::create_dir_all(host.sys_block.join("vda")).unwrap();
        std::fs::create_dir_all(&host.dev).unwrap();
        let disk = host.dev.join("vda");
        Kernel {
            host,
            disk,
            calls: FakeSystem::default(),
        }
    }

    /// What Linux shows for partition `number` at boot.
    fn show(&self, number: u32, start: u64, len: u64) {
        let name = format!("vda{number}");
        let sys = self.host.sys_block.join("vda").join(&name);
        std::fs::create_dir_all(&sys).unwrap();
        std::fs::write(sys.join("start"), format!("{}\n", start / SECTOR)).unwrap();
        File::create(self.host.dev.join(&name))
            .unwrap()
            .set_len(len)
            .unwrap();
    }

    /// Boots: Linux reads the table on the disk.
    fn boot(&self) {
        let table = Table::read_from(&mut File::open(&self.disk).unwrap()).unwrap();
        for (i, p) in table.partitions.iter().enumerate() {
            if self.host.partition("vda", p.first_lba).is_none() {
                self.show(i as u32 + 1, p.offset(), p.len());
            }
        }
    }

    fn device(&self, number: u32) -> PathBuf {
        self.host.dev.join(format!("vda{number}"))
    }

    fn with_mkfs(&self, mkfs: &str) -> Host {
        Host {
            mkfs: PathBuf::from(mkfs),
            ..self.host.clone()
        }
    }
}

impl Partitions for Kernel {
    fn add_partition(
        &self,
        disk: &Path,
        number: u32,
        start: u64,
        len: u64,
    ) -> Result<(), SysError> {
        self.calls.add_partition(disk, number, start, len)?;
        self.show(number, start, len);
        Ok(())
    }
}

/// A 300 MiB disk holding an image with EFI and META only, as flashed; booted.
fn flashed(dir: &Path) -> Kernel {
    let kernel = Kernel::new(dir);
    let image = SystemDisk::new("talos-image-disk", MIB, 8 * MIB);
    let mut f = File::create(&kernel.disk).unwrap();
    f.set_len(image.size()).unwrap();
    image.table.write_to(&mut f).unwrap();
    f.set_len(DISK).unwrap();
    kernel.boot();
    kernel
}

/// The ext4 UUID of `device`: changes with every format.
fn uuid(device: &Path) -> [u8; 16] {
    let bytes = std::fs::read(device).unwrap();
    let at = (crate::storage::EXT4_SUPERBLOCK + 0x68) as usize;
    bytes[at..at + 16].try_into().unwrap()
}

fn require_mkfs() {
    assert!(
        Command::new("mkfs.ext4").arg("-V").output().is_ok(),
        "mkfs.ext4 (e2fsprogs) is needed for these tests"
    );
}

/// Collects the children the tests start (and only those).
fn reaper() -> Arc<Reaper> {
    let reaper = Arc::new(Reaper::new(false));
    tokio::spawn(reaper.clone().run());
    reaper
}

#[tokio::test]
async fn first_boot_adds_and_formats_state_and_ephemeral_and_the_next_boot_keeps_them() {
    let reaper = reaper();
    require_mkfs();
    let dir = tempfile::tempdir().unwrap();
    let kernel = flashed(dir.path());
    let ephemeral = prepare(&kernel.host, &kernel, &reaper, &kernel.disk)
        .await
        .unwrap();
    assert_eq!(ephemeral, Some(kernel.device(4)));

    let table = Table::read_from(&mut File::open(&kernel.disk).unwrap()).unwrap();
    assert_eq!(table.total_sectors, DISK / SECTOR);
    let state = table.find(layout::STATE).unwrap();
    let eph = table.find(layout::EPHEMERAL).unwrap();
    assert_eq!(state.len(), layout::STATE_SIZE);
    assert_eq!(eph.offset() + eph.len(), DISK - MIB);
    assert_eq!(
        kernel.calls.calls(),
        [
            Call::AddPartition {
                disk: kernel.disk.clone(),
                number: 3,
                start: state.offset(),
                len: state.len(),
            },
            Call::AddPartition {
                disk: kernel.disk.clone(),
                number: 4,
                start: eph.offset(),
                len: eph.len(),
            },
        ]
    );
    assert_eq!(
        crate::storage::read_label(&kernel.device(3)).as_deref(),
        Some("STATE")
    );
    assert_eq!(
        crate::storage::read_label(&kernel.device(4)).as_deref(),
        Some("EPHEMERAL")
    );

    // The next boot: nothing to add, and a mkfs that always fails is never run.
    let before = (uuid(&kernel.device(3)), uuid(&kernel.device(4)));
    let table_bytes = std::fs::read(&kernel.disk).unwrap();
    let again = prepare(&kernel.with_mkfs("false"), &kernel, &reaper, &kernel.disk)
        .await
        .unwrap();
    assert_eq!(again, Some(kernel.device(4)));
    assert_eq!(kernel.calls.calls().len(), 2);
    assert_eq!(std::fs::read(&kernel.disk).unwrap(), table_bytes);
    assert_eq!((uuid(&kernel.device(3)), uuid(&kernel.device(4))), before);
}

#[tokio::test]
async fn a_power_cut_after_the_table_was_written_is_finished_on_the_next_boot() {
    let reaper = reaper();
    require_mkfs();
    let dir = tempfile::tempdir().unwrap();
    let kernel = flashed(dir.path());
    // The GPT was written, then the power went: the next boot's kernel reads it.
    let mut f = File::options()
        .read(true)
        .write(true)
        .open(&kernel.disk)
        .unwrap();
    let table = Table::read_from(&mut f).unwrap();
    let done = layout::complete(&table, DISK / SECTOR).unwrap();
    done.write_to(&mut f).unwrap();
    drop(f);
    kernel.boot();
    // STATE was formatted, EPHEMERAL not yet.
    kernel
        .host
        .format(&reaper, "STATE", &kernel.device(3))
        .await
        .unwrap();
    let state = uuid(&kernel.device(3));

    assert_eq!(
        prepare(&kernel.host, &kernel, &reaper, &kernel.disk)
            .await
            .unwrap(),
        Some(kernel.device(4))
    );
    assert_eq!(kernel.calls.calls(), [], "the kernel knew both partitions");
    assert_eq!(
        uuid(&kernel.device(3)),
        state,
        "STATE was not formatted again"
    );
    assert_eq!(
        crate::storage::read_label(&kernel.device(4)).as_deref(),
        Some("EPHEMERAL")
    );
}

#[tokio::test]
async fn a_partition_with_another_filesystem_label_is_formatted() {
    let reaper = reaper();
    require_mkfs();
    let dir = tempfile::tempdir().unwrap();
    let kernel = flashed(dir.path());
    prepare(&kernel.host, &kernel, &reaper, &kernel.disk)
        .await
        .unwrap();
    Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "OTHER"])
        .arg(kernel.device(4))
        .status()
        .unwrap();
    prepare(&kernel.host, &kernel, &reaper, &kernel.disk)
        .await
        .unwrap();
    assert_eq!(
        crate::storage::read_label(&kernel.device(4)).as_deref(),
        Some("EPHEMERAL")
    );
}

#[tokio::test]
async fn an_image_on_a_disk_without_room_for_state_is_left_alone() {
    let reaper = reaper();
    let dir = tempfile::tempdir().unwrap();
    let kernel = Kernel::new(dir.path());
    let image = SystemDisk::new("talos-image-disk", MIB, 8 * MIB);
    let mut f = File::create(&kernel.disk).unwrap();
    f.set_len(image.size()).unwrap();
    image.table.write_to(&mut f).unwrap();
    kernel.boot();
    let bytes = std::fs::read(&kernel.disk).unwrap();
    let err = prepare(&kernel.with_mkfs("false"), &kernel, &reaper, &kernel.disk)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the system disk {}: no room for the 104857600-byte STATE partition after the last partition",
            kernel.disk.display()
        )
    );
    assert_eq!(std::fs::read(&kernel.disk).unwrap(), bytes);
    assert_eq!(kernel.calls.calls(), []);
}

#[tokio::test]
async fn a_failing_mkfs_names_the_device() {
    let reaper = reaper();
    let dir = tempfile::tempdir().unwrap();
    let kernel = flashed(dir.path());
    // sh refuses mke2fs's first option: a failure with a message on stderr.
    let err = prepare(&kernel.with_mkfs("sh"), &kernel, &reaper, &kernel.disk)
        .await
        .unwrap_err()
        .to_string();
    let device = kernel.device(3).display().to_string();
    let prefix = format!("formatting STATE on {device}: sh exit status: 2: sh: ");
    assert!(err.starts_with(&prefix) && err.contains("-q"), "{err}");
    let missing = kernel.with_mkfs("/nonexistent/mkfs.ext4");
    let err = prepare(&missing, &kernel, &reaper, &kernel.disk)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("running /nonexistent/mkfs.ext4: No such file"),
        "{err}"
    );
}

#[tokio::test]
async fn reset_wipes_ephemeral_and_the_next_boot_formats_it_afresh() {
    let reaper = reaper();
    require_mkfs();
    let dir = tempfile::tempdir().unwrap();
    let kernel = flashed(dir.path());
    prepare(&kernel.host, &kernel, &reaper, &kernel.disk)
        .await
        .unwrap();
    let (state, ephemeral) = (uuid(&kernel.device(3)), uuid(&kernel.device(4)));

    let mounter = FakeSystem::default();
    let wiped = wipe_ephemeral(&mounter, &kernel.host, &kernel.disk).unwrap();
    assert_eq!(wiped, Some(kernel.device(4)));
    assert_eq!(
        mounter.calls(),
        [Call::Unmount(PathBuf::from(EPHEMERAL_MOUNT))]
    );
    assert_eq!(crate::storage::read_label(&kernel.device(4)), None);

    prepare(&kernel.host, &kernel, &reaper, &kernel.disk)
        .await
        .unwrap();
    assert_eq!(
        crate::storage::read_label(&kernel.device(4)).as_deref(),
        Some("EPHEMERAL")
    );
    assert_ne!(uuid(&kernel.device(4)), ephemeral, "a new filesystem");
    assert_eq!(uuid(&kernel.device(3)), state, "STATE is not touched");
}

#[test]
fn a_disk_without_ephemeral_has_nothing_to_wipe() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = flashed(dir.path());
    let mounter = FakeSystem::default();
    assert_eq!(
        wipe_ephemeral(&mounter, &kernel.host, &kernel.disk).unwrap(),
        None
    );
    assert_eq!(mounter.calls(), []);
}

#[test]
fn ephemeral_mounts_at_var_without_devices_or_setuid() {
    let fake = FakeSystem::default();
    // /var exists on the test host as it does in the initramfs.
    mount_ephemeral(&fake, Path::new("/dev/vda4")).unwrap();
    assert_eq!(
        fake.calls(),
        [Call::Mount(MountSpec {
            source: "/dev/vda4".into(),
            target: PathBuf::from("/var"),
            fstype: "ext4".into(),
            flags: MountFlags {
                nosuid: true,
                nodev: true,
                noexec: false,
                relatime: true,
            },
            data: String::new(),
        })]
    );
}
