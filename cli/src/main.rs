//! The `layerstore` command: parse, run, print the error chain once, exit.

use std::process::ExitCode;

use clap::Parser;
use layerstore_cli::{run, Cli, Command, EXIT_FAILURE};

fn main() -> ExitCode {
    // Run by podman as the OCI runtime shim (see docs/run.md).
    if let Some(code) = layerstore_cli::shim_main() {
        return code;
    }
    let cli = Cli::parse();
    // `run` sets up logging itself: its --log-level may follow `run`.
    if !matches!(cli.command, Command::Run(_)) {
        layerstore_cli::init_logging(&cli.global.log_level);
    }
    match run(&cli) {
        Ok(code) => code,
        Err(err) => {
            // Messages quote what records hold: no control characters
            // but the message's own line breaks.
            eprintln!(
                "error: {}",
                layerstore_cli::printable_lines(&format!("{err:#}"))
            );
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
