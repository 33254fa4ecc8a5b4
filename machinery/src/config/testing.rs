//! One generated control-plane and worker config (cluster "lab"), shared by tests: generating
//! the secrets takes seconds in a debug build.

use std::sync::OnceLock;
use std::time::SystemTime;

use super::{Config, GenerateInput, generate};
use crate::secrets::SecretsBundle;

/// The control-plane and the worker config.
pub(crate) fn lab() -> &'static (Config, Config) {
    static CONFIGS: OnceLock<(Config, Config)> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let now = SystemTime::now();
        let secrets = SecretsBundle::generate(now).unwrap();
        let generated = generate(&GenerateInput::new(
            "lab",
            "https://10.0.0.2:6443",
            secrets,
            now,
        ))
        .unwrap();
        (
            Config::from_bytes(generated.controlplane.as_bytes()).unwrap(),
            Config::from_bytes(generated.worker.as_bytes()).unwrap(),
        )
    })
}
