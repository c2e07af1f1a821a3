//! `layerstore doctor`: render [`layerstore_overlay::doctor::diagnose`] as a
//! table or JSON and exit 0 (all ok), 1 (warnings) or 2 (failures).

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use layerstore_overlay::doctor::{diagnose, DoctorOptions, Report, Status};
use serde_json::json;

use super::run::runtime_keyring_args;
use crate::output::{print_table, printable};
use crate::GlobalArgs;

/// Exit code of `doctor` when some check warns (and none fails).
pub const EXIT_DOCTOR_WARN: u8 = 1;
/// Exit code of `doctor` when some check fails. Also clap's code for a
/// usage error: a bad command line prints clap's usage message on stderr
/// and no report.
pub const EXIT_DOCTOR_FAIL: u8 = 2;

/// Flags of `doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print JSON: {"status", "exit_code", "checks": [{id, area, status, seen, why, fix, facts}]}.
    #[arg(long)]
    pub json: bool,
    /// Do not run the idmapped-mount probe (answer from its cache only).
    #[arg(long)]
    pub no_probe: bool,
}

/// The exit code for a report's worst status.
pub fn exit_code(status: Status) -> u8 {
    match status {
        Status::Ok => 0,
        Status::Warn => EXIT_DOCTOR_WARN,
        Status::Fail => EXIT_DOCTOR_FAIL,
    }
}

/// `layerstore doctor`.
pub fn run(global: &GlobalArgs, args: &DoctorArgs) -> anyhow::Result<ExitCode> {
    let (store, driver) = global.open_store_and_driver()?;
    let no_new_keyring = runtime_keyring_args(false).contains(&"--no-new-keyring");
    let mut options = DoctorOptions::new().launcher("layerstore run", no_new_keyring);
    options.probe = !args.no_probe;
    let mut report = diagnose(&store, &driver, &options);
    if crate::podman::find().is_some() {
        report.checks.extend(super::run::podman_mode_checks());
    }
    let code = exit_code(report.worst());
    if args.json {
        let value = json!({
            "status": report.worst(),
            "exit_code": code,
            "checks": report.checks,
        });
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
    } else {
        print_report(&report)?;
    }
    Ok(ExitCode::from(code))
}

fn print_report(report: &Report) -> anyhow::Result<()> {
    let rows: Vec<Vec<String>> = report
        .checks
        .iter()
        .map(|c| {
            vec![
                c.status.as_str().to_uppercase(),
                c.id.clone(),
                c.seen.clone(),
            ]
        })
        .collect();
    print_table(&["STATUS", "CHECK", "SEEN"], &rows)?;
    let mut out = std::io::stdout().lock();
    let problems: Vec<_> = report
        .checks
        .iter()
        .filter(|c| c.status != Status::Ok)
        .collect();
    if !problems.is_empty() {
        writeln!(out)?;
    }
    for c in problems {
        writeln!(
            out,
            "{} {}: {}",
            c.status.as_str().to_uppercase(),
            c.id,
            printable(&c.seen)
        )?;
        writeln!(out, "  why: {}", printable(&c.why))?;
        if let Some(fix) = &c.fix {
            writeln!(out, "  fix: {}", printable(fix))?;
        }
    }
    let counts = |s| report.checks.iter().filter(|c| c.status == s).count();
    writeln!(
        out,
        "\n{} ok, {} warn, {} fail (exit {})",
        counts(Status::Ok),
        counts(Status::Warn),
        counts(Status::Fail),
        exit_code(report.worst())
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_the_run_flag() {
        assert_eq!(exit_code(Status::Ok), 0);
        assert_eq!(exit_code(Status::Warn), 1);
        assert_eq!(exit_code(Status::Fail), 2);
        assert_eq!(runtime_keyring_args(false), ["--no-new-keyring"]);
        assert!(runtime_keyring_args(true).is_empty());
    }
}
