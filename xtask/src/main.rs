//! `cargo xtask`: build automation for talos-rs. Every task is one command on a fresh Debian 12
//! machine; `demo` and `test` install missing dependencies themselves.

mod artifacts;
mod bench;
mod bench_config;
mod bench_images;
mod bench_upgrade;
mod boot;
mod cmd;
mod demo;
mod deps;
mod disk;
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
    /// Build machined and pack the board's initramfs into out/<arch>/ next to the kernel;
    /// with --disk, also the raw disk image out/images/<board>-<boot chain>/metal-<arch>.raw.
    Image {
        #[arg(long, default_value = "arm64")]
        arch: Arch,
        /// A board under boards/ (default: the QEMU board of the architecture).
        #[arg(long)]
        board: Option<String>,
        /// Build the GPT disk image (EFI with A/B slots, META; the node adds STATE and EPHEMERAL).
        #[arg(long)]
        disk: bool,
        /// The boot chain of the disk image, e.g. u-boot or uefi (default: the board's first).
        #[arg(long, requires = "disk")]
        firmware: Option<String>,
        /// The OS version the image reports.
        #[arg(long, default_value = image::DEFAULT_VERSION)]
        version: String,
        /// Also write metal-<arch>.raw.xz.
        #[arg(long, requires = "disk")]
        xz: bool,
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
    /// Build only what the QEMU tests boot (images, disk images, installers), so
    /// `TALOS_RS_OUT=out cargo test -p talos-hil` can run on its own.
    TestInputs,
    /// Write an installer image (OCI layout) for upgrades to out/installers/<arch>/<version>/.
    Installer {
        #[arg(long, default_value = "arm64")]
        arch: Arch,
        #[arg(long)]
        board: Option<String>,
        /// The OS version the installed system reports.
        #[arg(long, default_value = image::DEFAULT_VERSION)]
        version: String,
    },
    /// Kernel config checks.
    Kernel {
        #[command(subcommand)]
        action: KernelTask,
    },
    /// Compile our device-tree overlays into out/dtb/.
    Dtb,
    /// Fuzz config decoding and validation, and device-tree parsing and overlays (cargo-fuzz
    /// on the nightly toolchain).
    Fuzz {
        /// How long to run each target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Boot-time, size and config benchmarks, printed as tables.
    Bench {
        /// Boots per measurement; the table shows medians.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Only the config benchmarks (decode+validate, gen config, hostile documents): seconds
        /// instead of the tens of minutes the QEMU benchmarks take.
        #[arg(long)]
        config_only: bool,
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
        Task::Image {
            arch,
            board,
            disk,
            firmware,
            version,
            xz,
        } => {
            deps::ensure_if_missing()?;
            if !disk {
                return image::build(arch, board.as_deref()).map(|_| ());
            }
            let board = talos_boards::find(
                &paths::boards(),
                board.as_deref().unwrap_or(paths::default_board(arch)),
            )?;
            let system = disk::system(&board, &version)?;
            let image = disk::build(&board, firmware.as_deref(), &system)?;
            if xz {
                let compressed = disk::compress(&image.path)?;
                eprintln!("{}", compressed.display());
            }
            Ok(())
        }
        Task::Qemu {
            arch,
            board,
            append,
            keep_state,
        } => qemu::run(arch, board.as_deref(), append, keep_state),
        Task::Demo => demo::run(),
        Task::Test => test::run(),
        Task::TestInputs => {
            deps::ensure_if_missing()?;
            test::inputs()
        }
        Task::Installer {
            arch,
            board,
            version,
        } => {
            deps::ensure_if_missing()?;
            let board = talos_boards::find(
                &paths::boards(),
                board.as_deref().unwrap_or(paths::default_board(arch)),
            )?;
            let system = disk::system(&board, &version)?;
            disk::installer(board.arch, &system, false).map(|_| ())
        }
        Task::Kernel {
            action: KernelTask::Check { config },
        } => kernel::check(config),
        Task::Dtb => dtb::build().map(|_| ()),
        Task::Fuzz { seconds } => fuzz::run(seconds),
        Task::Bench { runs, config_only } => {
            if config_only {
                bench::print_config()
            } else {
                bench::run(runs.max(1))
            }
        }
    }
}
