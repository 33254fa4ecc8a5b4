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
}
