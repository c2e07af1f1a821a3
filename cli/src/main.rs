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
            let text = format!("{err:#}");
            let lines: Vec<_> = text.split('\n').map(layerstore_cli::printable).collect();
            eprintln!("error: {}", lines.join("\n"));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
