//! Against the host's own Debian amd64 binaries and libraries, with `/` as the package tree.

use super::*;

const LOADER: &str = "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2";

fn host_spec(executables: &[(&str, &str)], mtime: u64) -> RootfsSpec {
    RootfsSpec {
        packages: vec![PathBuf::from("/")],
        executables: executables
            .iter()
            .map(|(dest, source)| ((*dest).to_owned(), PathBuf::from(source)))
            .collect(),
        mtime,
    }
}

#[test]
fn the_closure_follows_dt_needed_through_every_library() {
    let plan = plan(&host_spec(&[("sbin/mkfs.ext4", "/sbin/mke2fs")], 0)).expect("plan");
    assert_eq!(plan.interpreter, "/lib64/ld-linux-x86-64.so.2");
    assert_eq!(plan.interpreter_in_usr, LOADER);
    let files: Vec<&str> = plan.files.keys().map(String::as_str).collect();
    assert_eq!(
        files,
        [
            "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            "lib/x86_64-linux-gnu/libblkid.so.1",
            "lib/x86_64-linux-gnu/libc.so.6",
            "lib/x86_64-linux-gnu/libcom_err.so.2",
            "lib/x86_64-linux-gnu/libe2p.so.2",
            "lib/x86_64-linux-gnu/libext2fs.so.2",
            "lib/x86_64-linux-gnu/libuuid.so.1",
            "sbin/mkfs.ext4",
        ]
    );
    // Sonames are links in the package; the image holds the files they point at.
    let libext2fs = &plan.files["lib/x86_64-linux-gnu/libext2fs.so.2"];
    assert!(
        fs::symlink_metadata(libext2fs).unwrap().is_file(),
        "{libext2fs:?}"
    );
}

#[test]
fn squashfs_is_reproducible_root_owned_and_follows_mtime() {
    let spec = host_spec(&[("bin/true", "/usr/bin/true")], 1_700_000_000);
    let first = build(&spec).expect("build");
    assert_eq!(build(&spec).expect("second build"), first);
    assert_eq!(&first.squashfs[..4], b"hsqs", "squashfs magic");
    assert_eq!(
        first.files,
        [
            "bin/true",
            "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            "lib/x86_64-linux-gnu/libc.so.6"
        ]
    );
    let other = build(&RootfsSpec {
        mtime: 1_700_000_001,
        ..spec
    })
    .expect("other mtime");
    assert_ne!(other.squashfs, first.squashfs);

    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("usr.sqsh");
    fs::write(&image, &first.squashfs).unwrap();
    let listing = Command::new("unsquashfs")
        .args(["-lls", "-no-progress"])
        .arg(&image)
        .env("TZ", "UTC")
        .output()
        .expect("unsquashfs runs");
    assert!(listing.status.success(), "{listing:?}");
    let listing = String::from_utf8(listing.stdout).unwrap();
    let line = |path: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(&format!("squashfs-root{path}")))
            .unwrap_or_else(|| panic!("{path} not in {listing}"))
    };
    assert!(line("").starts_with("drwxr-xr-x root/root"), "{listing}");
    assert!(line("/bin/true").starts_with("-rwxr-xr-x root/root"));
    // Modes are the package's (Debian ships libc.so.6 executable).
    let libc = line("/lib/x86_64-linux-gnu/libc.so.6");
    assert!(libc.starts_with("-rwxr-xr-x root/root"), "{libc}");
    assert!(libc.contains(" 2023-11-14 22:13 "), "{libc}");
}

#[test]
fn a_missing_library_names_who_needs_it() {
    let empty = tempfile::tempdir().unwrap();
    let mut spec = host_spec(&[("bin/true", "/usr/bin/true")], 0);
    spec.packages = vec![empty.path().to_owned()];
    let err = plan(&spec).expect_err("nothing to find");
    assert!(
        matches!(&err, RootfsError::LibraryNotFound { library, .. } if library == "ld-linux-x86-64.so.2"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("PT_INTERP /lib64/ld-linux-x86-64.so.2"),
        "{err}"
    );
}

#[test]
fn absolute_links_stay_inside_the_package() {
    let pkg = tempfile::tempdir().unwrap();
    let dir = pkg.path().join("usr/lib/x86_64-linux-gnu");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("libx.so.1.2"), b"x").unwrap();
    std::os::unix::fs::symlink(
        "/usr/lib/x86_64-linux-gnu/libx.so.1.2",
        dir.join("libx.so.1"),
    )
    .unwrap();
    std::os::unix::fs::symlink("libx.so.1", dir.join("libx.so")).unwrap();
    std::os::unix::fs::symlink("loop", dir.join("loop")).unwrap();
    let packages = [pkg.path().to_owned()];
    assert_eq!(
        find_library(&packages, "x86_64-linux-gnu", "libx.so"),
        Some(dir.join("libx.so.1.2"))
    );
    assert_eq!(find_library(&packages, "x86_64-linux-gnu", "loop"), None);
    assert_eq!(
        find_library(&packages, "x86_64-linux-gnu", "libc.so.6"),
        None
    );
}

#[test]
fn bad_inputs_are_refused() {
    let escape = host_spec(&[("../bin/true", "/usr/bin/true")], 0);
    assert!(matches!(
        plan(&escape),
        Err(RootfsError::InvalidPath { .. })
    ));
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("script");
    fs::write(&script, "#!/bin/sh\n").unwrap();
    let not_elf = host_spec(&[("bin/script", script.to_str().unwrap())], 0);
    assert!(matches!(plan(&not_elf), Err(RootfsError::Elf { .. })));
    let too_late = host_spec(&[("bin/true", "/usr/bin/true")], 1 << 32);
    assert!(matches!(
        build(&too_late),
        Err(RootfsError::MtimeOutOfRange(_))
    ));
}
