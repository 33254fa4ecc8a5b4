//! talosctl: the command line for the Talos API (upstream-compatible commands and flags).

mod cmd;
mod files;
mod global;
mod output;
mod tarball;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;

use crate::global::GlobalArgs;

/// A CLI for out-of-band management of Talos nodes over the Talos API (mutual TLS on port 50000).
#[derive(Debug, Parser)]
#[command(
    name = "talosctl",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the client version and the version of each targeted node.
    Version(cmd::version::VersionArgs),

    /// Send a complete machine configuration to nodes.
    ///
    /// Use `--insecure -n <IP>` for a node in maintenance mode (no config yet): the connection is
    /// TLS without a client certificate, and the node's certificate is not verified.
    #[command(visible_alias = "apply")]
    ApplyConfig(cmd::apply::ApplyArgs),

    /// Print the kernel ring buffer of nodes.
    Dmesg(cmd::dmesg::DmesgArgs),

    /// Show memory usage of nodes, in MiB.
    #[command(visible_aliases = ["m", "free"])]
    Memory(cmd::memory::MemoryArgs),

    /// List services, show one service, or start/stop/restart it.
    ///
    /// Starting, stopping and restarting need the os:operator or os:admin role and work on the
    /// services machined runs as processes (containerd, etcd); those inside machined (apid,
    /// network, timed) are refused. Stop and restart return once the old process has exited.
    #[command(visible_alias = "services")]
    Service(cmd::service::ServiceArgs),

    /// Print the log of a service on nodes.
    ///
    /// Each line is printed as `NODE: line`. With -f the command keeps printing new lines until
    /// it is interrupted (Ctrl-C ends it cleanly, exit status 0) or the node closes the stream.
    /// talos-rs nodes keep about 1 MiB of log each for machined and for every service the
    /// supervisor runs as a process (containerd, etcd; see `talosctl services`); other names are
    /// answered with NotFound.
    #[command(after_help = cmd::logs::LOGS_EXAMPLES)]
    Logs(cmd::logs::LogsArgs),

    /// Stream the node's runtime events: each sequence (boot, reboot, reset, upgrade,
    /// rollback), its phases and tasks, as they start and stop, and each service's state
    /// changes (ServiceStateEvent).
    #[command(after_help = cmd::events::EVENTS_EXAMPLES)]
    Events(cmd::events::EventsArgs),

    /// Print a file on the node to stdout, byte for byte.
    ///
    /// Needs exactly one target node. The node's refusal (NotFound, PermissionDenied for secrets,
    /// InvalidArgument for anything but a regular file) is shown as it sent it.
    #[command(visible_alias = "cat", after_help = cmd::read::READ_EXAMPLES)]
    Read(cmd::read::ReadArgs),

    /// Copy a file or a directory tree from the node.
    ///
    /// The node sends a .tar.gz of SRC whose names start at SRC's own name; it is unpacked
    /// into DEST, or written as it is to stdout with DEST `-`. Needs exactly one target node
    /// and the os:admin role.
    #[command(visible_alias = "cp", after_help = cmd::copy::COPY_EXAMPLES)]
    Copy(cmd::copy::CopyArgs),

    /// Fetch a newly minted admin kubeconfig from a control-plane node.
    ///
    /// By default it is merged into ~/.kube/config and its context made current. Needs exactly
    /// one target node and the os:admin role.
    #[command(after_help = cmd::kubeconfig::KUBECONFIG_EXAMPLES)]
    Kubeconfig(cmd::kubeconfig::KubeconfigArgs),

    /// List a directory on nodes (by default `/`, one level).
    ///
    /// With one node the names are printed one per line, relative to PATH (`.` is PATH itself);
    /// with several, or with -l, as a table with a NODE column.
    #[command(visible_alias = "ls", after_help = cmd::list::LIST_EXAMPLES)]
    List(cmd::list::ListArgs),

    /// List the processes running on nodes.
    ///
    /// Columns: NODE PID STATE THREADS CPU-TIME VIRTMEM RESMEM LABEL COMMAND, sorted per node by
    /// resident memory (or CPU time with -s cpu), largest first.
    #[command(visible_aliases = ["p", "ps"], after_help = cmd::processes::PROCESSES_EXAMPLES)]
    Processes(cmd::processes::ProcessesArgs),

    /// List the mounted filesystems of nodes with their size and use.
    ///
    /// Columns: NODE FILESYSTEM SIZE(GB) USED(GB) AVAILABLE(GB) PERCENT USED MOUNTED ON.
    #[command(visible_alias = "mount", after_help = cmd::mounts::MOUNTS_EXAMPLES)]
    Mounts(cmd::mounts::MountsArgs),

    /// Show the time of nodes next to an NTP server's.
    ///
    /// The node itself asks the server (its first configured time server, or --check SERVER)
    /// and reports both clocks: NODE NTP-SERVER NODE-TIME NTP-SERVER-TIME, in UTC.
    #[command(after_help = cmd::time::TIME_EXAMPLES)]
    Time(cmd::time::TimeArgs),

    /// Reset nodes: wipe their system partitions, then power off or reboot.
    ///
    /// Sends MachineService/Reset to every target node (-n) and prints
    /// `NODE: reset requested (actor ID ID)` for each. A node whose STATE is wiped forgets its
    /// machine configuration and comes back in maintenance mode. The node answers once the
    /// reset has started. With --wait the command then follows each node's events, failing if
    /// its reset fails, until it has gone down and (with --reboot) answers again. The exit
    /// status is non-zero when any node failed.
    #[command(after_help = cmd::reset::RESET_EXAMPLES)]
    Reset(cmd::reset::ResetArgs),

    /// Reboot nodes.
    Reboot(cmd::power::RebootArgs),

    /// Shut nodes down (power off).
    Shutdown(cmd::power::ShutdownArgs),

    /// Upgrade nodes to another Talos version from an installer image.
    ///
    /// Sends MachineService/Upgrade to every target node (-n): the node fetches the installer
    /// image, installs it and reboots into it, keeping the version it ran for `talosctl rollback`.
    /// Each node's acknowledgement is printed as `NODE: upgrade requested: ACK (actor ID ID)`.
    ///
    /// Without --wait the command returns once every node has acknowledged. With --wait it then
    /// shows a spinner per node on stderr until the node has gone away and answers the API again,
    /// and prints `NODE: back on TAG`; a node that is not back within --timeout fails with the
    /// last error seen. The exit status is non-zero when any node failed.
    #[command(after_help = cmd::upgrade::UPGRADE_EXAMPLES)]
    Upgrade(cmd::upgrade::UpgradeArgs),

    /// Roll nodes back to the Talos version they ran before their last upgrade.
    ///
    /// Sends MachineService/Rollback to every target node (-n); the node reboots into the version
    /// it ran before, and `NODE: rollback requested, rebooting into the previous version` is
    /// printed for it. The exit status is non-zero when any node failed, for example one that has no
    /// previous version.
    #[command(after_help = cmd::upgrade::ROLLBACK_EXAMPLES)]
    Rollback(cmd::upgrade::RollbackArgs),

    /// Bootstrap the etcd cluster on one control-plane node.
    ///
    /// Sends MachineService/Bootstrap to exactly one node (-n): its etcd, which waits until then,
    /// starts a new single-member cluster. Run it once per cluster, after `apply-config` on the
    /// first control-plane node; a node whose etcd already has data refuses (AlreadyExists).
    /// Nothing is printed on success. Recovering from an etcd snapshot (upstream's
    /// --recover-from) is not supported yet.
    Bootstrap,

    /// Inspect and back up the etcd cluster of control-plane nodes.
    #[command(after_help = cmd::etcd::ETCD_EXAMPLES)]
    Etcd(cmd::etcd::EtcdArgs),

    /// Write or delete keys in the META partition of nodes' system disks.
    #[command(after_help = cmd::meta::META_EXAMPLES)]
    Meta(cmd::meta::MetaArgs),

    /// Work with Talos disk images on this machine.
    Image(cmd::image::ImageArgs),

    /// Print the hostname of nodes.
    Hostname,

    /// Generate secrets, machine configurations and talosconfig offline.
    Gen(cmd::r#gen::GenArgs),

    /// Patch machine config files offline.
    #[command(name = "machineconfig", visible_alias = "mc")]
    MachineConfig(cmd::machineconfig::MachineConfigArgs),

    /// Check a machine config file for a runtime mode; exits non-zero listing every problem.
    Validate(cmd::validate::ValidateArgs),

    /// Edit and inspect the talosconfig file (contexts, endpoints, nodes).
    Config(cmd::config::ConfigArgs),

    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    ///
    /// Example: `talosctl completion bash > /etc/bash_completion.d/talosctl`.
    Completion {
        /// The shell to generate the script for.
        #[arg(value_enum)]
        shell: Shell,
    },
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let global = &cli.global;
    match cli.command {
        Command::Version(args) => cmd::version::run(global, args).await,
        Command::ApplyConfig(args) => cmd::apply::run(global, args).await,
        Command::Dmesg(args) => cmd::dmesg::run(global, args).await,
        Command::Memory(args) => cmd::memory::run(global, args).await,
        Command::Service(args) => cmd::service::run(global, args).await,
        Command::Logs(args) => cmd::logs::run(global, args).await,
        Command::Events(args) => cmd::events::run(global, args).await,
        Command::Read(args) => cmd::read::run(global, args).await,
        Command::List(args) => cmd::list::run(global, args).await,
        Command::Copy(args) => cmd::copy::run(global, args).await,
        Command::Kubeconfig(args) => cmd::kubeconfig::run(global, args).await,
        Command::Processes(args) => cmd::processes::run(global, args).await,
        Command::Mounts(args) => cmd::mounts::run(global, args).await,
        Command::Time(args) => cmd::time::run(global, args).await,
        Command::Reset(args) => cmd::reset::run(global, args).await,
        Command::Reboot(args) => cmd::power::reboot(global, args).await,
        Command::Shutdown(args) => cmd::power::shutdown(global, args).await,
        Command::Upgrade(args) => cmd::upgrade::upgrade(global, args).await,
        Command::Rollback(args) => cmd::upgrade::rollback(global, args).await,
        Command::Bootstrap => cmd::bootstrap::run(global).await,
        Command::Etcd(args) => cmd::etcd::run(global, args).await,
        Command::Meta(args) => cmd::meta::run(global, args).await,
        Command::Image(args) => cmd::image::run(args),
        Command::Hostname => cmd::hostname::run(global).await,
        Command::Gen(args) => cmd::r#gen::run(args),
        Command::MachineConfig(args) => cmd::machineconfig::run(args),
        Command::Validate(args) => cmd::validate::run(args),
        Command::Config(args) => cmd::config::run(global, args).await,
        Command::Completion { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "talosctl",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: starting the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_upstream_style_invocations() {
        let cli = Cli::try_parse_from([
            "talosctl",
            "apply",
            "--insecure",
            "-n",
            "10.0.0.2",
            "-f",
            "cp.yaml",
            "-m",
            "no-reboot",
        ])
        .unwrap();
        assert_eq!(cli.global.nodes, ["10.0.0.2"]);
        let Command::ApplyConfig(args) = cli.command else {
            panic!("expected apply-config");
        };
        assert!(args.insecure);
        assert_eq!(args.mode, cmd::apply::ApplyMode::NoReboot);

        let cli = Cli::try_parse_from(["talosctl", "free", "-n", "a,b", "-e", "c"]).unwrap();
        assert_eq!(cli.global.nodes, ["a", "b"]);
        assert_eq!(cli.global.endpoints, ["c"]);
        assert!(matches!(cli.command, Command::Memory(_)));

        let cli = Cli::try_parse_from(["talosctl", "services", "apid", "restart"]).unwrap();
        let Command::Service(args) = cli.command else {
            panic!("expected service");
        };
        assert_eq!(args.id.as_deref(), Some("apid"));
        assert_eq!(args.action, Some(cmd::service::ServiceAction::Restart));

        assert!(Cli::try_parse_from(["talosctl", "reboot", "-m", "sideways"]).is_err());

        let cli = Cli::try_parse_from([
            "talosctl", "mc", "patch", "w.yaml", "-p", "@a.yaml", "--patch", "b: 1", "-o", "out",
        ])
        .unwrap();
        let Command::MachineConfig(args) = cli.command else {
            panic!("expected machineconfig");
        };
        let cmd::machineconfig::MachineConfigCommand::Patch(patch) = args.command;
        assert_eq!(patch.patches, ["@a.yaml", "b: 1"]);
        assert!(Cli::try_parse_from(["talosctl", "machineconfig", "patch", "w.yaml"]).is_err());

        let cli = Cli::try_parse_from([
            "talosctl", "validate", "-c", "c.yaml", "-m", "cloud", "--strict",
        ])
        .unwrap();
        let Command::Validate(args) = cli.command else {
            panic!("expected validate");
        };
        assert_eq!(args.mode, cmd::validate::Mode::Cloud);
        assert!(args.strict);
        assert!(Cli::try_parse_from(["talosctl", "validate", "-c", "c", "-m", "vm"]).is_err());

        let cli = Cli::try_parse_from(["talosctl", "config", "endpoints", "a", "b"]).unwrap();
        let Command::Config(args) = cli.command else {
            panic!("expected config");
        };
        assert!(matches!(
            args.command,
            cmd::config::ConfigCommand::Endpoint { endpoints } if endpoints == ["a", "b"]
        ));
    }

    #[test]
    fn parses_upgrade_rollback_and_image_flash() {
        use std::time::Duration;

        use cmd::upgrade::UpgradeRebootMode;
        use output::OutputFormat;

        let cli = Cli::try_parse_from([
            "talosctl",
            "upgrade",
            "-n",
            "a,b",
            "--image",
            "ghcr.io/x/installer:v1",
            "--force",
            "--preserve",
            "--reboot-mode",
            "powercycle",
            "--wait",
            "--timeout",
            "90s",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.global.nodes, ["a", "b"]);
        let Command::Upgrade(args) = cli.command else {
            panic!("expected upgrade");
        };
        assert_eq!(args.image, "ghcr.io/x/installer:v1");
        assert!(!args.stage && args.force && args.preserve && args.wait);
        assert_eq!(args.reboot_mode, UpgradeRebootMode::Powercycle);
        assert_eq!(args.timeout, Duration::from_secs(90));
        assert_eq!(args.output, OutputFormat::Json);

        let cli = Cli::try_parse_from(["talosctl", "upgrade", "-i", "img"]).unwrap();
        let Command::Upgrade(args) = cli.command else {
            panic!("expected upgrade");
        };
        assert!(!(args.stage || args.force || args.preserve || args.wait));
        assert_eq!(args.reboot_mode, UpgradeRebootMode::Default);
        assert_eq!(args.timeout, Duration::from_secs(600));
        assert_eq!(args.output, OutputFormat::Table);

        let cli = Cli::try_parse_from(["talosctl", "upgrade", "-i", "img", "--stage"]).unwrap();
        let Command::Upgrade(args) = cli.command else {
            panic!("expected upgrade");
        };
        assert!(args.stage);

        for bad in [
            &["talosctl", "upgrade"][..],
            &["talosctl", "upgrade", "-i", "img", "--stage", "--wait"],
            &["talosctl", "upgrade", "-i", "img", "-m", "force"],
            &["talosctl", "upgrade", "-i", "img", "--timeout", "5m"],
            &[
                "talosctl",
                "upgrade",
                "-i",
                "img",
                "--wait",
                "--timeout",
                "soon",
            ],
            &["talosctl", "rollback", "now"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }

        let cli = Cli::try_parse_from(["talosctl", "rollback", "-n", "c", "-o", "yaml"]).unwrap();
        let Command::Rollback(args) = cli.command else {
            panic!("expected rollback");
        };
        assert_eq!(args.output, OutputFormat::Yaml);

        let cli = Cli::try_parse_from([
            "talosctl", "image", "flash", "t.raw", "--device", "/dev/sdb", "--force", "-y",
        ])
        .unwrap();
        let Command::Image(args) = cli.command else {
            panic!("expected image");
        };
        let cmd::image::ImageCommand::Flash(flash) = args.command;
        assert_eq!(flash.image, std::path::Path::new("t.raw"));
        assert_eq!(flash.device, std::path::Path::new("/dev/sdb"));
        assert!(flash.force && flash.yes);
        assert!(Cli::try_parse_from(["talosctl", "image", "flash", "t.raw"]).is_err());
        assert!(Cli::try_parse_from(["talosctl", "image", "flash", "--device", "d"]).is_err());
    }

    #[test]
    fn parses_day2_commands() {
        use std::time::Duration;

        use output::OutputFormat;

        let parse = |args: &[&str]| Cli::try_parse_from(args).unwrap().command;

        let Command::Logs(args) = parse(&["talosctl", "logs", "machined"]) else {
            panic!("expected logs");
        };
        assert_eq!(args.service, "machined");
        assert!(!(args.follow || args.kubernetes || args.insecure));
        assert_eq!(args.tail, -1);
        let Command::Logs(args) = parse(&[
            "talosctl", "-n", "a", "logs", "apid", "-f", "--tail", "20", "-k", "-i",
        ]) else {
            panic!("expected logs");
        };
        assert!(args.follow && args.kubernetes && args.insecure);
        assert_eq!(args.tail, 20);
        let Command::Logs(args) = parse(&["talosctl", "logs", "machined", "--tail", "-1"]) else {
            panic!("expected logs");
        };
        assert_eq!(args.tail, -1);

        let Command::Read(args) = parse(&["talosctl", "cat", "/proc/cpuinfo"]) else {
            panic!("expected read");
        };
        assert_eq!(args.path, "/proc/cpuinfo");

        let Command::List(args) = parse(&["talosctl", "ls"]) else {
            panic!("expected list");
        };
        assert_eq!(args.path, "/");
        assert_eq!(args.depth, 1);
        assert!(!(args.long || args.recurse || args.humanize));
        assert_eq!(args.output, OutputFormat::Table);
        let Command::List(args) = parse(&[
            "talosctl", "list", "/var", "-l", "-d", "3", "-H", "-t", "f,d", "-t", "l", "-o", "yaml",
        ]) else {
            panic!("expected list");
        };
        assert_eq!(args.path, "/var");
        assert!(args.long && args.humanize && !args.recurse);
        assert_eq!(args.depth, 3);
        assert_eq!(args.types, ["f", "d", "l"]);
        assert_eq!(args.output, OutputFormat::Yaml);
        let Command::List(args) = parse(&["talosctl", "ls", "-lr", "/etc"]) else {
            panic!("expected list");
        };
        assert!(args.long && args.recurse);

        for alias in ["processes", "ps", "p"] {
            let Command::Processes(args) = parse(&["talosctl", alias]) else {
                panic!("expected processes");
            };
            assert_eq!(args.sort, cmd::processes::SortBy::Rss);
        }
        let Command::Processes(args) = parse(&["talosctl", "ps", "-s", "cpu", "-o", "json"]) else {
            panic!("expected processes");
        };
        assert_eq!(args.sort, cmd::processes::SortBy::Cpu);
        assert_eq!(args.output, OutputFormat::Json);

        for alias in ["mounts", "mount"] {
            assert!(matches!(parse(&["talosctl", alias]), Command::Mounts(_)));
        }

        let Command::Time(args) = parse(&["talosctl", "time"]) else {
            panic!("expected time");
        };
        assert_eq!(args.check, None);
        let Command::Time(args) = parse(&["talosctl", "time", "--check", "pool.ntp.org"]) else {
            panic!("expected time");
        };
        assert_eq!(args.check.as_deref(), Some("pool.ntp.org"));

        let Command::Reset(args) = parse(&["talosctl", "reset"]) else {
            panic!("expected reset");
        };
        assert!(args.graceful && !args.reboot && !args.wait);
        assert!(args.system_labels_to_wipe.is_empty() && args.user_disks_to_wipe.is_empty());
        assert_eq!(args.wipe_mode, cmd::reset::WipeMode::All);
        assert_eq!(args.timeout, Duration::from_secs(1800));
        let Command::Reset(args) = parse(&[
            "talosctl",
            "reset",
            "--graceful=false",
            "--reboot",
            "--system-labels-to-wipe",
            "STATE,EPHEMERAL",
            "--user-disks-to-wipe",
            "/dev/sdb",
            "--wipe-mode",
            "system-disk",
            "--wait",
            "--timeout",
            "5m",
        ]) else {
            panic!("expected reset");
        };
        assert!(!args.graceful && args.reboot && args.wait);
        assert_eq!(args.system_labels_to_wipe, ["STATE", "EPHEMERAL"]);
        assert_eq!(args.user_disks_to_wipe, ["/dev/sdb"]);
        assert_eq!(args.wipe_mode, cmd::reset::WipeMode::SystemDisk);
        assert_eq!(args.timeout, Duration::from_secs(300));
        let Command::Reset(args) = parse(&["talosctl", "reset", "--reboot=true", "--wait=false"])
        else {
            panic!("expected reset");
        };
        assert!(args.reboot && !args.wait);

        for bad in [
            &["talosctl", "logs"][..],
            &["talosctl", "logs", "a", "b"],
            &["talosctl", "logs", "machined", "--tail", "many"],
            &["talosctl", "read"],
            &["talosctl", "read", "/a", "/b"],
            &["talosctl", "ls", "/a", "/b"],
            &["talosctl", "ls", "-d", "deep"],
            &["talosctl", "ps", "-s", "pid"],
            &["talosctl", "mounts", "/"],
            &["talosctl", "time", "--check"],
            &["talosctl", "time", "pool.ntp.org"],
            &["talosctl", "reset", "--wipe-mode", "everything"],
            &["talosctl", "reset", "--graceful=maybe"],
            &["talosctl", "reset", "--timeout", "soon"],
            &["talosctl", "reset", "now"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }
}
