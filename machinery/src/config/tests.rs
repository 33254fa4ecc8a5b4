use std::sync::OnceLock;
use std::time::SystemTime;

use super::*;
use crate::codec;
use crate::role::{Role, RoleSet};
use crate::secrets::SecretsBundle;

fn generated() -> &'static Generated {
    static GENERATED: OnceLock<Generated> = OnceLock::new();
    GENERATED.get_or_init(|| {
        let now = SystemTime::now();
        let secrets = SecretsBundle::generate(now).unwrap();
        let mut input = GenerateInput::new("lab", "https://10.0.0.2:6443", secrets, now);
        input.additional_sans = vec!["lab.example.com".into()];
        generate(&input).unwrap()
    })
}

#[test]
fn generated_controlplane_parses_and_validates_for_metal() {
    let config = Config::from_bytes(generated().controlplane.as_bytes()).unwrap();
    assert_eq!(config.machine_type(), MachineType::ControlPlane);
    assert_eq!(config.cluster_name().as_deref(), Some("lab"));
    assert_eq!(
        config.control_plane_endpoint().as_deref(),
        Some("https://10.0.0.2:6443")
    );
    assert_eq!(config.cert_sans(), ["lab.example.com"]);
    assert!(config.rbac_enabled());
    let ca = config.os_ca().unwrap().unwrap();
    assert!(ca.key_pem.is_some());
    assert!(pki::key_matches_cert(&ca.cert_pem, ca.key_pem.as_deref().unwrap()).unwrap());
    let report = config.validate(ValidationMode::Metal);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    let v1 = config.v1alpha1();
    let cluster = v1.cluster.as_ref().unwrap();
    let api = cluster.api_server.as_ref().unwrap();
    assert_eq!(api.cert_sans, ["10.0.0.2", "lab.example.com"]);
    assert_eq!(
        api.image.as_deref(),
        Some("registry.k8s.io/kube-apiserver:v1.36.3")
    );
    assert!(
        cluster
            .etcd
            .as_ref()
            .unwrap()
            .ca
            .as_ref()
            .unwrap()
            .key()
            .is_some()
    );
    assert_eq!(
        config.install().unwrap().disk.as_deref(),
        Some(DEFAULT_INSTALL_DISK)
    );
    let kinds: Vec<_> = config.documents().iter().map(|d| d.kind()).collect();
    assert_eq!(kinds, ["HostnameConfig"]);
    assert_eq!(config.hostname_config(), Some(&HostnameConfig::stable()));
}

#[test]
fn rbac_is_on_unless_explicitly_off() {
    let config = Config::from_bytes(MINIMAL.as_bytes()).unwrap();
    assert!(config.rbac_enabled());
    assert!(
        config
            .validate(ValidationMode::Container)
            .warnings
            .is_empty()
    );
    let off = format!("{MINIMAL}  features:\n    rbac: false\n");
    let config = Config::from_bytes(off.as_bytes()).unwrap();
    assert!(!config.rbac_enabled());
    let warnings = config.validate(ValidationMode::Container).warnings;
    assert_eq!(warnings[0].path, "machine.features.rbac");
}

#[test]
fn generated_worker_has_ca_cert_but_no_keys() {
    let config = Config::from_bytes(generated().worker.as_bytes()).unwrap();
    assert_eq!(config.machine_type(), MachineType::Worker);
    let ca = config.os_ca().unwrap().unwrap();
    assert_eq!(ca.key_pem, None);
    let cluster = config.v1alpha1().cluster.as_ref().unwrap();
    assert!(cluster.ca.as_ref().unwrap().key().is_none());
    assert!(cluster.aggregator_ca.is_none());
    assert!(cluster.service_account.is_none());
    assert!(cluster.etcd.is_none());
    assert!(cluster.secretbox_encryption_secret.is_none());
    let report = config.validate(ValidationMode::Metal);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    // The worker's CA is the control plane's CA.
    let cp = Config::from_bytes(generated().controlplane.as_bytes()).unwrap();
    assert_eq!(cp.os_ca().unwrap().unwrap().cert_pem, ca.cert_pem);
    assert_eq!(cp.machine_token(), config.machine_token());
}

#[test]
fn generated_talosconfig_holds_an_admin_cert_for_the_cluster_ca() {
    let generated = generated();
    let (name, context) = generated.talosconfig.current(None).unwrap();
    assert_eq!(name, "lab");
    assert_eq!(context.endpoints, ["10.0.0.2"]);
    let ca_pem = context.ca_pem().unwrap();
    let crt = pki::pem_to_der_certs(&context.crt_pem().unwrap()).unwrap();
    let ca = pki::pem_to_der_certs(&ca_pem).unwrap();
    pki::verify_issued_by(&crt[0], &ca[0]).unwrap();
    let orgs = pki::cert_organizations(&crt[0]).unwrap();
    assert_eq!(
        RoleSet::from_organizations(orgs.iter().map(String::as_str)),
        RoleSet::of(&[Role::Admin])
    );
    assert_eq!(
        pki::extended_key_usages(&crt[0]).unwrap(),
        [pki::ExtKeyUsage::ClientAuth]
    );
    assert!(
        pki::key_matches_cert(&context.crt_pem().unwrap(), &context.key_pem().unwrap()).unwrap()
    );
    let cp = Config::from_bytes(generated.controlplane.as_bytes()).unwrap();
    assert_eq!(cp.os_ca().unwrap().unwrap().cert_pem, ca_pem);
}

#[test]
fn to_yaml_round_trips() {
    for text in [&generated().controlplane, &generated().worker] {
        let config = Config::from_bytes(text.as_bytes()).unwrap();
        let again = Config::from_bytes(config.to_yaml().unwrap().as_bytes()).unwrap();
        assert_eq!(again, config);
    }
}

#[test]
fn other_documents_are_kept_and_round_trip() {
    let text = format!(
        "{}---\napiVersion: v1alpha1\nkind: UserVolumeConfig\nname: data\nprovisioning:\n  maxSize: 10GiB\n...\n",
        generated().worker
    );
    let config = Config::from_bytes(text.as_bytes()).unwrap();
    let kinds: Vec<_> = config
        .documents()
        .iter()
        .map(|d| (d.kind(), d.name()))
        .collect();
    assert_eq!(
        kinds,
        [("HostnameConfig", None), ("UserVolumeConfig", Some("data"))]
    );
    let Document::Other(raw) = &config.documents()[1] else {
        panic!("UserVolumeConfig is not typed");
    };
    assert_eq!(
        raw.text,
        "apiVersion: v1alpha1\nkind: UserVolumeConfig\nname: data\nprovisioning:\n  maxSize: 10GiB"
    );
    let again = Config::from_bytes(config.to_yaml().unwrap().as_bytes()).unwrap();
    assert_eq!(again, config);
}

const MINIMAL: &str =
    "version: v1alpha1\nmachine:\n  type: worker\n  token: abcdef.0123456789abcdef\n";

#[test]
fn unknown_key_error_names_path_and_line() {
    let text = format!(
        "{MINIMAL}  network:\n    interfaces:\n      - interface: eth0\n        adresses: [10.0.0.2/24]\n"
    );
    let err = Config::from_bytes(text.as_bytes()).unwrap_err();
    let ConfigError::Codec(codec_error) = &err else {
        panic!("unexpected error {err}");
    };
    assert_eq!(
        codec_error.path(),
        Some("machine.network.interfaces[0].adresses")
    );
    assert_eq!(codec_error.position().map(|p| p.line), Some(8));
    assert!(
        err.to_string()
            .contains("machine.network.interfaces[0].adresses"),
        "{err}"
    );
}

#[test]
fn unknown_key_in_later_document_reports_stream_line() {
    let text = format!("{MINIMAL}---\n{MINIMAL}");
    assert!(matches!(
        Config::from_bytes(text.as_bytes()),
        Err(ConfigError::Duplicate { line: 6, .. })
    ));
    let text = format!(
        "apiVersion: v1alpha1\nkind: HostnameConfig\nhostname: a\n---\n{MINIMAL}  tken: x\n"
    );
    let err = Config::from_bytes(text.as_bytes()).unwrap_err();
    let ConfigError::Codec(codec_error) = &err else {
        panic!("unexpected error {err}");
    };
    assert_eq!(codec_error.path(), Some("machine.tken"));
    assert_eq!(codec_error.position().map(|p| p.line), Some(9));
}

#[test]
fn unknown_kind_is_named() {
    let text = format!("{MINIMAL}---\napiVersion: v1alpha1\nkind: FrobnicatorConfig\n");
    let err = Config::from_bytes(text.as_bytes()).unwrap_err();
    assert!(
        matches!(&err, ConfigError::UnknownKind { kind, line: 6 } if kind == "FrobnicatorConfig")
    );
    assert!(err.to_string().contains("FrobnicatorConfig"));
}

#[test]
fn duplicate_named_documents_are_refused() {
    let doc = "---\napiVersion: v1alpha1\nkind: UserVolumeConfig\nname: data\n";
    let text = format!("{MINIMAL}{doc}{doc}");
    let err = Config::from_bytes(text.as_bytes()).unwrap_err();
    assert!(
        err.to_string().contains("UserVolumeConfig named \"data\""),
        "{err}"
    );
    let other = "---\napiVersion: v1alpha1\nkind: UserVolumeConfig\nname: logs\n";
    assert!(Config::from_bytes(format!("{MINIMAL}{doc}{other}").as_bytes()).is_ok());
}

#[test]
fn legacy_document_needs_version_v1alpha1() {
    let err = Config::from_bytes(b"machine:\n  type: worker\n").unwrap_err();
    assert!(matches!(err, ConfigError::NotV1Alpha1 { .. }), "{err}");
    let err = Config::from_bytes(b"version: v1alpha2\nmachine: {}\n").unwrap_err();
    assert!(err.to_string().contains("v1alpha2"), "{err}");
    let err = Config::from_bytes(b"apiVersion: v1alpha1\nkind: HostnameConfig\n").unwrap_err();
    assert!(matches!(err, ConfigError::MissingV1Alpha1));
}

#[test]
fn unknown_machine_type_is_a_parse_error_with_path() {
    let err = Config::from_bytes(b"version: v1alpha1\nmachine:\n  type: boss\n").unwrap_err();
    assert!(err.to_string().contains("machine.type"), "{err}");
    assert!(err.to_string().contains("boss"), "{err}");
    let legacy = Config::from_bytes(b"version: v1alpha1\nmachine:\n  type: init\n").unwrap();
    assert_eq!(legacy.machine_type(), MachineType::ControlPlane);
}

#[test]
fn oversize_input_is_refused() {
    let mut text = MINIMAL.as_bytes().to_vec();
    text.resize(MAX_CONFIG_BYTES + 1, b'\n');
    assert!(matches!(
        Config::from_bytes(&text),
        Err(ConfigError::TooLarge { size, .. }) if size == MAX_CONFIG_BYTES + 1
    ));
}

#[test]
fn bad_base64_names_the_field() {
    let text = format!("{MINIMAL}  ca:\n    crt: not*base64\n");
    let err = Config::from_bytes(text.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("machine.ca.crt"), "{err}");
}

#[test]
fn network_and_time_accessors() {
    let text = format!(
        "{MINIMAL}  network:\n    hostname: edge-1\n    nameservers: [1.1.1.1]\n    interfaces:\n      - interface: eth0\n        addresses: [10.0.0.2/24]\n        mtu: 1500\n  time:\n    servers: [time.cloudflare.com]\n"
    );
    let config = Config::from_bytes(text.as_bytes()).unwrap();
    assert_eq!(config.hostname(), Some("edge-1"));
    assert_eq!(config.nameservers(), ["1.1.1.1"]);
    assert_eq!(config.interfaces()[0].addresses, ["10.0.0.2/24"]);
    assert_eq!(config.interfaces()[0].mtu, Some(1500));
    assert_eq!(config.time_servers(), ["time.cloudflare.com"]);
}

fn error_paths(config: &Config, mode: ValidationMode) -> Vec<String> {
    config
        .validate(mode)
        .errors
        .into_iter()
        .map(|p| p.path)
        .collect()
}

#[test]
fn validation_reports_paths() {
    let worker = Config::from_bytes(generated().worker.as_bytes()).unwrap();
    let mut v1 = worker.v1alpha1().clone();
    v1.machine.token = Some("nope".into());
    v1.machine.install = Some(v1alpha1::Install {
        wipe: Some(false),
        ..Default::default()
    });
    v1.machine.network = Some(v1alpha1::Network {
        hostname: Some("-bad".into()),
        ..Default::default()
    });
    v1.cluster.as_mut().unwrap().control_plane = Some(v1alpha1::ControlPlane {
        endpoint: Some("http://10.0.0.2".into()),
        local_api_server_port: None,
    });
    let broken = Config::new(v1.clone());
    assert_eq!(
        error_paths(&broken, ValidationMode::Metal),
        [
            "machine.token",
            "cluster.controlPlane.endpoint",
            "machine.network.hostname",
            "machine.install.disk"
        ]
    );
    // Only metal needs an install disk, and only when machine.install is present.
    let mut without_install = v1.clone();
    without_install.machine.install = None;
    assert!(
        !error_paths(&Config::new(without_install), ValidationMode::Metal)
            .contains(&"machine.install.disk".to_owned())
    );
    assert!(
        !error_paths(&broken, ValidationMode::Container)
            .contains(&"machine.install.disk".to_owned())
    );
    assert!(
        !error_paths(&broken, ValidationMode::Cloud).contains(&"machine.install.disk".to_owned())
    );

    // A key that does not match the CA certificate.
    let cp = Config::from_bytes(generated().controlplane.as_bytes()).unwrap();
    let mut v1 = cp.v1alpha1().clone();
    let other = pki::new_os_ca(SystemTime::now()).unwrap();
    v1.machine.ca.as_mut().unwrap().key = Some(crate::Base64Text(other.key_pem));
    assert_eq!(
        error_paths(&Config::new(v1.clone()), ValidationMode::Metal),
        ["machine.ca.key"]
    );
    v1.machine.ca = None;
    assert_eq!(
        error_paths(&Config::new(v1), ValidationMode::Metal),
        ["machine.ca.crt"]
    );
}

#[test]
fn endpoint_url_parsing() {
    assert_eq!(
        EndpointUrl::parse("https://10.0.0.2:6443").unwrap(),
        EndpointUrl {
            host: "10.0.0.2".into(),
            port: 6443
        }
    );
    assert_eq!(
        EndpointUrl::parse("https://[fd00::1]:6443/").unwrap(),
        EndpointUrl {
            host: "fd00::1".into(),
            port: 6443
        }
    );
    assert_eq!(
        EndpointUrl::parse("https://k8s.lab:443").unwrap().host,
        "k8s.lab"
    );
    for bad in [
        "http://a:1",
        "https://a",
        "https://:6443",
        "https://a:0",
        "https://a:99999",
        "a:6443",
    ] {
        assert!(EndpointUrl::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn generate_refuses_bad_input() {
    let secrets = generated_secrets();
    let now = SystemTime::now();
    let err = generate(&GenerateInput::new(
        "lab",
        "10.0.0.2:6443",
        secrets.clone(),
        now,
    ))
    .unwrap_err();
    assert!(matches!(err, GenerateError::Endpoint(_)));
    let err = generate(&GenerateInput::new(
        "",
        "https://a:6443",
        secrets.clone(),
        now,
    ))
    .unwrap_err();
    assert!(matches!(err, GenerateError::ClusterName(_)));
    let mut input = GenerateInput::new("lab", "https://a:6443", secrets, now);
    input.kubernetes_version = "1.36; rm".into();
    assert!(matches!(
        generate(&input),
        Err(GenerateError::KubernetesVersion(_))
    ));
}

#[test]
fn version_contract_reads_major_and_minor() {
    for (text, contract) in [
        ("v1.13.9", VersionContract::V1_13),
        ("1.13", VersionContract::V1_13),
        ("v1.14", VersionContract::V1_14),
        ("v1.14.0-rc.1", VersionContract::V1_14),
    ] {
        assert_eq!(VersionContract::parse(text).unwrap(), contract, "{text}");
    }
    for text in ["v1.12.4", "v1.15", "2.14", "v1", ""] {
        assert!(
            matches!(VersionContract::parse(text), Err(GenerateError::TalosVersion(t)) if t == text),
            "{text}"
        );
    }
}

#[test]
fn v1_14_contract_moves_settings_into_their_own_documents() {
    let secrets = generated_secrets();
    let mut input = GenerateInput::new(
        "lab",
        "https://10.0.0.2:6443",
        secrets.clone(),
        SystemTime::now(),
    );
    input.contract = VersionContract::V1_14;
    input.additional_sans = vec!["lab.example.com".into()];
    let generated = generate(&input).unwrap();
    let cp = Config::from_bytes(generated.controlplane.as_bytes()).unwrap();
    let worker = Config::from_bytes(generated.worker.as_bytes()).unwrap();
    for config in [&cp, &worker] {
        let again = Config::from_bytes(config.to_yaml().unwrap().as_bytes()).unwrap();
        assert_eq!(&again, config);
        for mode in [
            ValidationMode::Metal,
            ValidationMode::Cloud,
            ValidationMode::Container,
        ] {
            assert_eq!(
                config.validate(mode),
                ValidationReport::default(),
                "{mode:?}"
            );
        }
        assert!(config.install().is_none());
        // The endpoint moved into KubeClusterConfig; the accessor reads it there.
        assert!(
            config
                .v1alpha1()
                .cluster
                .as_ref()
                .unwrap()
                .control_plane
                .is_none()
        );
        assert_eq!(
            config.control_plane_endpoint().as_deref(),
            Some("https://10.0.0.2:6443")
        );
    }

    let keys = |tree: &raw::RawValue, section: &str| -> Vec<String> {
        match tree.get(section) {
            Some(raw::RawValue::Map(entries)) => {
                entries.iter().map(|(k, _)| k.key_text()).collect()
            }
            other => panic!("{section}: {other:?}"),
        }
    };
    let cp_trees = cp.to_documents().unwrap();
    let worker_trees = worker.to_documents().unwrap();
    assert_eq!(
        keys(&cp_trees[0], "machine"),
        ["type", "token", "ca", "certSANs", "features"]
    );
    assert_eq!(keys(&cp_trees[0], "cluster"), ["token", "etcd"]);
    assert_eq!(keys(&worker_trees[0], "cluster"), ["token"]);
    assert_eq!(worker.v1alpha1().machine.ca.as_ref().unwrap().key(), None);

    let labels = |c: &Config| {
        c.documents()
            .iter()
            .map(Document::label)
            .collect::<Vec<_>>()
    };
    let shared_head = [
        "DiscoveryServiceConfig[default]",
        "DiscoveryIdentityConfig",
        "UnattendedInstallConfig",
        "ResolverConfig",
        "VolumeConfig[EPHEMERAL]",
        "FilesystemTrimConfig",
        "SecurityProfileConfig",
        "HostnameConfig",
        "KubeClusterConfig",
        "KubeNodeConfig",
        "KubeletConfig",
        "KubeNetworkConfig",
        "KubeAPIServerCAConfig",
        "KubePrismConfig",
    ];
    assert_eq!(labels(&worker), shared_head);
    assert_eq!(labels(&cp)[..shared_head.len()], shared_head);
    assert_eq!(
        labels(&cp)[shared_head.len()..],
        [
            "KubeAggregatorCAConfig",
            "KubeAdmissionControlConfig[PodSecurity]",
            "KubeAuditPolicyConfig",
            "KubeAuthenticationConfig",
            "KubeAuthorizerConfig[node]",
            "KubeAuthorizerConfig[rbac]",
            "KubeEtcdEncryptionConfig",
            "KubeServiceAccountConfig",
            "KubeAPIServerConfig",
            "KubeControllerManagerConfig",
            "KubeSchedulerConfig",
            "KubeProxyConfig",
            "KubeFlannelCNIConfig",
            "KubeCoreDNSConfig",
        ]
    );

    let document = |trees: &[raw::RawValue], kind: &str| -> raw::RawValue {
        trees
            .iter()
            .find(|t| t.get("kind").and_then(raw::RawValue::as_str) == Some(kind))
            .unwrap_or_else(|| panic!("{kind}"))
            .clone()
    };
    // CA material is literal PEM, not base64.
    let issuing = document(&cp_trees, "KubeAPIServerCAConfig");
    let issuing = issuing.get("issuingCA").unwrap();
    assert_eq!(
        issuing.get("cert").unwrap().as_str(),
        Some(secrets.certs.k8s.crt.as_str())
    );
    assert_eq!(
        issuing.get("key").unwrap().as_str(),
        Some(secrets.certs.k8s.key.as_str())
    );
    let accepted = document(&worker_trees, "KubeAPIServerCAConfig");
    assert_eq!(
        accepted.get("acceptedCAs"),
        Some(&raw::RawValue::Seq(vec![raw::RawValue::string(
            secrets.certs.k8s.crt.as_str()
        )]))
    );
    assert!(!generated.worker.contains("PRIVATE KEY"));
    let install = document(&cp_trees, "UnattendedInstallConfig");
    assert_eq!(
        install
            .get("provisioning")
            .and_then(|p| p.get("diskSelector"))
            .and_then(|d| d.get("match")),
        Some(&raw::RawValue::string("disk.dev_path == \"/dev/sda\""))
    );
    assert_eq!(
        document(&cp_trees, "KubeAPIServerConfig").get("certExtraSANs"),
        Some(&raw::RawValue::Seq(vec![raw::RawValue::string(
            "lab.example.com"
        )]))
    );
    assert_eq!(
        cp.resolver_config()
            .unwrap()
            .host_dns
            .as_ref()
            .unwrap()
            .forward_kube_dns_to_host,
        Some(true)
    );

    // Without an install disk there is nothing to install: no UnattendedInstallConfig.
    input.install_disk = String::new();
    let bare = Config::from_bytes(generate(&input).unwrap().worker.as_bytes()).unwrap();
    assert!(!bare.has_kind("UnattendedInstallConfig"));
}

fn generated_secrets() -> SecretsBundle {
    static SECRETS: OnceLock<SecretsBundle> = OnceLock::new();
    SECRETS
        .get_or_init(|| SecretsBundle::generate(SystemTime::now()).unwrap())
        .clone()
}

const GOLDEN: [(&str, &str); 4] = [
    (
        "v1.13-controlplane.yaml",
        include_str!("testdata/v1.13-controlplane.yaml"),
    ),
    (
        "v1.13-worker.yaml",
        include_str!("testdata/v1.13-worker.yaml"),
    ),
    (
        "v1.14-controlplane.yaml",
        include_str!("testdata/v1.14-controlplane.yaml"),
    ),
    (
        "v1.14-worker.yaml",
        include_str!("testdata/v1.14-worker.yaml"),
    ),
];

#[test]
fn golden_configs_round_trip_losslessly_and_validate() {
    for (name, text) in GOLDEN {
        let config = Config::from_bytes(text.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let yaml = config.to_yaml().unwrap();
        let again = Config::from_bytes(yaml.as_bytes()).unwrap();
        assert_eq!(again, config, "{name}");
        assert_eq!(again.to_yaml().unwrap(), yaml, "{name}: writing is stable");

        // Nothing is lost or changed: the written trees equal the input trees.
        let input = codec::split_documents(text)
            .unwrap()
            .into_iter()
            .map(|d| d.decode::<raw::RawValue>().unwrap())
            .collect::<Vec<_>>();
        let output = config.to_documents().unwrap();
        assert_eq!(input.len(), output.len(), "{name}");
        for (i, (a, b)) in input.iter().zip(&output).enumerate() {
            assert!(a.json_eq(b), "{name}: document {i} changed:\n{a:?}\n{b:?}");
        }

        for mode in [ValidationMode::Metal, ValidationMode::Cloud] {
            let report = config.validate(mode);
            assert_eq!(report, ValidationReport::default(), "{name} {mode:?}");
        }
    }
}

#[test]
fn golden_controlplane_sets_every_v1alpha1_section() {
    let config = Config::from_bytes(GOLDEN[0].1.as_bytes()).unwrap();
    let tree = &config.to_documents().unwrap()[0];
    let keys = |section: &str| -> Vec<String> {
        match tree.get(section) {
            Some(raw::RawValue::Map(entries)) => {
                entries.iter().map(|(k, _)| k.key_text()).collect()
            }
            other => panic!("{section}: {other:?}"),
        }
    };
    let mut machine = keys("machine");
    machine.sort();
    assert_eq!(
        machine,
        [
            "acceptedCAs",
            "baseRuntimeSpecOverrides",
            "ca",
            "certSANs",
            "controlPlane",
            "disks",
            "env",
            "features",
            "files",
            "install",
            "kernel",
            "kubelet",
            "logging",
            "network",
            "nodeAnnotations",
            "nodeLabels",
            "nodeTaints",
            "pods",
            "registries",
            "seccompProfiles",
            "sysctls",
            "sysfs",
            "systemDiskEncryption",
            "time",
            "token",
            "type",
            "udev",
        ]
    );
    let mut cluster = keys("cluster");
    cluster.sort();
    assert_eq!(
        cluster,
        [
            "acceptedCAs",
            "adminKubeconfig",
            "aggregatorCA",
            "allowSchedulingOnControlPlanes",
            "apiServer",
            "ca",
            "clusterName",
            "controlPlane",
            "controllerManager",
            "coreDNS",
            "discovery",
            "etcd",
            "externalCloudProvider",
            "extraManifestHeaders",
            "extraManifests",
            "id",
            "inlineManifests",
            "network",
            "proxy",
            "scheduler",
            "secret",
            "secretboxEncryptionSecret",
            "serviceAccount",
            "token",
        ]
    );
    assert_eq!(config.hostname(), Some("cp-1"));
    assert_eq!(
        config.interfaces()[0].addresses,
        ["10.5.0.2/24", "fd00:5::2/64"]
    );
    assert_eq!(config.time_servers(), ["time.cloudflare.com"]);
}

#[test]
fn golden_worker_typed_documents() {
    let config = Config::from_bytes(GOLDEN[1].1.as_bytes()).unwrap();
    assert_eq!(
        config.hostname_config().unwrap().auto,
        Some(AutoHostname::Stable)
    );
    let time = config.time_sync_config().unwrap();
    assert_eq!(time.boot_timeout.as_deref(), Some("2m30s"));
    assert_eq!(config.time_servers(), ["time.cloudflare.com", "10.5.0.1"]);
    assert_eq!(config.nameservers(), ["10.5.0.1", "2606:4700:4700::1111"]);
    let resolver = config.resolver_config().unwrap();
    assert_eq!(
        resolver.nameservers[1].tls_server_name.as_deref(),
        Some("one.one.one.one")
    );
    assert_eq!(
        resolver.search_domains.as_ref().unwrap().disable_default,
        Some(true)
    );
    assert_eq!(
        config.documents().last().unwrap().label(),
        "UserVolumeConfig[data]"
    );
    // Metal needs the disk selector or a disk.
    assert!(config.install().unwrap().disk_selector.is_some());
}

#[test]
fn golden_v1_14_layout_keeps_kube_documents() {
    let config = Config::from_bytes(GOLDEN[2].1.as_bytes()).unwrap();
    let labels: Vec<String> = config.documents().iter().map(Document::label).collect();
    assert_eq!(
        labels,
        [
            "DiscoveryServiceConfig[default]",
            "DiscoveryIdentityConfig",
            "UnattendedInstallConfig",
            "ResolverConfig",
            "SysctlConfig",
            "VolumeConfig[EPHEMERAL]",
            "FilesystemTrimConfig",
            "SecurityProfileConfig",
            "RegistryMirrorConfig[docker.io]",
            "HostnameConfig",
            "KubeClusterConfig",
            "KubeNodeConfig",
            "KubeletConfig",
            "KubeNetworkConfig",
            "KubeAPIServerCAConfig",
            "KubePrismConfig",
            "KubeAggregatorCAConfig",
            "KubeAdmissionControlConfig[PodSecurity]",
            "KubeAuditPolicyConfig",
            "KubeAuthenticationConfig",
            "KubeAuthorizerConfig[node]",
            "KubeAuthorizerConfig[rbac]",
            "KubeEtcdEncryptionConfig",
            "KubeServiceAccountConfig",
            "KubeAPIServerConfig",
            "KubeControllerManagerConfig",
            "KubeSchedulerConfig",
            "KubeProxyConfig",
            "KubeCoreDNSConfig",
            "KubeFlannelCNIConfig",
            "KubeExternalManifestConfig[metrics-server]",
        ]
    );
    assert_eq!(
        config.control_plane_endpoint().as_deref(),
        Some("https://10.5.0.2:6443")
    );
    assert_eq!(config.cluster_name().as_deref(), Some("golden"));
    let host_dns = config.resolver_config().unwrap().host_dns.as_ref().unwrap();
    assert_eq!(host_dns.forward_kube_dns_to_host, Some(true));
    // Without the split-out documents the shrunk v1alpha1 document is incomplete.
    let bare = Config::new(config.v1alpha1().clone());
    let paths: Vec<String> = bare
        .validate(ValidationMode::Metal)
        .errors
        .into_iter()
        .map(|p| p.path)
        .collect();
    assert_eq!(
        paths,
        [
            "cluster.controlPlane.endpoint",
            "cluster.ca.crt",
            "cluster.serviceAccount.key",
            "cluster.secretboxEncryptionSecret",
        ]
    );
}

#[test]
fn golden_v1_14_worker_needs_no_install_settings() {
    let config = Config::from_bytes(GOLDEN[3].1.as_bytes()).unwrap();
    assert!(config.install().is_none());
    assert!(!config.has_kind("UnattendedInstallConfig"));
    assert!(config.v1alpha1().cluster.as_ref().unwrap().ca.is_none());
    let host_dns = config.resolver_config().unwrap().host_dns.as_ref().unwrap();
    assert_eq!(host_dns.resolve_member_names, Some(true));
    assert_eq!(config.nameservers(), ["10.5.0.1"]);
}

#[test]
fn typed_documents_are_strict() {
    let cases = [
        ("kind: HostnameConfig\nauto: sometimes\n", "auto"),
        ("kind: HostnameConfig\nname: x\nauto: stable\n", "name"),
        ("kind: TimeSyncConfig\nntp:\n  server: [a]\n", "ntp.server"),
        (
            "kind: ResolverConfig\nnameservers:\n  - adress: 1.1.1.1\n",
            "nameservers[0].adress",
        ),
        ("kind: BoardConfig\noverlays: []\noverlay: [x]\n", "overlay"),
    ];
    for (doc, path) in cases {
        let text = format!("{MINIMAL}---\napiVersion: v1alpha1\n{doc}");
        let err = Config::from_bytes(text.as_bytes()).unwrap_err();
        let ConfigError::Codec(codec_error) = &err else {
            panic!("{doc}: unexpected error {err}");
        };
        assert_eq!(codec_error.path(), Some(path), "{doc}: {err}");
    }
}

#[test]
fn install_disk_comes_from_v1alpha1_or_a_dev_path_selector() {
    let v1_13 = Config::from_bytes(generated().controlplane.as_bytes()).unwrap();
    assert_eq!(v1_13.install_disk().unwrap().as_deref(), Some("/dev/sda"));
    let mut input = GenerateInput::new(
        "lab",
        "https://10.0.0.2:6443",
        generated_secrets(),
        SystemTime::now(),
    );
    input.contract = VersionContract::V1_14;
    let v1_14 = Config::from_bytes(generate(&input).unwrap().worker.as_bytes()).unwrap();
    assert!(v1_14.install().is_none());
    assert_eq!(v1_14.install_disk().unwrap().as_deref(), Some("/dev/sda"));
    let selector = |expression: &str| {
        let text = format!(
            "{MINIMAL}---\napiVersion: v1alpha1\nkind: UnattendedInstallConfig\nprovisioning:\n  diskSelector:\n    match: {expression}\n"
        );
        Config::from_bytes(text.as_bytes()).unwrap().install_disk()
    };
    assert_eq!(
        selector(r#"'disk.dev_path == "/dev/nvme0n1"'"#)
            .unwrap()
            .as_deref(),
        Some("/dev/nvme0n1")
    );
    assert_eq!(
        selector(r#""disk.dev_path=='/dev/vdb'""#)
            .unwrap()
            .as_deref(),
        Some("/dev/vdb")
    );
    for unsupported in [
        r#"'disk.size > 10u * GB'"#,
        r#"'disk.dev_path == "/dev/sda" || true'"#,
        r#"'disk.dev_path == "sda"'"#,
    ] {
        let err = selector(unsupported).unwrap_err().to_string();
        assert!(
            err.starts_with("UnattendedInstallConfig.provisioning.diskSelector.match: talos-rs installs only onto a disk named as"),
            "{err}"
        );
    }
}

#[test]
fn board_config_is_typed_and_round_trips() {
    let text = format!(
        "{MINIMAL}---\napiVersion: v1alpha1\nkind: BoardConfig\noverlays:\n  - disable-bt\n  - i2c1-enable\n"
    );
    let config = Config::from_bytes(text.as_bytes()).unwrap();
    let board = config.board_config().expect("typed");
    assert_eq!(board.overlays, ["disable-bt", "i2c1-enable"]);
    let again = Config::from_bytes(config.to_yaml().unwrap().as_bytes()).unwrap();
    assert_eq!(again, config);
    let missing = format!("{MINIMAL}---\napiVersion: v1alpha1\nkind: BoardConfig\n");
    let err = Config::from_bytes(missing.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("overlays"), "{err}");
}

#[test]
fn hostile_inputs_are_refused_by_the_budgets() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let mut bomb = String::from(
        "version: v1alpha1\nmachine:\n  sysctls:\n    a0: &a0 [x, x, x, x, x, x, x, x, x]\n",
    );
    for level in 1..=12 {
        let refs = vec![format!("*a{}", level - 1); 9].join(", ");
        bomb.push_str(&format!("    a{level}: &a{level} [{refs}]\n"));
    }
    let mut block = String::from("version: v1alpha1\nmachine:\n");
    for depth in 1..200 {
        block.push_str(&format!("{}a:\n", "  ".repeat(depth)));
    }
    for (name, text) in [
        ("flow nesting", deep),
        ("alias bomb", bomb),
        ("block nesting", block),
    ] {
        let started = std::time::Instant::now();
        let err = Config::from_bytes(text.as_bytes()).unwrap_err();
        assert!(matches!(err, ConfigError::Codec(_)), "{name}: {err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{name}"
        );
    }
}

#[test]
fn v1alpha1_is_strict_at_every_level() {
    let machine = [
        (
            "network:\n    interfaces:\n      - interface: eth0\n        routes:\n          - network: 0.0.0.0/0\n            gatway: 10.0.0.1\n",
            "machine.network.interfaces[0].routes[0].gatway",
        ),
        (
            "network:\n    interfaces:\n      - interface: eth0\n        vlans:\n          - vlanID: 5\n",
            "machine.network.interfaces[0].vlans[0].vlanID",
        ),
        (
            "network:\n    interfaces:\n      - interface: bond0\n        bond:\n          interface: [eth0]\n",
            "machine.network.interfaces[0].bond.interface",
        ),
        (
            "network:\n    interfaces:\n      - deviceSelector:\n          hardwareAddress: aa:bb:cc:dd:ee:ff\n",
            "machine.network.interfaces[0].deviceSelector.hardwareAddress",
        ),
        (
            "network:\n    interfaces:\n      - interface: eth0\n        vip:\n          address: 10.0.0.9\n",
            "machine.network.interfaces[0].vip.address",
        ),
        (
            "network:\n    kubespan:\n      enable: true\n",
            "machine.network.kubespan.enable",
        ),
        (
            "network:\n    extraHostEntries:\n      - ip: 10.0.0.1\n        alias: [a]\n",
            "machine.network.extraHostEntries[0].alias",
        ),
        (
            "registries:\n    mirrors:\n      docker.io:\n        endpoint: [https://m.test]\n",
            "machine.registries.mirrors.docker.io.endpoint",
        ),
        (
            "registries:\n    config:\n      r.test:\n        auth:\n          user: u\n",
            "machine.registries.config.r.test.auth.user",
        ),
        (
            "install:\n    diskSelector:\n      sizes: 4GB\n",
            "machine.install.diskSelector.sizes",
        ),
        (
            "files:\n    - contents: x\n      path: /var/f\n      op: create\n",
            "machine.files[0].contents",
        ),
        (
            "kubelet:\n    extraMounts:\n      - dest: /var/x\n",
            "machine.kubelet.extraMounts[0].dest",
        ),
        (
            "kubelet:\n    nodeIP:\n      validSubnet: [10.0.0.0/8]\n",
            "machine.kubelet.nodeIP.validSubnet",
        ),
        (
            "logging:\n    destinations:\n      - endpoint: udp://10.0.0.1:514\n        formats: json_lines\n",
            "machine.logging.destinations[0].formats",
        ),
        (
            "kernel:\n    modules:\n      - name: br_netfilter\n        param: [x=1]\n",
            "machine.kernel.modules[0].param",
        ),
        (
            "systemDiskEncryption:\n    state:\n      provider: luks2\n      keys:\n        - slot: 0\n          static:\n            key: x\n",
            "machine.systemDiskEncryption.state.keys[0].static.key",
        ),
        (
            "features:\n    kubernetesTalosAPIAccess:\n      allowedRole: [os:reader]\n",
            "machine.features.kubernetesTalosAPIAccess.allowedRole",
        ),
        (
            "features:\n    imageCache:\n      enabled: true\n",
            "machine.features.imageCache.enabled",
        ),
        (
            "controlPlane:\n    scheduler:\n      disable: true\n",
            "machine.controlPlane.scheduler.disable",
        ),
        ("udev:\n    rule: [x]\n", "machine.udev.rule"),
        (
            "seccompProfiles:\n    - name: a.json\n      values: {}\n",
            "machine.seccompProfiles[0].values",
        ),
        (
            "disks:\n    - device: /dev/sdb\n      partitions:\n        - mountPoint: /var/m\n",
            "machine.disks[0].partitions[0].mountPoint",
        ),
    ];
    let cluster = [
        (
            "network:\n    cni:\n      flannel:\n        extraArg: [x]\n",
            "cluster.network.cni.flannel.extraArg",
        ),
        (
            "apiServer:\n    extraVolumes:\n      - hostpath: /a\n        mountPath: /a\n",
            "cluster.apiServer.extraVolumes[0].hostpath",
        ),
        (
            "apiServer:\n    resources:\n      request: {cpu: 1}\n",
            "cluster.apiServer.resources.request",
        ),
        (
            "apiServer:\n    admissionControl:\n      - name: PodSecurity\n        config: {}\n",
            "cluster.apiServer.admissionControl[0].config",
        ),
        (
            "apiServer:\n    authorizationConfig:\n      - type: Node\n        name: node\n        hook: {}\n",
            "cluster.apiServer.authorizationConfig[0].hook",
        ),
        (
            "scheduler:\n    extraVolumes:\n      - hostPath: /a\n        mountPath: /a\n        readOnly: true\n",
            "cluster.scheduler.extraVolumes[0].readOnly",
        ),
        ("coreDNS:\n    disable: true\n", "cluster.coreDNS.disable"),
        (
            "inlineManifests:\n    - name: a\n      content: x\n",
            "cluster.inlineManifests[0].content",
        ),
        (
            "adminKubeconfig:\n    certLifeTime: 1h\n",
            "cluster.adminKubeconfig.certLifeTime",
        ),
        (
            "externalCloudProvider:\n    manifest: [https://x.test/a.yaml]\n",
            "cluster.externalCloudProvider.manifest",
        ),
    ];
    let cases = machine
        .iter()
        .map(|(yaml, path)| (format!("{MINIMAL}  {yaml}"), *path))
        .chain(
            cluster
                .iter()
                .map(|(yaml, path)| (format!("{MINIMAL}cluster:\n  {yaml}"), *path)),
        );
    for (text, path) in cases {
        let err = Config::from_bytes(text.as_bytes()).unwrap_err();
        let ConfigError::Codec(codec_error) = &err else {
            panic!("{path}: unexpected error {err}");
        };
        assert_eq!(codec_error.path(), Some(path), "{err}");
        assert!(err.to_string().contains(path), "{err}");
    }
}

/// Fails if any line of `secret` (a token, or a PEM body line) shows in `debug`.
fn assert_hidden(debug: &str, secret: &str, what: &str) {
    let pieces: Vec<&str> = secret.lines().filter(|l| l.len() >= 16).collect();
    assert!(!pieces.is_empty(), "{what}: nothing to look for");
    for piece in pieces {
        assert!(!debug.contains(piece), "{what} leaks into Debug");
    }
}

/// `Debug` of the config's `T` document, which must be present.
fn document_debug<T: kinds::KindDocument + fmt::Debug>(config: &Config) -> String {
    format!("{:?}", config.document::<T>().unwrap().expect(T::KIND))
}

#[test]
fn debug_of_a_generated_controlplane_shows_no_secret() {
    let secrets = generated_secrets();
    let certs = &secrets.certs;
    let keys = [
        ("os CA key", &certs.os.key),
        ("k8s CA key", &certs.k8s.key),
        ("aggregator CA key", &certs.k8saggregator.key),
        ("etcd CA key", &certs.etcd.key),
        ("service account key", &certs.k8sserviceaccount.key),
    ];
    let encoded: Vec<_> = keys
        .iter()
        .map(|(what, key)| (*what, crate::b64::encode(key.as_str())))
        .collect();
    let mut hidden = vec![
        ("machine token", secrets.trustdinfo.token.expose()),
        ("cluster token", secrets.secrets.bootstraptoken.expose()),
        ("cluster secret", secrets.cluster.secret.expose()),
        (
            "secretbox",
            secrets.secrets.secretboxencryptionsecret.expose(),
        ),
    ];
    hidden.extend(keys.iter().map(|(what, key)| (*what, key.as_str())));
    hidden.extend(encoded.iter().map(|(what, text)| (*what, text.as_str())));
    for contract in [VersionContract::V1_13, VersionContract::V1_14] {
        let mut input = GenerateInput::new(
            "lab",
            "https://10.0.0.2:6443",
            secrets.clone(),
            SystemTime::now(),
        );
        input.contract = contract;
        let config = Config::from_bytes(generate(&input).unwrap().controlplane.as_bytes()).unwrap();
        assert_eq!(config.machine_token(), Some(&*secrets.trustdinfo.token));
        let mut debug = format!(
            "{config:?} {:?} {:?}",
            config.v1alpha1(),
            config.os_ca().unwrap()
        );
        if contract == VersionContract::V1_14 {
            for document in [
                document_debug::<kinds::KubeAPIServerCAConfig>(&config),
                document_debug::<kinds::KubeAggregatorCAConfig>(&config),
                document_debug::<kinds::KubeServiceAccountConfig>(&config),
                document_debug::<kinds::KubeEtcdEncryptionConfig>(&config),
                document_debug::<kinds::DiscoveryIdentityConfig>(&config),
            ] {
                debug += &document;
            }
        }
        assert!(debug.contains("token: Some(<redacted>)"), "{contract:?}");
        for (what, secret) in &hidden {
            assert_hidden(&debug, secret, &format!("{contract:?} {what}"));
        }
    }
}

#[test]
fn debug_of_v1alpha1_credentials_shows_no_secret() {
    let text = format!(
        r#"{MINIMAL}  registries:
    config:
      registry.test:
        auth:
          username: robot
          password: hunter2-registry
          auth: cm9ib3Q6aHVudGVyMi1yZWdpc3RyeQ==
          identityToken: opaque-identity-token
  systemDiskEncryption:
    state:
      provider: luks2
      keys:
        - static:
            passphrase: correct-horse-battery
          slot: 0
  network:
    interfaces:
      - interface: wg0
        wireguard:
          privateKey: wireguard-private-key
        vip:
          ip: 10.0.0.9
          hcloud:
            apiToken: hcloud-api-token
"#
    );
    let config = Config::from_bytes(text.as_bytes()).unwrap();
    let debug = format!("{config:?}");
    for secret in [
        "abcdef.0123456789abcdef",
        "hunter2-registry",
        "cm9ib3Q6aHVudGVyMi1yZWdpc3RyeQ==",
        "opaque-identity-token",
        "correct-horse-battery",
        "wireguard-private-key",
        "hcloud-api-token",
    ] {
        assert_hidden(&debug, secret, secret);
    }
    assert!(debug.contains("username: Some(\"robot\")"), "{debug}");
}
