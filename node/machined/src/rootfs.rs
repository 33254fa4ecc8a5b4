//! The node's /usr: the squashfs the image builder puts in the initramfs (containerd, runc,
//! etcd, mkfs.ext4 and their libraries), mounted read-only from a loop device. It stays
//! compressed in RAM and pages are decompressed as they are read.

use std::path::{Path, PathBuf};

use talos_node_sys::SysError;
use talos_node_sys::fs::{MountFlags, MountSpec, Mounter};
use talos_node_sys::loopdev::LoopDevices;

/// Where the image builder puts the squashfs (`talos_images::initramfs::ROOTFS_PATH`).
pub const IMAGE: &str = "/rootfs.sqsh";
pub const MOUNT_POINT: &str = "/usr";

/// Mounts `image` read-only at `target` and returns the loop device; `None` when there is no
/// image (the benchmark floor has none).
pub fn mount(
    loops: &dyn LoopDevices,
    mounter: &dyn Mounter,
    image: &Path,
    target: &Path,
) -> Result<Option<PathBuf>, SysError> {
    if !image.is_file() {
        return Ok(None);
    }
    std::fs::create_dir_all(target)
        .map_err(|e| SysError::new("mkdir", target.display().to_string(), e))?;
    let device = loops.attach_read_only(image)?;
    mounter.mount(&MountSpec {
        source: device.path.display().to_string(),
        target: target.to_owned(),
        fstype: "squashfs".into(),
        flags: MountFlags {
            nosuid: true,
            nodev: true,
            noexec: false,
            relatime: false,
        },
        // The device is read-only, so the superblock must be too (SB_RDONLY from "ro").
        data: "ro".into(),
    })?;
    Ok(Some(device.path))
}

/// The boot task: the node boots on without /usr, so failures are logged, not returned.
pub fn mount_at_boot(loops: &dyn LoopDevices, mounter: &dyn Mounter) {
    match mount(loops, mounter, Path::new(IMAGE), Path::new(MOUNT_POINT)) {
        Ok(Some(device)) => tracing::info!(
            device = %device.display(),
            "mounted {IMAGE} read-only at {MOUNT_POINT}"
        ),
        Ok(None) => tracing::warn!("no {IMAGE} in the initramfs: {MOUNT_POINT} stays empty"),
        Err(e) => tracing::error!("mounting {IMAGE} at {MOUNT_POINT}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use talos_node_sys::fake::{Call, FakeSystem};

    #[test]
    fn the_image_is_attached_read_only_and_mounted_squashfs_ro_nodev_nosuid() {
        let tmp = tempfile::tempdir().unwrap();
        let image = tmp.path().join("rootfs.sqsh");
        std::fs::write(&image, b"hsqs").unwrap();
        let target = tmp.path().join("usr");
        let fake = FakeSystem::default();
        let device = mount(&fake, &fake, &image, &target).unwrap();
        assert_eq!(device, Some(PathBuf::from("/dev/loop0")));
        assert!(target.is_dir(), "the mount point is made");
        assert_eq!(
            fake.calls(),
            [
                Call::AttachLoop(image),
                Call::Mount(MountSpec {
                    source: "/dev/loop0".into(),
                    target,
                    fstype: "squashfs".into(),
                    flags: MountFlags {
                        nosuid: true,
                        nodev: true,
                        noexec: false,
                        relatime: false,
                    },
                    data: "ro".into(),
                }),
            ]
        );
    }

    #[test]
    fn without_an_image_nothing_is_attached_or_mounted() {
        let tmp = tempfile::tempdir().unwrap();
        let fake = FakeSystem::default();
        let device = mount(
            &fake,
            &fake,
            &tmp.path().join("rootfs.sqsh"),
            &tmp.path().join("usr"),
        )
        .unwrap();
        assert_eq!(device, None);
        assert!(fake.calls().is_empty());
        assert!(!tmp.path().join("usr").exists());
    }
}
