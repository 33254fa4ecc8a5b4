//! `talosctl gen config` and `talosctl gen secrets`: offline generation of machine configs, the
//! admin talosconfig and the secrets bundle.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use talos_machinery::config::Patch;
use talos_machinery::{Config, SecretsBundle};

use crate::cmd::machineconfig::load_patches;
use talos_machinery::codec::MAX_CONFIG_BYTES;
use talos_machinery::config::{
    self, DEFAULT_INSTALL_DISK, DEFAULT_INSTALL_IMAGE, DEFAULT_KUBERNETES_VERSION,
    DEFAULT_TALOS_VERSION, EndpointUrl, GenerateInput, VersionContract,
};

/// Generate machine configs, client configs and secrets, without contacting any node.
#[derive(Debug, Args)]
pub struct GenArgs {
    #[command(subcommand)]
    pub command: GenCommand,
}

#[derive(Debug, Subcommand)]
pub enum GenCommand {
    /// Generate controlplane.yaml, worker.yaml and talosconfig for a new cluster.
    ///
    /// NAME is the cluster name (it also names the talosconfig context). ENDPOINT is the
    /// Kubernetes API endpoint every node uses, as https://HOST:PORT (usually port 6443 on a
    /// control-plane address or a load balancer in front of the control plane).
    ///
    /// Without --with-secrets a fresh set of CAs, keys and tokens is created for this run only;
    /// to regenerate configs for the same cluster later, create a bundle first with
    /// `talosctl gen secrets` and pass it with --with-secrets.
    ///
    /// Files holding secrets are created with mode 0600. Existing files are never overwritten
    /// unless --force is given.
    ///
    /// Example: talosctl gen config lab https://10.0.0.2:6443 -o ./lab
    Config(Box<ConfigArgs>),

    /// Generate a secrets bundle (CAs, keys and tokens) to generate configs from later.
    ///
    /// The bundle is every secret of the cluster: keep it safe. It is created with mode 0600.
    ///
    /// Example: talosctl gen secrets -o secrets.yaml
    Secrets(SecretsArgs),
}

/// Which files `gen config` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputType {
    /// controlplane.yaml: the config for control-plane nodes (holds every cluster secret).
    Controlplane,
    /// worker.yaml: the config for worker nodes.
    Worker,
    /// talosconfig: the client config with an os:admin certificate.
    Talosconfig,
}

impl OutputType {
    fn file_name(self) -> &'static str {
        match self {
            OutputType::Controlplane => "controlplane.yaml",
            OutputType::Worker => "worker.yaml",
            OutputType::Talosconfig => "talosconfig",
        }
    }
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Cluster name; also the name of the talosconfig context.
    #[arg(value_name = "NAME")]
    pub cluster_name: String,

    /// Kubernetes API endpoint, as https://HOST:PORT (e.g. https://10.0.0.2:6443).
    #[arg(value_name = "ENDPOINT", value_parser = parse_endpoint)]
    pub endpoint: String,

    /// Directory to write the files into; created if missing.
    #[arg(
        short = 'o',
        long = "output",
        visible_alias = "output-dir",
        value_name = "DIR",
        default_value = "."
    )]
    pub output_dir: PathBuf,

    /// Read CAs, keys and tokens from this secrets bundle (from `talosctl gen secrets`) instead
    /// of generating new ones.
    #[arg(long, value_name = "FILE")]
    pub with_secrets: Option<PathBuf>,

    /// Kubernetes version for the control-plane and kubelet images, without the leading v.
    #[arg(long, value_name = "VERSION", default_value = DEFAULT_KUBERNETES_VERSION)]
    pub kubernetes_version: String,

    /// Talos version whose config layout to write: v1.13 keeps everything in the v1alpha1
    /// document; v1.14 moves Kubernetes, install, discovery and host DNS settings into their own
    /// documents (talos-rs nodes do not read the Kube* and UnattendedInstallConfig ones yet).
    #[arg(
        long,
        value_name = "VERSION",
        default_value = DEFAULT_TALOS_VERSION,
        value_parser = parse_talos_version
    )]
    pub talos_version: VersionContract,

    /// Disk the installer writes Talos to (machine.install.disk).
    #[arg(long, value_name = "DEVICE", default_value = DEFAULT_INSTALL_DISK)]
    pub install_disk: String,

    /// Installer container image (machine.install.image).
    #[arg(long, value_name = "IMAGE", default_value = DEFAULT_INSTALL_IMAGE)]
    pub install_image: String,

    /// Extra names and addresses for the Talos API and Kubernetes API server certificates;
    /// comma-separated or repeated.
    #[arg(long, value_name = "SAN", value_delimiter = ',')]
    pub additional_sans: Vec<String>,

    /// Which files to write; comma-separated.
    #[arg(
        short = 't',
        long,
        value_name = "TYPES",
        value_delimiter = ',',
        default_value = "controlplane,worker,talosconfig"
    )]
    pub output_types: Vec<OutputType>,

    /// Patch for every generated machine config, inline or `@FILE` (strategic merge or JSON
    /// patch); repeatable, applied in order.
    #[arg(long, value_name = "PATCH")]
    pub config_patch: Vec<String>,

    /// Patch for the control-plane config only, applied after --config-patch; repeatable.
    #[arg(long, value_name = "PATCH")]
    pub config_patch_control_plane: Vec<String>,

    /// Patch for the worker config only, applied after --config-patch; repeatable.
    #[arg(long, value_name = "PATCH")]
    pub config_patch_worker: Vec<String>,

    /// Overwrite existing files.
    #[arg(short = 'f', long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct SecretsArgs {
    /// File to write the bundle to.
    #[arg(
        short = 'o',
        long = "output-file",
        value_name = "FILE",
        default_value = "secrets.yaml"
    )]
    pub output_file: PathBuf,

    /// Overwrite the file if it exists.
    #[arg(short = 'f', long)]
    pub force: bool,
}

fn parse_endpoint(value: &str) -> Result<String, String> {
    EndpointUrl::parse(value).map(|_| value.to_owned())
}

fn parse_talos_version(value: &str) -> Result<VersionContract, String> {
    VersionContract::parse(value).map_err(|e| e.to_string())
}

pub fn run(args: GenArgs) -> anyhow::Result<()> {
    match args.command {
        GenCommand::Config(args) => gen_config(*args),
        GenCommand::Secrets(args) => gen_secrets(args),
    }
}

fn gen_config(args: ConfigArgs) -> anyhow::Result<()> {
    let mut types = args.output_types.clone();
    types.dedup();
    if types.is_empty() {
        bail!("--output-types: at least one of controlplane, worker, talosconfig is required");
    }
    let targets: Vec<(OutputType, PathBuf)> = types
        .iter()
        .map(|&t| (t, args.output_dir.join(t.file_name())))
        .collect();
    if !args.force {
        refuse_existing(targets.iter().map(|(_, path)| path.as_path()))?;
    }

    let common = load_patches(&args.config_patch).context("--config-patch")?;
    let controlplane_patches =
        load_patches(&args.config_patch_control_plane).context("--config-patch-control-plane")?;
    let worker_patches =
        load_patches(&args.config_patch_worker).context("--config-patch-worker")?;

    let now = SystemTime::now();
    let secrets = match &args.with_secrets {
        Some(path) => read_secrets(path)?,
        None => {
            eprintln!("generating PKI and tokens");
            SecretsBundle::generate(now).context("generating secrets")?
        }
    };
    let input = GenerateInput {
        cluster_name: args.cluster_name.clone(),
        endpoint: args.endpoint.clone(),
        kubernetes_version: args.kubernetes_version.clone(),
        install_disk: args.install_disk.clone(),
        install_image: args.install_image.clone(),
        additional_sans: args.additional_sans.clone(),
        contract: args.talos_version,
        secrets,
        now,
    };
    let generated = config::generate(&input)?;
    let controlplane = patched(&generated.controlplane, &common, &controlplane_patches)
        .context("patching controlplane.yaml")?;
    let worker =
        patched(&generated.worker, &common, &worker_patches).context("patching worker.yaml")?;

    fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("creating {}", args.output_dir.display()))?;
    for (output_type, path) in &targets {
        let contents = match output_type {
            OutputType::Controlplane => controlplane.clone(),
            OutputType::Worker => worker.clone(),
            OutputType::Talosconfig => generated.talosconfig.to_yaml()?,
        };
        write_secret_file(path, contents.as_bytes(), args.force)?;
        eprintln!("created {}", path.display());
    }
    Ok(())
}

/// The generated config with the common patches, then the role's patches, applied.
fn patched(generated: &str, common: &[Patch], role: &[Patch]) -> anyhow::Result<String> {
    if common.is_empty() && role.is_empty() {
        return Ok(generated.to_owned());
    }
    let config = Config::from_bytes(generated.as_bytes())?;
    let patches: Vec<Patch> = common.iter().chain(role).cloned().collect();
    Ok(config.patch(&patches)?.to_yaml()?)
}

fn gen_secrets(args: SecretsArgs) -> anyhow::Result<()> {
    if !args.force {
        refuse_existing([args.output_file.as_path()])?;
    }
    let bundle = SecretsBundle::generate(SystemTime::now()).context("generating secrets")?;
    write_secret_file(&args.output_file, bundle.to_yaml()?.as_bytes(), args.force)?;
    eprintln!("created {}", args.output_file.display());
    Ok(())
}

fn refuse_existing<'a>(paths: impl IntoIterator<Item = &'a Path>) -> anyhow::Result<()> {
    for path in paths {
        if path.symlink_metadata().is_ok() {
            bail!(
                "{} already exists; use --force to overwrite it",
                path.display()
            );
        }
    }
    Ok(())
}

fn read_secrets(path: &Path) -> anyhow::Result<SecretsBundle> {
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {}", path.display()))?;
    if text.len() > MAX_CONFIG_BYTES {
        bail!(
            "{} is larger than {MAX_CONFIG_BYTES} bytes; not a secrets bundle",
            path.display()
        );
    }
    SecretsBundle::from_yaml(&text).with_context(|| format!("reading {}", path.display()))
}

/// Writes `contents` with mode 0600. Without `force` the file must not exist (checked again at
/// creation, so a file appearing meanwhile is not clobbered).
fn write_secret_file(path: &Path, contents: &[u8], force: bool) -> anyhow::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!(
                "{} already exists; use --force to overwrite it",
                path.display()
            )
        } else {
            anyhow::Error::new(e).context(format!("creating {}", path.display()))
        }
    })?;
    // An existing file keeps its old mode when truncated; tighten it.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use talos_machinery::{Talosconfig, ValidationMode};

    #[derive(Debug, Parser)]
    struct TestCli {
        #[command(subcommand)]
        command: TestCommand,
    }

    #[derive(Debug, clap::Subcommand)]
    enum TestCommand {
        Gen(GenArgs),
    }

    fn parse(args: &[&str]) -> Result<GenArgs, clap::Error> {
        let mut argv = vec!["talosctl", "gen"];
        argv.extend_from_slice(args);
        TestCli::try_parse_from(argv).map(|cli| match cli.command {
            TestCommand::Gen(args) => args,
        })
    }

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "talosctl-gen-{name}-{}-{}",
                std::process::id(),
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default()
            ));
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        TestCli::command().debug_assert();
    }

    #[test]
    fn endpoint_must_be_https_with_port() {
        let err = parse(&["config", "lab", "10.0.0.2:6443"]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("<ENDPOINT>"), "{text}");
        assert!(text.contains("https://"), "{text}");
        assert!(parse(&["config", "lab", "https://10.0.0.2"]).is_err());
        assert!(parse(&["config", "lab", "https://10.0.0.2:6443"]).is_ok());
    }

    #[test]
    fn output_types_and_sans_are_comma_separated() {
        let args = parse(&[
            "config",
            "lab",
            "https://a:6443",
            "-t",
            "worker,talosconfig",
            "--additional-sans",
            "a.example,10.1.1.1",
        ])
        .unwrap();
        let GenCommand::Config(config) = args.command else {
            panic!("expected config");
        };
        assert_eq!(
            config.output_types,
            [OutputType::Worker, OutputType::Talosconfig]
        );
        assert_eq!(config.additional_sans, ["a.example", "10.1.1.1"]);
        assert_eq!(config.install_disk, "/dev/sda");
    }

    #[test]
    fn gen_config_writes_private_files_and_refuses_to_overwrite() {
        let dir = TempDir::new("config");
        let out = dir.0.join("out");
        let out_str = out.to_str().unwrap();
        run(parse(&["config", "lab", "https://10.0.0.2:6443", "-o", out_str]).unwrap()).unwrap();

        for name in ["controlplane.yaml", "worker.yaml", "talosconfig"] {
            let mode = fs::metadata(out.join(name)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        let cp = Config::from_bytes(&fs::read(out.join("controlplane.yaml")).unwrap()).unwrap();
        assert!(cp.validate(ValidationMode::Metal).errors.is_empty());
        let talosconfig =
            Talosconfig::from_yaml(&fs::read_to_string(out.join("talosconfig")).unwrap()).unwrap();
        assert_eq!(talosconfig.current(None).unwrap().0, "lab");

        let err = run(parse(&["config", "lab", "https://10.0.0.2:6443", "-o", out_str]).unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("controlplane.yaml"), "{err}");
        assert!(err.to_string().contains("--force"), "{err}");

        fs::set_permissions(out.join("worker.yaml"), fs::Permissions::from_mode(0o644)).unwrap();
        run(parse(&[
            "config",
            "lab",
            "https://10.0.0.2:6443",
            "-o",
            out_str,
            "--force",
        ])
        .unwrap())
        .unwrap();
        let mode = fs::metadata(out.join("worker.yaml"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn talos_version_picks_the_layout() {
        let dir = TempDir::new("layout");
        let out = dir.0.join("out");
        let err = parse(&[
            "config",
            "lab",
            "https://a:6443",
            "--talos-version",
            "v1.12",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("v1.13 and v1.14"), "{err}");
        run(parse(&[
            "config",
            "lab",
            "https://10.0.0.2:6443",
            "-o",
            out.to_str().unwrap(),
            "--talos-version",
            "v1.14.0",
            "--config-patch-worker",
            "apiVersion: v1alpha1\nkind: KubeletConfig\nclusterDNS: [10.96.0.10]\n",
        ])
        .unwrap())
        .unwrap();
        for name in ["controlplane.yaml", "worker.yaml"] {
            let config = Config::from_bytes(&fs::read(out.join(name)).unwrap()).unwrap();
            assert!(config.has_kind("KubeClusterConfig"), "{name}");
            assert!(config.install().is_none(), "{name}");
            assert!(config.validate(ValidationMode::Metal).is_ok(), "{name}");
        }
        let worker = fs::read_to_string(out.join("worker.yaml")).unwrap();
        assert!(worker.contains("clusterDNS:"), "{worker}");
    }

    #[test]
    fn gen_config_with_secrets_reuses_the_bundle() {
        let dir = TempDir::new("secrets");
        let secrets = dir.0.join("secrets.yaml");
        let secrets_str = secrets.to_str().unwrap();
        run(parse(&["secrets", "-o", secrets_str]).unwrap()).unwrap();
        let mode = fs::metadata(&secrets).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let err = run(parse(&["secrets", "-o", secrets_str]).unwrap()).unwrap_err();
        assert!(err.to_string().contains("secrets.yaml"), "{err}");

        let bundle = SecretsBundle::from_yaml(&fs::read_to_string(&secrets).unwrap()).unwrap();
        let out = dir.0.join("out");
        run(parse(&[
            "config",
            "lab",
            "https://10.0.0.2:6443",
            "-o",
            out.to_str().unwrap(),
            "--with-secrets",
            secrets_str,
            "-t",
            "worker",
        ])
        .unwrap())
        .unwrap();
        assert!(!out.join("controlplane.yaml").exists());
        let worker = Config::from_bytes(&fs::read(out.join("worker.yaml")).unwrap()).unwrap();
        assert_eq!(
            worker.machine_token(),
            Some(bundle.trustdinfo.token.expose())
        );
        assert_eq!(
            worker.os_ca().unwrap().unwrap().cert_pem,
            bundle.os_ca().cert_pem
        );
    }

    #[test]
    fn gen_config_applies_common_then_role_patches() {
        let dir = TempDir::new("patches");
        let out = dir.0.join("out");
        let patch_file = dir.0.join("cp.yaml");
        fs::write(
            &patch_file,
            "cluster:\n  network:\n    podSubnets: [10.32.0.0/12]\n",
        )
        .unwrap();
        let cp_patch = format!("@{}", patch_file.display());
        run(parse(&[
            "config",
            "lab",
            "https://10.0.0.2:6443",
            "-o",
            out.to_str().unwrap(),
            "--config-patch",
            "machine:\n  network:\n    nameservers: [9.9.9.9]\n",
            "--config-patch",
            "machine:\n  network:\n    nameservers: [1.1.1.1]\n",
            "--config-patch-control-plane",
            &cp_patch,
            "--config-patch-worker",
            "machine:\n  install:\n    disk: /dev/vda\n",
        ])
        .unwrap())
        .unwrap();
        let cp = Config::from_bytes(&fs::read(out.join("controlplane.yaml")).unwrap()).unwrap();
        let worker = Config::from_bytes(&fs::read(out.join("worker.yaml")).unwrap()).unwrap();
        assert_eq!(cp.nameservers(), ["9.9.9.9", "1.1.1.1"]);
        assert_eq!(worker.nameservers(), ["9.9.9.9", "1.1.1.1"]);
        let pods = |c: &Config| {
            c.v1alpha1()
                .cluster
                .as_ref()
                .unwrap()
                .network
                .as_ref()
                .unwrap()
                .pod_subnets
                .clone()
        };
        assert_eq!(pods(&cp), ["10.32.0.0/12"]);
        assert_eq!(pods(&worker), ["10.244.0.0/16"]);
        assert_eq!(worker.install().unwrap().disk.as_deref(), Some("/dev/vda"));
        assert_eq!(cp.install().unwrap().disk.as_deref(), Some("/dev/sda"));
        assert!(cp.validate(ValidationMode::Metal).errors.is_empty());

        // A bad patch fails before anything is written.
        let fresh = dir.0.join("fresh");
        let err = run(parse(&[
            "config",
            "lab",
            "https://10.0.0.2:6443",
            "-o",
            fresh.to_str().unwrap(),
            "--config-patch-worker",
            "machine:\n  instal: {}\n",
        ])
        .unwrap())
        .unwrap_err();
        assert!(format!("{err:#}").contains("machine.instal"), "{err:#}");
        assert!(!fresh.exists());
        let err = run(parse(&[
            "config",
            "lab",
            "https://10.0.0.2:6443",
            "-o",
            fresh.to_str().unwrap(),
            "--config-patch",
            "@/nonexistent/patch.yaml",
        ])
        .unwrap())
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent/patch.yaml"),
            "{err:#}"
        );
    }
}
