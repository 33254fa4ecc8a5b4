use super::*;
use crate::config::{Patch, testing};
use crate::pki::ExtKeyUsage;

fn field<'a>(entry: &'a Named, key: &str, field: &str) -> &'a str {
    entry.field(key, field).unwrap()
}

fn decoded(b64: &str) -> String {
    String::from_utf8(STANDARD.decode(b64).unwrap()).unwrap()
}

#[test]
fn admin_kubeconfig_carries_a_fresh_cluster_admin_certificate() {
    let (controlplane, _) = testing::lab();
    let now = SystemTime::now();
    let kubeconfig = admin(controlplane, now).unwrap();
    assert_eq!(kubeconfig.current_context, "admin@lab");
    assert_eq!(kubeconfig.context("admin@lab"), Some(("lab", "admin@lab")));
    assert_eq!(kubeconfig.server("lab"), Some("https://10.0.0.2:6443"));

    let ca = controlplane.kubernetes_ca().unwrap();
    let cluster = &kubeconfig.clusters[0];
    assert_eq!(
        decoded(field(cluster, "cluster", "certificate-authority-data")),
        ca.cert_pem
    );
    let user = &kubeconfig.users[0];
    let cert_pem = decoded(field(user, "user", "client-certificate-data"));
    let key_pem = decoded(field(user, "user", "client-key-data"));
    assert!(pki::key_matches_cert(&cert_pem, &key_pem).unwrap());
    let cert = pki::pem_to_der_certs(&cert_pem).unwrap().remove(0);
    pki::verify_issued_by(&cert, &ca.cert_der().unwrap()).unwrap();
    assert_eq!(pki::cert_organizations(&cert).unwrap(), ["system:masters"]);
    assert_eq!(
        pki::extended_key_usages(&cert).unwrap(),
        [ExtKeyUsage::ClientAuth]
    );
    let (_, not_after) = pki::cert_validity(&cert).unwrap();
    let lifetime = not_after.duration_since(now).unwrap().as_secs();
    assert!(
        lifetime.abs_diff(ADMIN_CERT_LIFETIME.as_secs()) <= 1,
        "{lifetime}"
    );

    let again = admin(controlplane, now).unwrap();
    assert_ne!(again.users, kubeconfig.users, "each call mints a new key");
    let round_trip = Kubeconfig::from_yaml(&kubeconfig.to_yaml().unwrap()).unwrap();
    assert_eq!(round_trip, kubeconfig);
}

#[test]
fn cert_lifetime_follows_the_config_and_workers_cannot_mint() {
    let (controlplane, worker) = testing::lab();
    let patched = controlplane
        .patch(&[Patch::parse("cluster:\n  adminKubeconfig:\n    certLifetime: 24h\n").unwrap()])
        .unwrap();
    let now = SystemTime::now();
    let kubeconfig = admin(&patched, now).unwrap();
    let cert_pem = decoded(field(
        &kubeconfig.users[0],
        "user",
        "client-certificate-data",
    ));
    let cert = pki::pem_to_der_certs(&cert_pem).unwrap().remove(0);
    let (_, not_after) = pki::cert_validity(&cert).unwrap();
    assert!(
        not_after
            .duration_since(now)
            .unwrap()
            .as_secs()
            .abs_diff(86_400)
            <= 1
    );

    assert!(matches!(admin(worker, now), Err(KubeconfigError::NoCa)));

    let bad = controlplane
        .patch(&[Patch::parse("cluster:\n  adminKubeconfig:\n    certLifetime: 1y\n").unwrap()])
        .unwrap();
    let errors: Vec<String> = bad
        .validate(crate::ValidationMode::Metal)
        .errors
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("cluster.adminKubeconfig.certLifetime") && e.contains("1y")),
        "{errors:?}"
    );
}

const USER_FILE: &str = "\
apiVersion: v1
kind: Config
clusters:
- name: home
  cluster:
    server: https://192.168.1.10:6443
    proxy-url: socks5://localhost:1080
users:
- name: me
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: kubelogin
      args: [get-token]
contexts:
- name: home
  context:
    cluster: home
    user: me
current-context: home
preferences: {}
";

#[test]
fn merging_keeps_what_was_there_and_renames_on_conflict() {
    let (controlplane, _) = testing::lab();
    let mut file = Kubeconfig::from_yaml(USER_FILE).unwrap();
    let first = admin(controlplane, SystemTime::now()).unwrap();
    assert_eq!(file.merge(first.clone(), false), []);
    assert_eq!(file.current_context, "admin@lab");
    assert_eq!(file.contexts.len(), 2);

    // The same entries again change nothing.
    assert_eq!(file.merge(first.clone(), false), []);
    assert_eq!(file.contexts.len(), 2);

    // A new certificate for the same cluster: the user differs, so it and its context move.
    let second = admin(controlplane, SystemTime::now()).unwrap();
    let notes = file.merge(second.clone(), false);
    assert_eq!(
        notes,
        [
            MergeNote::Renamed {
                kind: "user",
                from: "admin@lab".into(),
                to: "admin@lab-1".into()
            },
            MergeNote::Renamed {
                kind: "context",
                from: "admin@lab".into(),
                to: "admin@lab-1".into()
            },
        ]
    );
    assert_eq!(file.current_context, "admin@lab-1");
    assert_eq!(file.context("admin@lab-1"), Some(("lab", "admin@lab-1")));
    assert_eq!(file.context("admin@lab"), Some(("lab", "admin@lab")));

    // --force replaces instead.
    let third = admin(controlplane, SystemTime::now()).unwrap();
    let notes = file.merge(third.clone(), true);
    // The context names the same cluster and user, so only the user is replaced.
    assert_eq!(
        notes,
        [MergeNote::Replaced {
            kind: "user",
            name: "admin@lab".into()
        }]
    );
    assert_eq!(file.current_context, "admin@lab");
    assert_eq!(
        file.users.iter().find(|u| u.name == "admin@lab"),
        third.users.first()
    );

    // The user's own entries, and fields we do not model, survive a write.
    let written = Kubeconfig::from_yaml(&file.to_yaml().unwrap()).unwrap();
    assert_eq!(written, file);
    let original = Kubeconfig::from_yaml(USER_FILE).unwrap();
    assert_eq!(written.clusters[0], original.clusters[0]);
    assert_eq!(written.users[0], original.users[0]);
    assert!(written.other.contains_key("preferences"));
}
