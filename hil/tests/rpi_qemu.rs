//! The rpi_generic SD-card image that `cargo xtask test` builds: its boot partition as the
//! Raspberry Pi firmware expects it, and a boot on QEMU's raspi3b up to the maintenance API.
//!
//! QEMU cannot run the VideoCore firmware, so the boot test does its part from the card: it
//! finds the FAT partition through the MBR as the Pi 3's boot ROM does, reads config.txt,
//! applies its `dtoverlay=` overlays to the Pi 3 B device tree with fdtoverlay, and starts its
//! `kernel=` file (U-Boot) with that tree. U-Boot runs our boot.scr from the card from there.
//!
//! The boot test then changes the overlays through the machine config (a `BoardConfig`
//! document): the node rewrites config.txt on the card, and the next boot's device tree has
//! the new overlay, with no new image.
//!
//! Input: `$TALOS_RS_OUT/images/rpi_generic-u-boot/metal-arm64.raw`. Needs mtools and
//! fdtoverlay (`cargo xtask deps`).

mod common;
mod fat;

use common::Node;
use fat::extract_fat;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use talos_boards::Board;
use talos_client::{Client, Endpoint, TlsMode};
use talos_hil::BootSource;
use talos_machinery::config::{GenerateInput, generate};
use talos_machinery::secrets::SecretsBundle;
use talos_proto::machine::apply_configuration_request::Mode as ApplyMode;

const BOARD: &str = "rpi_generic";
const SECTOR: u64 = 512;
/// U-Boot reads the 33 MB kernel from the emulated SD card at about 2 MiB/s.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// Not among the board's defaults; it adds a GPIO hog node with this `line-name`.
const EXTRA_OVERLAY: &str = "gpio-line-enable";
const HOG_LINE_NAME: &str =
    "/sys/firmware/devicetree/base/soc/gpio@7e200000/talos-enable-hog/line-name";

struct Card {
    board: Board,
    image: PathBuf,
}

fn card() -> Option<Card> {
    let required = std::env::var_os("TALOS_RS_E2E_REQUIRED").is_some();
    let Some(out) = std::env::var_os("TALOS_RS_OUT") else {
        assert!(!required, "TALOS_RS_OUT is not set");
        eprintln!("skipped: TALOS_RS_OUT is not set; `cargo xtask test` builds the SD image");
        return None;
    };
    let board = talos_boards::find(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards"),
        BOARD,
    )
    .expect("the board file loads");
    let image = PathBuf::from(out)
        .join("images")
        .join(format!("{BOARD}-u-boot"))
        .join("metal-arm64.raw");
    if !image.is_file() {
        assert!(!required, "missing {}", image.display());
        eprintln!("skipped: no {}", image.display());
        return None;
    }
    Some(Card { board, image })
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"))
}

/// The FAT partition's byte offset and length, from MBR entry 1 as the Pi 3's boot ROM reads
/// it; the entry must be FAT32 (LBA).
fn mbr_fat_partition(sector0: &[u8]) -> (u64, u64) {
    assert_eq!(sector0[510..512], [0x55, 0xAA], "no MBR signature");
    let entry = &sector0[446..462];
    assert_eq!(entry[4], 0x0C, "MBR entry 1 is not FAT32 (LBA)");
    (
        u64::from(u32_at(entry, 8)) * SECTOR,
        u64::from(u32_at(entry, 12)) * SECTOR,
    )
}

/// config.txt's `key=value` lines, in order.
fn config_txt(fat: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(fat.join("config.txt")).expect("config.txt on the card");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn values<'a>(config: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    config
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[test]
fn rpi_sd_image_has_the_pi_firmware_layout() {
    let Some(card) = card() else { return };
    let bytes = std::fs::read(&card.image).expect("read the image");

    // A hybrid MBR: FAT32 over the GPT's EFI partition, then the GPT's 0xEE entry.
    let (offset, len) = mbr_fat_partition(&bytes);
    let efi = &bytes[2 * SECTOR as usize..][..128];
    assert_eq!(
        (u64_at(efi, 32) * SECTOR, (u64_at(efi, 40) + 1) * SECTOR),
        (offset, offset + len),
        "the MBR's FAT entry and the GPT's first partition differ"
    );
    let protective = &bytes[462..478];
    assert_eq!((protective[4], u32_at(protective, 8)), (0xEE, 1));
    assert_eq!(
        &bytes[offset as usize + 82..][..8],
        b"FAT32   ",
        "the EFI partition is not FAT32"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let fat = dir.path().join("fat");
    extract_fat(&card.image, offset, &fat);
    let mut wanted: Vec<String> = [
        "bootcode.bin",
        "start.elf",
        "fixup.dat",
        "start4.elf",
        "fixup4.dat",
        "u-boot.bin",
        "boot.scr",
    ]
    .map(str::to_owned)
    .to_vec();
    let dtbs = card.board.dtb.as_ref().expect("the board ships DTBs");
    wanted.extend(dtbs.files.iter().map(|f| file_name(f).to_owned()));
    wanted.extend(
        card.board
            .overlays
            .iter()
            .map(|o| format!("overlays/{o}.dtbo")),
    );
    for file in &wanted {
        let size = std::fs::metadata(fat.join(file)).map_or(0, |m| m.len());
        assert!(size > 0, "{file} is missing or empty on the EFI partition");
    }
    assert!(
        dtbs.files
            .iter()
            .all(|f| file_name(f).starts_with("bcm27") || file_name(f).starts_with("bcm28")),
        "{:?}",
        dtbs.files
    );

    let text = std::fs::read_to_string(fat.join("config.txt")).expect("config.txt");
    assert_eq!(
        Some(text),
        card.board.config_txt(),
        "config.txt differs from the board's"
    );
    let config = config_txt(&fat);
    for (key, value) in [
        ("kernel", "u-boot.bin"),
        ("arm_64bit", "1"),
        ("enable_uart", "1"),
        ("upstream_kernel", "1"),
    ] {
        assert_eq!(values(&config, key), [value], "config.txt {key}");
    }
    for overlay in values(&config, "dtoverlay") {
        assert!(
            fat.join("overlays")
                .join(format!("{overlay}.dtbo"))
                .is_file(),
            "config.txt names overlay {overlay}, which the card lacks"
        );
    }
}

/// What the VideoCore firmware would do: the `kernel=` file, and the board's device tree with
/// config.txt's overlays applied, both into `dir`. Returns the kernel's path.
fn firmware_stage(board: &Board, fat: &Path, dir: &Path) -> PathBuf {
    let config = config_txt(fat);
    let kernel = values(&config, "kernel");
    let kernel = kernel.first().expect("config.txt names a kernel");
    let dtb = board
        .qemu
        .as_ref()
        .and_then(|q| q.firmware_dtb.as_deref())
        .expect("the board's [qemu] names the firmware's DTB");
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::copy(fat.join(kernel), dir.join(kernel)).expect("copy the kernel= file");
    let mut fdtoverlay = Command::new("fdtoverlay");
    fdtoverlay
        .arg("-i")
        .arg(fat.join(dtb))
        .arg("-o")
        .arg(dir.join(dtb));
    for overlay in values(&config, "dtoverlay") {
        fdtoverlay.arg(fat.join("overlays").join(format!("{overlay}.dtbo")));
    }
    let out = fdtoverlay
        .output()
        .expect("fdtoverlay runs (install device-tree-compiler: cargo xtask deps)");
    assert!(
        out.status.success(),
        "fdtoverlay on {dtb}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join(kernel)
}

#[tokio::test]
async fn rpi3b_boots_the_sd_image_through_u_boot_to_the_api() {
    let Some(card) = card() else { return };
    let dir = tempfile::tempdir().expect("tempdir");

    // QEMU's SD card must be a power of two long. A real card is larger than the image too:
    // the node adds STATE (100 MiB) and EPHEMERAL after it.
    let sd = dir.path().join("sd.img");
    std::fs::copy(&card.image, &sd).expect("copy the image");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&sd)
        .expect("open the copy");
    let len = file.metadata().expect("metadata").len();
    file.set_len((len + (256 << 20)).next_power_of_two())
        .expect("grow the copy");
    drop(file);

    let sector0 = std::fs::read(&sd).expect("read the card")[..SECTOR as usize].to_vec();
    let (offset, _) = mbr_fat_partition(&sector0);
    let fat = dir.path().join("fat");
    extract_fat(&sd, offset, &fat);
    let u_boot = firmware_stage(&card.board, &fat, &dir.path().join("firmware"));

    let node = Node::launch(
        card.board.clone(),
        BootSource::Firmware { bios: u_boot },
        sd.clone(),
        dir.path().join("console.log"),
    );

    // Each step follows the previous one on the console.
    let steps = [
        ("U-Boot", "U-Boot 20"),
        ("boot.scr", "talos: booting slot A"),
        ("kernel started", "Starting kernel"),
        ("/init", "Run /init as init process"),
        ("NIC plugged in", "hil: plugged in"),
        ("API listening", "API listening on :50000"),
    ];
    for (_, pattern) in steps {
        node.qemu
            .wait_for_line(pattern, BOOT_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let client = Client::connect_with_retry(
        &Endpoint::new("127.0.0.1", node.qemu.api_port()),
        TlsMode::Insecure,
        Instant::now() + Duration::from_secs(120),
    )
    .await
    .expect("the maintenance API answers through the USB NIC");
    let answered = node.qemu.launched_at().elapsed();
    let version = client
        .version()
        .await
        .expect("Version")
        .version
        .expect("a version");
    assert_eq!(version.arch, "arm64");

    let lines = node.qemu.serial_lines_timed();
    let mut timings = Vec::new();
    for (step, pattern) in steps {
        let line = lines
            .iter()
            .find(|l| l.text.contains(pattern))
            .expect("seen above");
        timings.push(format!("{step} {:.1}s", line.at.as_secs_f64()));
    }
    timings.push(format!("API answered {:.1}s", answered.as_secs_f64()));
    eprintln!("raspi3b from QEMU start: {}", timings.join(", "));

    let booted = lines
        .iter()
        .find(|l| l.text.contains("booted from slot A"))
        .expect("machined names the slot it booted");
    assert!(booted.text.contains("disk=/dev/mmcblk0"), "{}", booted.text);

    let tls = apply_overlays(&client, &card.board).await;
    // No PSCI on raspi3b: dropping the node kills QEMU. config.txt was synced when written.
    drop(client);
    drop(node);

    let fat = dir.path().join("fat-after");
    extract_fat(&sd, offset, &fat);
    let config = config_txt(&fat);
    let mut wanted: Vec<&str> = card.board.overlays.iter().map(String::as_str).collect();
    wanted.push(EXTRA_OVERLAY);
    assert_eq!(
        values(&config, "dtoverlay"),
        wanted,
        "config.txt after the apply"
    );
    let u_boot = firmware_stage(&card.board, &fat, &dir.path().join("firmware-after"));
    let node = Node::launch(
        card.board.clone(),
        BootSource::Firmware { bios: u_boot },
        sd,
        dir.path().join("console-after.log"),
    );
    node.qemu
        .wait_for_line("API listening on :50000", BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let client = Client::connect_with_retry(
        &Endpoint::new("127.0.0.1", node.qemu.api_port()),
        tls,
        Instant::now() + Duration::from_secs(120),
    )
    .await
    .expect("the configured node answers with mutual TLS");
    let mut stream = client
        .read(HOG_LINE_NAME)
        .await
        .expect("Read of the overlay's node");
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next_chunk().await.expect("a chunk") {
        bytes.extend(chunk);
    }
    assert_eq!(
        bytes, b"talos-enable\0",
        "the device tree has {EXTRA_OVERLAY}'s node"
    );
}

/// Configures the node with the board's overlays plus [`EXTRA_OVERLAY`] in a `BoardConfig`,
/// after checking that an overlay the card lacks is refused; returns the admin's TLS.
async fn apply_overlays(client: &Client, board: &Board) -> TlsMode {
    let secrets = SecretsBundle::generate(SystemTime::now()).unwrap();
    let mut input = GenerateInput::new("pi", "https://10.0.2.15:6443", secrets, SystemTime::now());
    input.install_disk = "/dev/mmcblk0".into();
    let generated = generate(&input).unwrap();
    let with_overlays = |names: &[&str]| {
        format!(
            "{}---\napiVersion: v1alpha1\nkind: BoardConfig\noverlays: [{}]\n",
            generated.controlplane,
            names.join(", ")
        )
        .into_bytes()
    };
    let err = client
        .apply_configuration(with_overlays(&["spi9"]), ApplyMode::Auto, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"spi9\" is not on the boot partition") && err.contains(EXTRA_OVERLAY),
        "{err}"
    );
    let mut wanted: Vec<&str> = board.overlays.iter().map(String::as_str).collect();
    wanted.push(EXTRA_OVERLAY);
    let applied = client
        .apply_configuration(with_overlays(&wanted), ApplyMode::Auto, false)
        .await
        .expect("apply-config with a BoardConfig");
    assert!(
        applied
            .mode_details
            .contains("device-tree overlays are now"),
        "{}",
        applied.mode_details
    );
    let (_, ctx) = generated.talosconfig.current(None).unwrap();
    TlsMode::Mutual {
        ca_pem: ctx.ca_pem().unwrap(),
        cert_pem: ctx.crt_pem().unwrap(),
        key_pem: ctx.key_pem().unwrap(),
    }
}
