//! The `layerstore` command line: global flags that follow podman's, one
//! module per command, each a short adapter over the `layerstore` library.
//!
//! Exit codes: 0 success, 1 failure (the store, a file or an argument was
//! bad; the message names it), 2 usage error (from argument parsing), 3
//! (`gc` only) another gc is running on the store, nothing was done.
//! `run` exits with the command's code (125-127 for its own failures);
//! `doctor` exits 0 (all ok), 1 (warnings) or 2 (failures).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use layerstore::config::{Overrides, StoreOptions};
use layerstore::Store;
use layerstore_overlay::layout::OverlayDriver;

mod commands;
mod output;
mod podman;

pub use commands::run::shim_main;
pub use output::{printable, printable_lines};

/// Exit code for a failed command.
pub const EXIT_FAILURE: u8 = 1;

/// layerstore: a layer store that shares podman's containers/storage store.
#[derive(Debug, Parser)]
#[command(name = "layerstore", version, about, propagate_version = true)]
pub struct Cli {
    /// Flags that select the store, as podman's.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Global flags, named as podman names them.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Graphroot of the store (podman's --root).
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Runroot of the store (podman's --runroot).
    #[arg(long, global = true, value_name = "DIR")]
    pub runroot: Option<PathBuf>,
    /// Storage driver; only overlay is supported.
    #[arg(long, global = true, value_name = "NAME")]
    pub storage_driver: Option<String>,
    /// Storage driver option (repeatable; replaces storage.conf's options).
    #[arg(long, global = true, value_name = "K=V")]
    pub storage_opt: Vec<String>,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "warn", value_name = "LEVEL")]
    pub log_level: String,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the store's configuration, paths and record counts.
    Info(commands::info::InfoArgs),
    /// List layers.
    Layers(commands::list::ListArgs),
    /// List images.
    Images(commands::list::ImageListArgs),
    /// List containers.
    Containers(commands::list::ListArgs),
    /// Import an image from a docker or OCI archive, an OCI layout or a
    /// rootfs tarball.
    #[command(
        about = "Import an image: docker-archive:PATH, oci-archive:PATH, oci:DIR[:REF] or a rootfs tarball."
    )]
    Import(commands::import::ImportArgs),
    /// Remove images (and the layers only they use).
    Rmi(commands::containers::RemoveArgs),
    /// Create a container (record and read-write layer) from an image.
    Create(commands::containers::CreateArgs),
    /// Mount a container or layer and print the mount point.
    Mount(commands::containers::MountArgs),
    /// Unmount a container or layer.
    Umount(commands::containers::UmountArgs),
    /// Remove containers.
    Rm(commands::containers::RmArgs),
    /// Run a command in a new container of an image (podman-run-like; exits
    /// with the command's exit code, 125-127 for failures to run it).
    Run(commands::run::RunCommand),
    /// The precreate OCI hook podman runs for `layerstore run`'s containers
    /// (refuses a start while the root filesystem is not mounted).
    OciHook(commands::oci_hook::OciHookArgs),
    /// Mount again the root filesystems `run` handed to podman whose podman
    /// containers still exist (at boot, before podman starts them).
    Remount(commands::remount::RemountArgs),
    /// Check the host and the store: key quotas, inodes, idmapped mounts,
    /// kernel bugs, records vs directories (exit 0 ok, 1 warnings, 2 failures).
    Doctor(commands::doctor::DoctorArgs),
    /// Reclaim orphaned mapped templates and store debris (see docs/gc.md).
    Gc(commands::gc::GcArgs),
}

/// Set up logging to stderr at `level`.
pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Plain text, control characters escaped: log fields quote names from
    // the store, and a colour code could not be told from one of theirs.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| output::LogWriter)
        .with_ansi(false)
        .init();
}

impl GlobalArgs {
    /// Resolve the store options from storage.conf and these flags.
    pub fn store_options(&self) -> anyhow::Result<StoreOptions> {
        let overrides = Overrides {
            root: self.root.clone(),
            runroot: self.runroot.clone(),
            storage_driver: self.storage_driver.clone(),
            storage_opts: self.storage_opt.clone(),
        };
        Ok(StoreOptions::load(&overrides)?)
    }

    /// Open the store and its overlay driver.
    pub fn open_store_and_driver(&self) -> anyhow::Result<(Store, OverlayDriver)> {
        let store = self.open_store()?;
        let driver = OverlayDriver::new(store.options()).with_context(|| {
            format!(
                "opening the overlay driver of {}",
                store.options().graph_root.display()
            )
        })?;
        Ok((store, driver))
    }

    /// Open the store these flags select.
    pub fn open_store(&self) -> anyhow::Result<Store> {
        let options = self.store_options()?;
        let root = options.graph_root.clone();
        Store::open(options).with_context(|| format!("opening the store at {}", root.display()))
    }
}

/// Run a parsed command line.
pub fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Run(args) => return Ok(commands::run::run(&cli.global, args)),
        Command::Doctor(args) => return commands::doctor::run(&cli.global, args),
        Command::OciHook(args) => commands::oci_hook::run(args),
        Command::Remount(args) => return commands::remount::run(&cli.global, args),
        Command::Info(args) => commands::info::run(&cli.global, args),
        Command::Layers(args) => commands::list::layers(&cli.global, args),
        Command::Images(args) => commands::list::images(&cli.global, args),
        Command::Containers(args) => commands::list::containers(&cli.global, args),
        Command::Import(args) => commands::import::run(&cli.global, args),
        Command::Rmi(args) => commands::containers::rmi(&cli.global, args),
        Command::Create(args) => commands::containers::create(&cli.global, args),
        Command::Mount(args) => commands::containers::mount(&cli.global, args),
        Command::Umount(args) => commands::containers::umount(&cli.global, args),
        Command::Rm(args) => commands::containers::rm(&cli.global, args),
        // gc has its own exit codes (3: another gc runs).
        Command::Gc(args) => return commands::gc::run(&cli.global, args),
    }?;
    Ok(ExitCode::SUCCESS)
}
