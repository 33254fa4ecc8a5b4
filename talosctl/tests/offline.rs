//! The offline commands through the real binary: gen config, machineconfig patch, validate, and
//! the talosconfig editors.

use std::path::Path;
use std::process::{Command, Output};
use std::time::SystemTime;

use talos_machinery::config::{Config, ValidationMode};
use talos_machinery::pki;
use talos_machinery::role::Role;
use talos_machinery::talosconfig::Talosconfig;

fn talosctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_talosctl"))
        .current_dir(dir)
        .args(args)
        .env_remove("TALOSCONFIG")
        .env_remove("TALOS_HOME")
        .env("HOME", dir)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn gen_patch_validate_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&talosctl(
        d,
        &["gen", "config", "lab", "https://10.0.0.2:6443", "-o", "out"],
    ));
    let out = ok(&talosctl(
        d,
        &[
            "validate",
            "--config",
            "out/controlplane.yaml",
            "--mode",
            "metal",
        ],
    ));
    assert_eq!(out, "out/controlplane.yaml is valid for metal mode\n");
    ok(&talosctl(
        d,
        &[
            "validate",
            "-c",
            "out/worker.yaml",
            "-m",
            "cloud",
            "--strict",
        ],
    ));

    std::fs::write(
        d.join("eth0.yaml"),
        "machine:\n  network:\n    interfaces:\n      - interface: eth0\n        addresses: [10.0.0.5/24]\n",
    )
    .unwrap();
    let printed = ok(&talosctl(
        d,
        &[
            "mc",
            "patch",
            "out/worker.yaml",
            "--patch",
            "@eth0.yaml",
            "-p",
            "machine:\n  network:\n    hostname: w1\n",
        ],
    ));
    let patched = Config::from_bytes(printed.as_bytes()).unwrap();
    assert_eq!(patched.hostname(), Some("w1"));
    assert_eq!(patched.interfaces()[0].addresses, ["10.0.0.5/24"]);

    ok(&talosctl(
        d,
        &[
            "machineconfig",
            "patch",
            "out/worker.yaml",
            "-p",
            "@eth0.yaml",
            "-o",
            "w.yaml",
        ],
    ));
    let written = Config::from_bytes(&std::fs::read(d.join("w.yaml")).unwrap()).unwrap();
    assert_eq!(written.interfaces().len(), 1);

    // JSON patches are refused for the generated (multi-document) config, with upstream's words.
    let out = talosctl(
        d,
        &[
            "mc",
            "patch",
            "out/worker.yaml",
            "-p",
            r#"[{"op":"remove","path":"/machine/install"}]"#,
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not supported for multi-document machine configuration"),
        "{}",
        text(&out.stderr)
    );

    // Break the config: every problem is listed with its path, and the exit code says so.
    ok(&talosctl(
        d,
        &[
            "mc",
            "patch",
            "w.yaml",
            "-o",
            "bad.yaml",
            "-p",
            "machine:\n  token: nope\n  install:\n    disk: ''\n  features:\n    rbac: false\n",
        ],
    ));
    let out = talosctl(d, &["validate", "-c", "bad.yaml", "-m", "metal"]);
    assert!(!out.status.success());
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("error: machine.token: must have the form [a-z0-9]{6}.[a-z0-9]{16}\n"),
        "{stdout}"
    );
    assert!(stdout.contains("error: machine.install.disk: "), "{stdout}");
    assert!(
        stdout.contains("warning: machine.features.rbac: "),
        "{stdout}"
    );
    assert!(
        text(&out.stderr).contains("bad.yaml is not valid for metal mode: 2 errors, 1 warning"),
        "{}",
        text(&out.stderr)
    );
    // Cloud mode needs no disk; --strict turns the warning into a failure.
    ok(&talosctl(
        d,
        &[
            "mc",
            "patch",
            "bad.yaml",
            "-o",
            "warn.yaml",
            "-p",
            "machine:\n  token: abcdef.0123456789abcdef\n",
        ],
    ));
    ok(&talosctl(
        d,
        &["validate", "-c", "warn.yaml", "-m", "cloud"],
    ));
    let out = talosctl(
        d,
        &["validate", "-c", "warn.yaml", "-m", "cloud", "--strict"],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stdout).starts_with("error: machine.features.rbac: "),
        "{}",
        text(&out.stdout)
    );

    // Decoding errors name the path.
    std::fs::write(
        d.join("typo.yaml"),
        "version: v1alpha1\nmachine:\n  tpye: worker\n",
    )
    .unwrap();
    let out = talosctl(d, &["validate", "-c", "typo.yaml", "-m", "metal"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("machine.tpye: unknown field"),
        "{}",
        text(&out.stderr)
    );

    let generated =
        Config::from_bytes(&std::fs::read(d.join("out/controlplane.yaml")).unwrap()).unwrap();
    assert!(generated.validate(ValidationMode::Metal).is_ok());
}

#[test]
fn talosconfig_editing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&talosctl(
        d,
        &[
            "gen",
            "config",
            "lab",
            "https://10.0.0.2:6443",
            "-o",
            "a",
            "-t",
            "talosconfig",
        ],
    ));
    ok(&talosctl(
        d,
        &[
            "gen",
            "config",
            "lab",
            "https://10.0.0.9:6443",
            "-o",
            "b",
            "-t",
            "talosconfig",
        ],
    ));
    // A key upstream might write that we do not know survives edits.
    let path = d.join("a/talosconfig");
    let original = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{original}future-key: kept\n")).unwrap();

    let tc = ["--talosconfig", "a/talosconfig"];
    let with =
        |rest: &[&str]| -> Vec<String> { tc.iter().chain(rest).map(|s| s.to_string()).collect() };
    let run = |rest: &[&str]| {
        let args = with(rest);
        talosctl(d, &args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let out = run(&["config", "endpoint", "10.0.0.2", "10.0.0.3"]);
    ok(&out);
    assert!(
        text(&out.stderr).contains("unknown key future-key"),
        "{}",
        text(&out.stderr)
    );
    ok(&run(&["config", "nodes", "10.0.0.3"]));
    ok(&run(&["config", "merge", "b/talosconfig"]));
    let contexts = ok(&run(&["config", "contexts"]));
    assert_eq!(
        contexts,
        "CURRENT   NAME    ENDPOINTS           NODES\n          lab     10.0.0.2,10.0.0.3   10.0.0.3\n*         lab-1   10.0.0.9            \n"
    );
    ok(&run(&["config", "context", "lab"]));
    let info = ok(&run(&["config", "info"]));
    assert!(info.starts_with("Current context:     lab\nNodes:               10.0.0.3\nEndpoints:           10.0.0.2, 10.0.0.3\nRoles:               os:admin\n"), "{info}");

    let out = run(&["config", "context", "nope"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("a/talosconfig") && stderr.contains("\"nope\" is not defined"),
        "{stderr}"
    );

    let written = std::fs::read_to_string(&path).unwrap();
    assert!(written.contains("future-key: kept"), "{written}");
    let config = Talosconfig::from_yaml(&written).unwrap();
    assert_eq!(config.context.as_deref(), Some("lab"));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    // config add from PEM files, into a file that does not exist yet.
    let now = SystemTime::now();
    let ca = pki::new_os_ca(now).unwrap();
    let crt = pki::issue_client_cert(&ca, &[Role::Reader], pki::CLIENT_CERT_VALIDITY, now).unwrap();
    std::fs::write(d.join("ca.pem"), &ca.cert_pem).unwrap();
    std::fs::write(d.join("crt.pem"), &crt.cert_pem).unwrap();
    std::fs::write(d.join("key.pem"), &crt.key_pem).unwrap();
    std::fs::write(d.join("other.pem"), &ca.key_pem).unwrap();
    let add = |file: &str, name: &str, key: &str| {
        talosctl(
            d,
            &[
                "--talosconfig",
                file,
                "config",
                "add",
                name,
                "--ca",
                "ca.pem",
                "--crt",
                "crt.pem",
                "--key",
                key,
            ],
        )
    };
    ok(&add("new/talosconfig", "reader", "key.pem"));
    let out = add("new/talosconfig", "reader", "key.pem");
    assert!(
        text(&out.stderr).contains("context \"reader\" already exists"),
        "{}",
        text(&out.stderr)
    );
    let out = add("new/talosconfig", "second", "other.pem");
    assert!(
        text(&out.stderr).contains("--key other.pem does not belong to --crt crt.pem"),
        "{}",
        text(&out.stderr)
    );
    let new = Talosconfig::from_yaml(&std::fs::read_to_string(d.join("new/talosconfig")).unwrap())
        .unwrap();
    assert_eq!(new.contexts["reader"].crt_pem().unwrap(), crt.cert_pem);
    let info = ok(&talosctl(
        d,
        &[
            "--talosconfig",
            "new/talosconfig",
            "--context",
            "reader",
            "config",
            "info",
        ],
    ));
    assert!(info.contains("Roles:               os:reader\n"), "{info}");

    let out = talosctl(
        d,
        &[
            "--talosconfig",
            "missing/talosconfig",
            "config",
            "node",
            "x",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("missing/talosconfig"),
        "{}",
        text(&out.stderr)
    );
}
