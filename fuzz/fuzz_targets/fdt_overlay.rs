//! Arbitrary bytes through the node's device-tree path: parse, write back and parse again (what
//! parses must round-trip), then apply the tree to itself as an overlay, which must either work
//! or leave the base exactly as it was.

#![no_main]

use libfuzzer_sys::fuzz_target;
use talos_dtb::fdt::Fdt;

fuzz_target!(|data: &[u8]| {
    let Ok(tree) = Fdt::parse(data) else {
        return;
    };
    let again = Fdt::parse(&tree.to_bytes()).expect("a written tree parses");
    assert_eq!(again, tree, "round trip changed the tree");
    let mut base = tree.clone();
    if base.apply_overlay(&tree).is_err() {
        assert_eq!(base, tree, "a failed overlay changed the base");
    } else {
        let _ = base.to_bytes();
    }
});
