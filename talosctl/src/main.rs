//! talosctl: the command line for the Talos API (upstream-compatible commands and flags).

mod cmd;
mod files;
mod global;
mod output;

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
    #[command(visible_alias = "services")]
    Service(cmd::service::ServiceArgs),

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
        Command::Reboot(args) => cmd::power::reboot(global, args).await,
        Command::Shutdown(args) => cmd::power::shutdown(global, args).await,
        Command::Upgrade(args) => cmd::upgrade::upgrade(global, args).await,
        Command::Rollback(args) => cmd::upgrade::rollback(global, args).await,
        Command::Image(args) => cmd::image::run(args),
        Command::Hostname => cmd::hostname::run(global).await,
        Command::Gen(args) => cmd::r#gen::run(args),
        Command::MachineConfig(args) => cmd::machineconfig::run(args),
        Command::Validate(args) => cmd::validate::run(args),
        Command::Config(args) => cmd::config::run(global, args),
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
            "--stage",
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
        assert!(args.stage && args.force && args.preserve && args.wait);
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

        for bad in [
            &["talosctl", "upgrade"][..],
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
}
