//! Reproducible image builder: initramfs (cpio newc + zstd)
