//! The `layerstore` command: parse, run, print the error chain once, exit.

use std::process::ExitCode;

use clap::Parser;
use layerstore_cli::{run, Cli, EXIT_FAILURE};

fn main() -> ExitCode {
    let cli = Cli::parse();
    layerstore_cli::init_logging(&cli.global.log_level);
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
