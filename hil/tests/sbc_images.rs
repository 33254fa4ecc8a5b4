//! The images of the boards QEMU cannot boot (ROCK Pi 4, Pine64), as far as they can be checked
//! without the hardware: the boot ROM's bootloader sits at its raw offset, and the EFI partition
//! carries the kernel package's DTBs twice (`dtb/`, which U-Boot loads, and the pristine
//! `dtb-base/` machined applies overlays from) and only the overlays written for the board's
//! SoC, each of which applies to every one of its DTBs.
//!
//! Inputs: `$TALOS_RS_OUT/images/<board>-u-boot/metal-arm64.raw`, built by `cargo xtask test`;
//! the Debian packages and kernel come from the cache `cargo xtask deps` fills.

mod fat;

use std::fs::File;
use std::path::{Path, PathBuf};

use talos_boards::{Board, DebianKernel, Placement, package_file};
use talos_disk::gpt::Table;
use talos_dtb::PRISTINE_DTB_DIR;
use talos_dtb::fdt::Fdt;
use talos_machinery::Arch;

use fat::extract_fat;

fn image(board: &str) -> Option<PathBuf> {
    let required = std::env::var_os("TALOS_RS_E2E_REQUIRED").is_some();
    let Some(out) = std::env::var_os("TALOS_RS_OUT") else {
        assert!(!required, "TALOS_RS_OUT is not set");
        eprintln!("skipped: TALOS_RS_OUT is not set; `cargo xtask test` builds the images");
        return None;
    };
    let image = Path::new(&out)
        .join("images")
        .join(format!("{board}-u-boot"))
        .join("metal-arm64.raw");
    if !image.is_file() {
        assert!(!required, "missing {}", image.display());
        eprintln!("skipped: no {}", image.display());
        return None;
    }
    Some(image)
}

fn check(board_name: &str, own_overlay: &str, node: &str) {
    let Some(image) = image(board_name) else {
        return;
    };
    let board = Board::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../boards")
            .join(board_name)
            .join("board.toml"),
    )
    .expect("the board file loads");
    let bytes = std::fs::read(&image).expect("the image");

    // The boot ROM's bootloader at its raw offsets, and the partitions after it.
    let firmware = board.default_firmware().expect("a boot chain");
    let mut raw_end = 0;
    for artifact in &firmware.artifacts {
        if let Placement::Raw { offset, .. } = artifact.placement {
            let want = std::fs::read(
                package_file(&artifact.package, &artifact.path, Arch::Arm64)
                    .expect("the package file the image was built from"),
            )
            .expect("the bootloader from its package");
            let at = usize::try_from(offset).unwrap();
            assert_eq!(
                &bytes[at..at + want.len()],
                &want[..],
                "{board_name}: {} at {offset}",
                artifact.path
            );
            raw_end = raw_end.max(offset + want.len() as u64);
        }
    }
    assert!(raw_end > 0, "{board_name} has raw bootloader parts");
    let table = Table::read_from(&mut File::open(&image).unwrap()).expect("a GPT");
    let efi = table.find("EFI").expect("an EFI partition");
    assert!(
        efi.offset() >= raw_end,
        "{board_name}: EFI overlaps the bootloader"
    );
    assert_eq!(efi.offset(), board.disk.partition_start_bytes());

    // DTBs: as packaged, in dtb/ and dtb-base/; overlays: only this board's, and they apply.
    let fat = tempfile::tempdir().unwrap();
    extract_fat(&image, efi.offset(), fat.path());
    let dtbs = board.dtb.as_ref().expect("DTBs");
    let kernel = DebianKernel::unpacked(Arch::Arm64).expect("the arm64 kernel the image took");
    let overlays: Vec<String> = std::fs::read_dir(fat.path().join("overlays"))
        .expect("overlays/ on the EFI partition")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(overlays, [format!("{own_overlay}.dtbo")], "{board_name}");
    let overlay =
        Fdt::parse(&std::fs::read(fat.path().join("overlays").join(&overlays[0])).unwrap())
            .expect("the overlay");
    for file in &dtbs.files {
        let packaged = std::fs::read(kernel.dtb_dir().join(file)).expect("the packaged DTB");
        let loaded = std::fs::read(fat.path().join(dtbs.destination(file))).expect("dtb/");
        let pristine =
            std::fs::read(fat.path().join(PRISTINE_DTB_DIR).join(file)).expect("dtb-base/");
        assert!(loaded == packaged && pristine == packaged, "{file}");
        let mut tree = Fdt::parse(&pristine).expect(file);
        assert_eq!(
            tree.node(node).and_then(|n| n.property_str("status")),
            Some("disabled"),
            "{file}"
        );
        tree.apply_overlay(&overlay).expect(file);
        assert_eq!(
            tree.node(node).and_then(|n| n.property_str("status")),
            Some("okay"),
            "{file} + {own_overlay}"
        );
    }
}

#[test]
fn rockpi4_image_has_its_bootloader_dtbs_and_overlays() {
    check("rockpi4", "rockpi4-i2c7-enable", "/i2c@ff160000");
}

#[test]
fn pine64_image_has_its_bootloader_dtbs_and_overlays() {
    check("pine64", "pine64-uart2-enable", "/soc/serial@1c28800");
}
