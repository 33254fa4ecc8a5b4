//! Arbitrary bytes through the node's config path: decode, then validate in every mode, then
//! write back and decode again (what decodes must round-trip).

#![no_main]

use libfuzzer_sys::fuzz_target;
use talos_machinery::config::{Config, ValidationMode};

fuzz_target!(|data: &[u8]| {
    let Ok(config) = Config::from_bytes(data) else {
        return;
    };
    for mode in [
        ValidationMode::Metal,
        ValidationMode::Container,
        ValidationMode::Cloud,
    ] {
        let _ = config.validate(mode);
    }
    let yaml = config.to_yaml().expect("a decoded config can be written");
    let again = Config::from_bytes(yaml.as_bytes()).expect("written config decodes");
    assert_eq!(again, config, "round trip changed the config");
});
