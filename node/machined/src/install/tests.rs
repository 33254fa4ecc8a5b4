use talos_node_sys::fake::{Call, FakeSystem};

use super::*;

const MIB: u64 = 1024 * 1024;

/// A system disk as the image builder makes it, with its partitions as separate files
/// (as /dev/vda1 and /dev/vda3 are).
fn system_disk(dir: &Path) -> (boot::SystemDisk, LiveState) {
    let layout = SystemDisk::new("image", MIB, 8 * MIB);
    let disk = dir.join("vda");
    let mut f = File::create(&disk).unwrap();
    f.set_len(layout.size()).unwrap();
    layout.table.write_to(&mut f).unwrap();
    f.seek(SeekFrom::Start(32 * 1024)).unwrap();
    f.write_all(b"idbloader").unwrap();
    let efi = dir.join("vda1");
    std::fs::write(&efi, vec![0xef; (8 * MIB) as usize]).unwrap();
    let state = dir.join("vda3");
    std::fs::write(&state, vec![0x5a; layout::STATE_SIZE as usize]).unwrap();
    (
        boot::SystemDisk {
            disk,
            efi,
            meta: dir.join("vda2"),
        },
        LiveState {
            device: state,
            mount_point: dir.join("state"),
        },
    )
}

fn blank(dir: &Path, size: u64) -> PathBuf {
    let path = dir.join("vdb");
    File::create(&path).unwrap().set_len(size).unwrap();
    path
}

#[test]
fn copies_the_layout_efi_and_a_frozen_state() {
    let dir = tempfile::tempdir().unwrap();
    let (system, state) = system_disk(dir.path());
    let target = blank(dir.path(), 512 * MIB);
    let fake = FakeSystem::default();
    let outcome = install(&fake, &system, &target, Some(&state), "installed").unwrap();
    assert_eq!(outcome, Outcome::Installed);

    let mut out = File::open(&target).unwrap();
    let table = Table::read_from(&mut out).unwrap();
    assert_eq!(
        table.total_sectors * 512,
        512 * MIB,
        "the table spans the target disk"
    );
    let bytes = std::fs::read(&target).unwrap();
    assert_eq!(
        &bytes[32 * 1024..32 * 1024 + 9],
        b"idbloader",
        "raw bootloaders come along"
    );
    let efi = table.find(layout::EFI).unwrap();
    assert!(
        bytes[efi.offset() as usize..][..efi.len() as usize]
            .iter()
            .all(|b| *b == 0xef)
    );
    let st = table.find(layout::STATE).unwrap();
    assert!(
        bytes[st.offset() as usize..][..st.len() as usize]
            .iter()
            .all(|b| *b == 0x5a)
    );
    let meta = table.find(layout::META).unwrap();
    let area = &bytes[meta.offset() as usize..][..talos_disk::adv::AREA_SIZE];
    assert_eq!(Meta::decode(area).unwrap(), Meta::default());
    assert_eq!(
        *fake.calls.lock().unwrap(),
        [
            Call::Freeze(state.mount_point.clone()),
            Call::Thaw(state.mount_point.clone())
        ]
    );

    // A second install leaves the system alone.
    let again = install(&fake, &system, &target, Some(&state), "installed").unwrap();
    assert_eq!(again, Outcome::AlreadyInstalled);
}

#[test]
fn the_boot_disk_itself_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let (system, state) = system_disk(dir.path());
    let outcome = install(
        &FakeSystem::default(),
        &system,
        &system.disk.clone(),
        Some(&state),
        "x",
    );
    assert_eq!(outcome.unwrap(), Outcome::RunningFromIt);
}

#[test]
fn a_small_disk_is_refused_with_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let (system, _) = system_disk(dir.path());
    let target = blank(dir.path(), 64 * MIB);
    let err = install(&FakeSystem::default(), &system, &target, None, "x").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "machine.install.disk {} holds 67108864 bytes; the system needs at least 116391936",
            target.display()
        )
    );
}

#[test]
fn ephemeral_is_not_copied_the_installed_disk_makes_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (system, state) = system_disk(dir.path());
    // The boot disk after its first boot: EPHEMERAL on the rest of it.
    let mut boot_disk = File::options()
        .read(true)
        .write(true)
        .open(&system.disk)
        .unwrap();
    boot_disk.set_len(512 * MIB).unwrap();
    let grown = layout::complete(
        &Table::read_from(&mut boot_disk).unwrap(),
        512 * MIB / SECTOR,
    )
    .unwrap();
    assert!(grown.find(layout::EPHEMERAL).is_some());
    grown.write_to(&mut boot_disk).unwrap();

    let target = blank(dir.path(), 256 * MIB);
    install(&FakeSystem::default(), &system, &target, Some(&state), "x").unwrap();
    let table = Table::read_from(&mut File::open(&target).unwrap()).unwrap();
    let names: Vec<&str> = table.partitions.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, [layout::EFI, layout::META, layout::STATE]);
    // Its own first boot adds an EPHEMERAL as large as the target allows.
    let first_boot = layout::complete(&table, table.total_sectors).unwrap();
    let ephemeral = first_boot.find(layout::EPHEMERAL).unwrap();
    assert_eq!(ephemeral.offset() + ephemeral.len(), 255 * MIB);
}
