//! `cargo xtask dtb`: compiles our overlays from dtb/overlays/ into out/dtb/.

use std::path::PathBuf;

use anyhow::Context;

use crate::paths;

/// Compiles and validates every overlay; returns the `.dtbo` paths.
pub fn build() -> anyhow::Result<Vec<PathBuf>> {
    let out = paths::root().join("out").join("dtb");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut built = Vec::new();
    for (name, source) in talos_dtb::sources(&paths::root().join("dtb").join("overlays"))? {
        let target = out.join(format!("{name}.dtbo"));
        let overlay = talos_dtb::compile(&source, &target)?;
        eprintln!("{name}: {} bytes", overlay.total_size);
        built.push(target);
    }
    Ok(built)
}
