//! The FDT reader/writer and overlay applier, checked against dtc and fdtoverlay on the Debian
//! kernel's device trees, on our overlays and on small sources with labels.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use talos_dtb::fdt::{Fdt, FdtError, MAX_DEPTH, Node, Property};
use talos_dtb::{compile, sources};

use common::kernel_dtb_dir;

const BOARDS: [&str; 4] = [
    "broadcom/bcm2837-rpi-3-b",
    "broadcom/bcm2711-rpi-4-b",
    "rockchip/rk3399-rock-pi-4b",
    "allwinner/sun50i-a64-pine64-plus",
];
const PI_BOARDS: [&str; 2] = ["broadcom/bcm2837-rpi-3-b", "broadcom/bcm2711-rpi-4-b"];

fn have_tools() -> bool {
    let runs = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let found = runs("dtc") && runs("fdtoverlay");
    if !found {
        println!("skipped: no dtc/fdtoverlay (Debian package device-tree-compiler)");
    }
    found
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `dtc -I dtb -O dts` of `blob`: sorted (`-s`), or in blob order.
fn dts(blob: &[u8], sorted: bool) -> String {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("in.dtb");
    std::fs::write(&path, blob).expect("write");
    let mut dtc = Command::new("dtc");
    if sorted {
        dtc.arg("-s");
    }
    let out = dtc
        .args(["-q", "-I", "dtb", "-O", "dts"])
        .arg(&path)
        .output()
        .expect("dtc runs");
    assert!(
        out.status.success(),
        "dtc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("dts is UTF-8")
}

/// Compiles DTS source text with `dtc`, `-@` when `symbols`.
fn dtc(source: &str, symbols: bool) -> Vec<u8> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("in.dts");
    std::fs::write(&path, source).expect("write");
    let mut dtc = Command::new("dtc");
    if symbols {
        dtc.arg("-@");
    }
    let out = dtc
        .args(["-I", "dts", "-O", "dtb"])
        .arg(&path)
        .output()
        .expect("dtc runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "dtc: {stderr}\n{source}"
    );
    out.stdout
}

/// `fdtoverlay -i base -o out overlays...`: the result, or its complaint.
fn fdtoverlay(base: &[u8], overlays: &[Vec<u8>]) -> Result<Vec<u8>, String> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base_path = tmp.path().join("base.dtb");
    std::fs::write(&base_path, base).expect("write");
    let out_path = tmp.path().join("out.dtb");
    let mut command = Command::new("fdtoverlay");
    command.arg("-i").arg(&base_path).arg("-o").arg(&out_path);
    for (i, overlay) in overlays.iter().enumerate() {
        let path = tmp.path().join(format!("{i}.dtbo"));
        std::fs::write(&path, overlay).expect("write");
        command.arg(path);
    }
    let out = command.output().expect("fdtoverlay runs");
    if out.status.success() {
        Ok(read(&out_path))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Applies `overlays` in order with our code.
fn apply_all(base: &[u8], overlays: &[Vec<u8>]) -> Result<Vec<u8>, FdtError> {
    let mut tree = Fdt::parse(base)?;
    for overlay in overlays {
        tree.apply_overlay(&Fdt::parse(overlay)?)?;
    }
    Ok(tree.to_bytes())
}

/// Asserts that our result decompiles, sorted and in blob order, exactly like fdtoverlay's.
fn assert_same_as_fdtoverlay(base: &[u8], overlays: &[Vec<u8>], what: &str) -> Vec<u8> {
    let theirs = fdtoverlay(base, overlays).unwrap_or_else(|e| panic!("{what}: fdtoverlay: {e}"));
    let ours = apply_all(base, overlays).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(dts(&ours, true), dts(&theirs, true), "{what} (dtc -s)");
    assert_eq!(
        dts(&ours, false),
        dts(&theirs, false),
        "{what} (blob order)"
    );
    ours
}

/// Our overlays, compiled with `talos_dtb::compile`, by name.
fn our_overlays() -> Vec<(String, Vec<u8>)> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("overlays");
    sources(&dir)
        .expect("overlay sources")
        .into_iter()
        .map(|(name, source)| {
            let out = tmp.path().join(format!("{name}.dtbo"));
            compile(&source, &out).expect(&name);
            (name, read(&out))
        })
        .collect()
}

fn all_dtbs(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            all_dtbs(&path, found);
        } else if path.extension().is_some_and(|e| e == "dtb") {
            found.push(path);
        }
    }
}

#[test]
fn kernel_device_trees_round_trip() {
    let Some(dir) = kernel_dtb_dir() else { return };
    let mut found = Vec::new();
    all_dtbs(&dir, &mut found);
    assert!(
        found.len() > 100,
        "{} DTBs in {}",
        found.len(),
        dir.display()
    );
    for path in &found {
        let tree = Fdt::parse(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            Fdt::parse(&tree.to_bytes()).as_ref(),
            Ok(&tree),
            "{}",
            path.display()
        );
    }
    println!("{} kernel DTBs parse and round-trip", found.len());

    if !have_tools() {
        return;
    }
    for board in BOARDS {
        let original = read(&dir.join(format!("{board}.dtb")));
        let ours = Fdt::parse(&original).expect(board).to_bytes();
        assert_eq!(dts(&ours, true), dts(&original, true), "{board} (dtc -s)");
        assert_eq!(dts(&ours, false), dts(&original, false), "{board}");
    }
}

#[test]
fn lookups_follow_libfdt() {
    let Some(dir) = kernel_dtb_dir() else { return };
    let pi3 = Fdt::parse(&read(&dir.join("broadcom/bcm2837-rpi-3-b.dtb"))).expect("pi3");
    assert_eq!(
        pi3.node("/").and_then(|n| n.property_str("model")),
        Some("Raspberry Pi 3 Model B")
    );
    let uart = pi3.node("/soc/serial@7e201000").expect("uart0");
    assert_eq!(pi3.node("serial0"), Some(uart), "through /aliases");
    assert_eq!(
        pi3.node("/soc/serial").map(|n| &n.name),
        Some(&"serial@7e201000".to_owned()),
        "the first serial@..."
    );
    assert_eq!(
        pi3.node("serial0/bluetooth").map(|n| &n.name),
        Some(&"bluetooth".to_owned())
    );
    assert!(pi3.node("/soc/serial@7e201001").is_none());
    assert!(pi3.node("").is_none());
    let gpio = pi3.node("/soc/gpio@7e200000").expect("gpio");
    assert!(gpio.phandle().is_some_and(|p| p <= pi3.max_phandle()));
    assert_eq!(uart.property_u32("#address-cells"), None);
    assert_eq!(
        pi3.node("/").and_then(|n| n.property_u32("#address-cells")),
        Some(1)
    );
}

/// A small tree with the features a blob can carry.
fn sample() -> Fdt {
    let property = |name: &str, value: &[u8]| Property {
        name: name.to_owned(),
        value: value.to_vec(),
    };
    let mut soc = Node::new("soc");
    soc.properties = vec![
        property("compatible", b"simple-bus\0"),
        property("ranges", b""),
    ];
    let mut uart = Node::new("serial@1000");
    uart.properties = vec![
        property("reg", &[0, 0, 0x10, 0, 0, 0, 0, 0x40]),
        property("status", b"okay\0"),
        property("phandle", &[0, 0, 0, 7]),
    ];
    soc.children = vec![uart, Node::new("gpio@2000")];
    let mut root = Node::new("");
    root.properties = vec![
        property("model", b"test\0"),
        property("compatible", b"acme,board\0acme,soc\0"),
    ];
    root.children = vec![Node::new("chosen"), soc];
    Fdt {
        root,
        boot_cpuid: 2,
        reservations: vec![(0x1000, 0x2000), (0x8000_0000, 0x10)],
    }
}

/// Every prefix, with and without totalsize patched to match, and many single-byte changes.
fn assert_never_panics(blob: &[u8], what: &str) {
    let check = |bytes: &[u8], how: &str| {
        let parsed = std::panic::catch_unwind(|| Fdt::parse(bytes))
            .unwrap_or_else(|_| panic!("{what}: parse panicked on {how}"));
        if let Ok(tree) = parsed {
            assert_eq!(
                Fdt::parse(&tree.to_bytes()).as_ref(),
                Ok(&tree),
                "{what}: {how}"
            );
        }
    };
    for len in 0..blob.len() {
        let prefix = &blob[..len];
        assert!(Fdt::parse(prefix).is_err(), "{what}: {len}-byte prefix");
        check(prefix, &format!("{len}-byte prefix"));
        if len >= 8 {
            let mut patched = prefix.to_vec();
            patched[4..8].copy_from_slice(&(len as u32).to_be_bytes());
            check(&patched, &format!("{len}-byte prefix, totalsize patched"));
        }
    }
    // Every byte of the header, reservations and first tokens; a stride through the rest.
    let positions = (0..blob.len().min(256)).chain((256..blob.len()).step_by(11));
    for at in positions {
        let original = blob[at];
        for value in [
            0x00,
            0xff,
            original ^ 0x01,
            original ^ 0x80,
            original ^ 0x08,
        ] {
            let mut corrupt = blob.to_vec();
            corrupt[at] = value;
            check(&corrupt, &format!("byte {at} set to {value:#04x}"));
        }
    }
}

#[test]
fn malformed_blobs_are_refused_without_panicking() {
    let blob = sample().to_bytes();
    assert_eq!(Fdt::parse(&blob), Ok(sample()));
    assert_never_panics(&blob, "sample");

    let Some(dir) = kernel_dtb_dir() else { return };
    let blob = read(&dir.join("broadcom/bcm2837-rpi-3-b.dtb"));
    assert_never_panics(&blob, "bcm2837-rpi-3-b");
}

#[test]
fn refusals_name_the_problem() {
    let message = |bytes: &[u8]| Fdt::parse(bytes).expect_err("refused").to_string();
    assert_eq!(
        message(b"not a device tree blob, just some text"),
        "not a DTB: magic 0x6e6f7420, expected 0xd00dfeed"
    );
    assert_eq!(
        message(&[0xd0, 0x0d]),
        "malformed DTB: 2 bytes is too short for the 36-byte header"
    );

    let blob = sample().to_bytes();
    let total = blob.len();
    assert_eq!(
        message(&blob[..total - 8]),
        format!(
            "malformed DTB: totalsize {total} but only {} bytes",
            total - 8
        )
    );

    // The first property's name offset (after the header, 3 reservation entries and the
    // root's BEGIN_NODE with its empty name), pointed past the strings block.
    let first_property = 40 + 3 * 16 + 8;
    assert_eq!(blob[first_property..first_property + 4], [0, 0, 0, 3]);
    let mut bad_name = blob.clone();
    bad_name[first_property + 8..first_property + 12].copy_from_slice(&123u32.to_be_bytes());
    assert_eq!(
        message(&bad_name),
        "malformed DTB: string offset 123 is outside the strings block"
    );

    let mut bad_token = blob.clone();
    bad_token[first_property + 3] = 5;
    assert_eq!(
        message(&bad_token),
        format!("malformed DTB: unknown token 0x5 at offset {first_property}")
    );

    let mut huge = blob.clone();
    huge[4..8].copy_from_slice(&(17u32 << 20).to_be_bytes());
    assert_eq!(
        message(&huge),
        "malformed DTB: totalsize 17825792 is over the 16 MiB limit"
    );

    let mut old = blob.clone();
    old[20..24].copy_from_slice(&15u32.to_be_bytes());
    assert_eq!(
        message(&old),
        "malformed DTB: version 15, expected 16 or later"
    );

    let nested = |depth: usize| {
        let mut node = Node::new("leaf");
        for _ in 1..depth - 1 {
            let mut parent = Node::new("n");
            parent.children.push(node);
            node = parent;
        }
        let mut root = Node::new("");
        root.children.push(node);
        Fdt {
            root,
            boot_cpuid: 0,
            reservations: Vec::new(),
        }
    };
    assert!(Fdt::parse(&nested(MAX_DEPTH).to_bytes()).is_ok());
    assert!(
        message(&nested(MAX_DEPTH + 1).to_bytes()).contains("nodes nest deeper than 64"),
        "{}",
        message(&nested(MAX_DEPTH + 1).to_bytes())
    );
}

#[test]
fn our_overlays_match_fdtoverlay_on_the_boards_device_trees() {
    let Some(dir) = kernel_dtb_dir() else { return };
    if !have_tools() {
        return;
    }
    let mut matched = 0;
    for board in PI_BOARDS {
        let base = read(&dir.join(format!("{board}.dtb")));
        let tree = Fdt::parse(&base).expect(board);
        let overlays: Vec<(String, Vec<u8>)> = our_overlays()
            .into_iter()
            .filter(|(_, o)| tree.fits(&Fdt::parse(o).expect("overlay")))
            .collect();
        assert_eq!(overlays.len(), 5, "{board}: the Pi overlays");
        for (name, overlay) in &overlays {
            assert_same_as_fdtoverlay(
                &base,
                std::slice::from_ref(overlay),
                &format!("{board} + {name}"),
            );
            matched += 1;
        }
        let in_order: Vec<Vec<u8>> = overlays.iter().map(|(_, o)| o.clone()).collect();
        let merged = assert_same_as_fdtoverlay(&base, &in_order, &format!("{board} + all"));
        let reversed: Vec<Vec<u8>> = in_order.iter().rev().cloned().collect();
        assert_same_as_fdtoverlay(&base, &reversed, &format!("{board} + all, reversed"));
        matched += 2;

        let merged = Fdt::parse(&merged).expect("merged");
        let status = |path: &str| merged.node(path).and_then(|n| n.property_str("status"));
        assert_eq!(status("/soc/serial@7e201000/bluetooth"), Some("disabled"));
        assert_eq!(status("/soc/mmc@7e300000"), Some("disabled"));
        assert_eq!(status("/soc/i2c@7e804000"), Some("okay"));
        // disable-bt's local reference: pinctrl-0 points at the pins node it adds.
        let pins = merged
            .node("/soc/gpio@7e200000/talos-uart0-gpio14")
            .and_then(Node::phandle);
        let uart = merged.node("/soc/serial@7e201000").expect("uart");
        assert_eq!(uart.property_u32("pinctrl-0"), pins);
        assert!(pins.is_some());
    }
    println!("{matched} Pi device tree/overlay combinations match fdtoverlay");

    // Boards without the Pi's nodes: fdtoverlay refuses, and so do we, leaving the tree as is.
    for board in [
        "rockchip/rk3399-rock-pi-4b",
        "allwinner/sun50i-a64-pine64-plus",
    ] {
        let base = read(&dir.join(format!("{board}.dtb")));
        let overlays = our_overlays();
        let tree = Fdt::parse(&base).expect(board);
        let fitting: Vec<Vec<u8>> = overlays
            .iter()
            .filter(|(_, o)| tree.fits(&Fdt::parse(o).expect("overlay")))
            .map(|(_, o)| o.clone())
            .collect();
        assert_eq!(fitting.len(), 1, "{board}: its own overlay");
        assert_same_as_fdtoverlay(&base, &fitting, &format!("{board} + its overlay"));
        let (_, wifi) = overlays
            .iter()
            .find(|(name, _)| name == "disable-wifi")
            .expect("disable-wifi");
        assert!(fdtoverlay(&base, std::slice::from_ref(wifi)).is_err());
        let mut tree = Fdt::parse(&base).expect(board);
        let before = tree.clone();
        let error = tree
            .apply_overlay(&Fdt::parse(wifi).expect("overlay"))
            .expect_err(board);
        assert_eq!(
            error.to_string(),
            "fragment@0: target-path \"/soc/mmc@7e300000\" is not in the base device tree"
        );
        assert_eq!(tree, before);
    }
}

const BASE_DTS: &str = r#"/dts-v1/;
/memreserve/ 0x10000000 0x4000;
/ {
	#address-cells = <1>;
	#size-cells = <1>;
	model = "test board";
	aliases { serial0 = &uart0; };
	intc: interrupt-controller@100 {
		reg = <0x100 0x10>;
		interrupt-controller;
		#interrupt-cells = <1>;
		#address-cells = <0>;
	};
	clk: clock-controller@200 {
		reg = <0x200 0x10>;
		#clock-cells = <1>;
	};
	soc {
		#address-cells = <1>;
		#size-cells = <1>;
		ranges;
		uart0: serial@1000 {
			reg = <0x1000 0x100>;
			clocks = <&clk 1>;
			status = "disabled";
		};
		pinctrl: pinctrl@2000 {
			reg = <0x2000 0x100>;
		};
		spare: spare@3000 {
			reg = <0x3000 0x100>;
			status = "disabled";
		};
	};
};
"#;

/// References base labels, adds nodes with labels of its own, refers to them locally.
const LABELLED_OVERLAY: &str = r#"/dts-v1/;
/plugin/;
&uart0 {
	status = "okay";
	pinctrl-names = "default";
	pinctrl-0 = <&uart0_pins>;
};
&pinctrl {
	uart0_pins: uart0-pins {
		pins = <14 15>;
		function = "uart";
	};
};
&{/soc} {
	sensor: sensor {
		compatible = "acme,sensor";
		clocks = <&clk 3>, <&clk 4>;
		interrupt-parent = <&intc>;
		interrupts = <7>;
	};
};
&{/} {
	top: top-node {
		uses = <&sensor &uart0 &uart0_pins>;
	};
};
"#;

/// Uses the labels `LABELLED_OVERLAY` adds.
const FOLLOW_UP_OVERLAY: &str = r#"/dts-v1/;
/plugin/;
&sensor {
	status = "disabled";
};
&top {
	peer = <&uart0_pins 2>;
	more {
		value = <1>;
	};
};
"#;

/// Explicit fragments: a label on `__overlay__` itself, a target path through an alias.
const FRAGMENT_OVERLAY: &str = r#"/dts-v1/;
/plugin/;
/ {
	fragment@0 {
		target-path = "/soc";
		whole: __overlay__ {
			added-by = "fragment@0";
		};
	};
	fragment@1 {
		target-path = "serial0";
		__overlay__ {
			console: console {
				speed = <115200>;
			};
		};
	};
	not-a-fragment {
		ignored = <1>;
	};
};
"#;

#[test]
fn labels_match_fdtoverlay() {
    if !have_tools() {
        return;
    }
    let base = dtc(BASE_DTS, true);
    let labelled = dtc(LABELLED_OVERLAY, true);
    let follow_up = dtc(FOLLOW_UP_OVERLAY, true);
    let fragments = dtc(FRAGMENT_OVERLAY, true);
    let mut matched = 0;
    for (overlays, what) in [
        (vec![labelled.clone()], "labelled"),
        (vec![fragments.clone()], "fragments"),
        (
            vec![labelled.clone(), follow_up.clone()],
            "labelled + follow-up",
        ),
        (
            vec![fragments.clone(), labelled.clone(), follow_up.clone()],
            "fragments + labelled + follow-up",
        ),
    ] {
        assert_same_as_fdtoverlay(&base, &overlays, what);
        matched += 1;
    }

    // A base without __symbols__ gains one for the overlay's labels.
    let bare = dtc(BASE_DTS, false);
    assert_same_as_fdtoverlay(&bare, std::slice::from_ref(&fragments), "bare + fragments");
    matched += 1;
    println!("{matched} label combinations match fdtoverlay");

    let merged =
        Fdt::parse(&apply_all(&base, &[labelled, follow_up]).expect("apply")).expect("parse");
    let symbol = |label: &str| {
        merged
            .node("/__symbols__")
            .and_then(|s| s.property_str(label))
    };
    assert_eq!(
        symbol("sensor"),
        Some("/soc/sensor"),
        "target-path fragment"
    );
    assert_eq!(
        symbol("uart0_pins"),
        Some("/soc/pinctrl@2000/uart0-pins"),
        "phandle fragment"
    );
    assert_eq!(symbol("top"), Some("/top-node"), "root fragment");
    let phandle_of = |path: &str| merged.node(path).and_then(Node::phandle).expect(path);
    let sensor = merged.node("/soc/sensor").expect("sensor");
    assert_eq!(sensor.property_str("status"), Some("disabled"));
    assert_eq!(
        sensor.property_u32("interrupt-parent"),
        Some(phandle_of("/interrupt-controller@100"))
    );
    let peer = merged
        .node("/top-node")
        .and_then(|n| n.property("peer"))
        .expect("peer");
    assert_eq!(
        peer[..4],
        phandle_of("/soc/pinctrl@2000/uart0-pins").to_be_bytes()
    );

    let with_fragments =
        Fdt::parse(&apply_all(&base, &[fragments]).expect("apply")).expect("parse");
    let symbol = |label: &str| {
        with_fragments
            .node("/__symbols__")
            .and_then(|s| s.property_str(label))
    };
    // libfdt's spelling: the target-path as written, and a trailing slash for __overlay__.
    assert_eq!(symbol("whole"), Some("/soc/"));
    assert_eq!(symbol("console"), Some("serial0/console"));
    assert!(with_fragments.node("serial0/console").is_some());
    assert!(with_fragments.node("/not-a-fragment").is_none());
}

#[test]
fn a_label_without_a_phandle_gets_one() {
    if !have_tools() {
        return;
    }
    // dtc -@ gives every labelled node a phandle; other tools may not.
    let mut base = Fdt::parse(&dtc(BASE_DTS, true)).expect("base");
    let spare = base.node_mut("/soc/spare@3000").expect("spare");
    spare.properties.retain(|p| p.name != "phandle");
    let base_max = base.max_phandle();
    let overlay = dtc(
        "/dts-v1/;\n/plugin/;\n&spare { status = \"okay\"; link = <&spare>; };\n",
        true,
    );
    assert!(
        fdtoverlay(&base.to_bytes(), std::slice::from_ref(&overlay)).is_err(),
        "libfdt refuses a label whose node has no phandle"
    );
    base.apply_overlay(&Fdt::parse(&overlay).expect("overlay"))
        .expect("apply");
    let spare = base.node("/soc/spare@3000").expect("spare");
    assert_eq!(spare.phandle(), Some(base_max + 1));
    assert_eq!(spare.property_u32("link"), Some(base_max + 1));
    assert_eq!(spare.property_str("status"), Some("okay"));
}

#[test]
fn an_overlay_does_not_renumber_a_base_node() {
    if !have_tools() {
        return;
    }
    // The overlay's serial (merged into serial@1000, as libfdt matches names without a unit
    // address) has a phandle of its own, being referenced locally; merging it must keep the
    // base's phandle, which the base's own references use.
    let base_dts = BASE_DTS.replace(
        "model = \"test board\";",
        "model = \"test board\";\n\tconsole-uart = <&uart0>;",
    );
    let mut base = Fdt::parse(&dtc(&base_dts, true)).expect("base");
    let uart = base
        .node("/soc/serial@1000")
        .and_then(Node::phandle)
        .expect("phandle");
    let overlay = dtc(
        "/dts-v1/;\n/plugin/;\n\
         &{/soc} { port: serial { status = \"okay\"; }; };\n\
         &{/} { user { port = <&port>; }; };\n",
        true,
    );
    base.apply_overlay(&Fdt::parse(&overlay).expect("overlay"))
        .expect("apply");
    let uart_node = base.node("/soc/serial@1000").expect("uart");
    assert_eq!(uart_node.phandle(), Some(uart));
    assert_eq!(uart_node.property_str("status"), Some("okay"));
    assert_eq!(
        base.node("/user").and_then(|n| n.property_u32("port")),
        Some(uart)
    );
    assert_eq!(
        base.node("/").and_then(|n| n.property_u32("console-uart")),
        Some(uart)
    );
}

#[test]
fn failed_overlays_name_the_problem_and_leave_the_base_alone() {
    if !have_tools() {
        return;
    }
    let base_blob = dtc(BASE_DTS, true);
    let bare_blob = dtc(BASE_DTS, false);
    let refuse = |base_blob: &[u8], overlay_source: &str| {
        let overlay = dtc(overlay_source, true);
        assert!(fdtoverlay(base_blob, std::slice::from_ref(&overlay)).is_err());
        let mut base = Fdt::parse(base_blob).expect("base");
        let before = base.clone();
        let error = base
            .apply_overlay(&Fdt::parse(&overlay).expect("overlay"))
            .expect_err("refused");
        assert_eq!(base, before, "{error}");
        error.to_string()
    };

    // fragment@0 applies before fragment@1 fails: the base must not keep it.
    let bad_path = r#"/dts-v1/;
/plugin/;
/ {
	fragment@0 { target-path = "/soc/serial@1000"; __overlay__ { status = "okay"; }; };
	fragment@1 { target-path = "/soc/serial@1001"; __overlay__ { status = "okay"; }; };
};
"#;
    assert_eq!(
        refuse(&base_blob, bad_path),
        "fragment@1: target-path \"/soc/serial@1001\" is not in the base device tree"
    );

    let unknown_label =
        "/dts-v1/;\n/plugin/;\n&uart0 { status = \"okay\"; };\n&nosuch { x = <1>; };\n";
    assert_eq!(
        refuse(&base_blob, unknown_label),
        "overlay label \"nosuch\" is not in the base device tree's __symbols__"
    );
    assert_eq!(
        refuse(&bare_blob, unknown_label),
        "overlay label \"uart0\" needs the base device tree's __symbols__, which it lacks \
         (compile the base with dtc -@)"
    );

    let no_target = "/dts-v1/;\n/plugin/;\n/ { fragment@0 { __overlay__ { x = <1>; }; }; };\n";
    assert_eq!(
        refuse(&base_blob, no_target),
        "malformed overlay: fragment@0 has an __overlay__ node but neither target nor target-path"
    );
}
