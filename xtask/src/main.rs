//! `cargo xtask`: build automation for talos-rs. Every task is one command on a fresh Debian 12
//! machine; `demo` and `test` install missing dependencies themselves.

mod bench;
mod bench_config;
mod boot;
mod cmd;
mod demo;
mod deps;
mod dtb;
mod fuzz;
mod gpiosim;
mod image;
mod kernel;
mod node_build;
mod paths;
mod qemu;
mod test;

use clap::{Parser, Subcommand};
use talos_machinery::Arch;

#[derive(Parser, Debug)]
#[command(name = "cargo xtask", about = "Build, boot and test talos-rs nodes", long_about = None)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand, Debug)]
enum Task {
    /// Install the Debian packages and kernels the build and tests need (idempotent: does
    /// nothing when everything is present).
    Deps,
    /// Cross-build the static machined binary for one architecture.
    Build {
        /// arm64 or amd64.
        #[arg(long, default_value = "arm64")]
        arch: Arch,
    },
    /// Build machined and pack the board's initramfs into out/<arch>/ next to the kernel.
    Image {
        #[arg(long, default_value = "arm64")]
        arch: Arch,
        /// A board under boards/ (default: the QEMU board of the architecture).
        #[arg(long)]
        board: Option<String>,
    },
    /// Boot a node under QEMU (TCG) with a free 127.0.0.1 port forwarded to its API, print
    /// the talosctl line to reach it, and stream its console until QEMU exits.
    Qemu {
        #[arg(long, default_value = "arm64")]
        arch: Arch,
        #[arg(long)]
        board: Option<String>,
        /// Extra kernel arguments, e.g. `talos.config=http://10.0.2.2:8080/cp.yaml`.
        #[arg(long = "append", value_name = "ARG")]
        append: Vec<String>,
        /// Keep the STATE disk from the previous run instead of starting from maintenance mode.
        #[arg(long)]
        keep_state: bool,
    },
    /// The whole story on arm64: build, image, boot, gen config, apply-config --insecure,
    /// version over mutual TLS, shutdown.
    Demo,
    /// What CI runs: dependencies, fmt, clippy, images for both architectures, all tests
    /// including the QEMU end-to-end tests on arm64 and amd64.
    Test,
    /// Kernel config checks.
    Kernel {
        #[command(subcommand)]
        action: KernelTask,
    },
    /// Compile our device-tree overlays into out/dtb/.
    Dtb,
    /// Fuzz config decoding and validation (cargo-fuzz on the nightly toolchain).
    Fuzz {
        /// How long to run.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Boot-time, size and config benchmarks, printed as tables.
    Bench {
        /// Boots per measurement; the table shows medians.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
}

#[derive(Subcommand, Debug)]
enum KernelTask {
    /// Report missing required options and hardening gaps (both Debian kernels by default).
    Check {
        /// A kernel .config to check instead of the Debian kernels'.
        #[arg(long)]
        config: Option<std::path::PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Deps => deps::ensure(),
        Task::Build { arch } => {
            deps::ensure_if_missing()?;
            let path = node_build::build(arch, "machined")?;
            eprintln!("{}", path.display());
            Ok(())
        }
        Task::Image { arch, board } => {
            deps::ensure_if_missing()?;
            image::build(arch, board.as_deref()).map(|_| ())
        }
        Task::Qemu {
            arch,
            board,
            append,
            keep_state,
        } => qemu::run(arch, board.as_deref(), append, keep_state),
        Task::Demo => demo::run(),
        Task::Test => test::run(),
        Task::Kernel {
            action: KernelTask::Check { config },
        } => kernel::check(config),
        Task::Dtb => dtb::build().map(|_| ()),
        Task::Fuzz { seconds } => fuzz::run(seconds),
        Task::Bench { runs } => bench::run(runs.max(1)),
    }
}
