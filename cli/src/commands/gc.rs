//! `layerstore gc`: reclaim orphaned mapped templates and store debris.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use clap::Args;
use layerstore::gc::{
    run_owner_of, GcOptions, GcReport, PodmanAnswer, PodmanContainers, PodmanUse,
};
use layerstore::StoreError;

use crate::output::{human_size, print_table, printable, short_id};
use crate::GlobalArgs;

/// Exit code when another gc holds the store's gc lock: nothing was done.
pub const EXIT_BUSY: u8 = 3;

/// Flags of `layerstore gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Only report what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: also measure what each action would free (walks
    /// every directory it would remove; slow on a large store). A run that
    /// removes always reports what it freed.
    #[arg(long)]
    pub size: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Skip candidates younger than this (record creation time, or mtime of
    /// debris): 0, 90s, 5m, 2h, 1d.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub min_age: Duration,
    /// Write node_exporter textfile metrics of this run to PATH (atomically).
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// Show full ids.
    #[arg(long)]
    pub no_trunc: bool,
    /// Remove unrecorded layer directories even when they are more than a
    /// quarter of the recorded layers (and more than 10). Never anything a
    /// record names, and never in a store with defects.
    #[arg(long)]
    pub force: bool,
}

/// Parse `0`, `90s`, `5m`, `2h`, `1d` (a number with an optional unit;
/// no unit means seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 0, 90s, 5m, 2h or 1d"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}: use s, m, h or d"
            ))
        }
    };
    n.checked_mul(scale)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// Run `layerstore gc`.
pub fn run(global: &GlobalArgs, args: &GcArgs) -> anyhow::Result<ExitCode> {
    if let Some(code) = rerun_in_user_namespace(global)? {
        return Ok(code);
    }
    let started = Instant::now();
    let result = collect(global, args);
    // When another gc is running, its metrics are the ones to keep.
    let busy = matches!(result, Ok(None));
    if let (Some(path), false) = (&args.metrics_file, busy) {
        let report = result.as_ref().ok().and_then(|r| r.as_ref());
        write_metrics(path, report, started.elapsed(), args.dry_run)
            .with_context(|| format!("writing metrics to {}", path.display()))?;
    }
    match result? {
        Some(report) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_report(&report, args.no_trunc)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("layerstore gc: another gc is running on this store; nothing done");
            Ok(ExitCode::from(EXIT_BUSY))
        }
    }
}

/// An ordinary user's store holds files owned by the user's subordinate
/// ids, which only podman's user namespace may remove: outside it, run
/// this very command again under `podman unshare` (as podman's own tools
/// do) and pass its exit code on. `None`: we are root, or already inside.
fn rerun_in_user_namespace(global: &GlobalArgs) -> anyhow::Result<Option<ExitCode>> {
    if rustix::process::geteuid().is_root()
        || std::env::var_os("_CONTAINERS_USERNS_CONFIGURED").is_some()
    {
        return Ok(None);
    }
    let Some(podman) = crate::podman::find() else {
        tracing::warn!(
            "podman is not on PATH: collecting outside podman's user namespace, \
             files owned by subordinate ids cannot be removed"
        );
        return Ok(None);
    };
    let exe = std::env::current_exe().context("finding the layerstore executable")?;
    // podman gets the same store flags, so that it opens this store (and
    // does not create the user's default one) while setting up.
    let mut cmd = std::process::Command::new(&podman);
    let status = cmd
        .args(crate::podman::store_flags(global))
        .arg("unshare")
        .arg(&exe)
        .args(std::env::args_os().skip(1))
        .status()
        .with_context(|| format!("running {} unshare", podman.display()))?;
    // 125-127: podman itself could not run us (no subordinate ids, say):
    // gc's own codes are 0, 1 and 3.
    if matches!(status.code(), Some(125..=127) | None) {
        anyhow::bail!(
            "{} unshare could not enter the user's podman user namespace ({status}); \
             its message is above",
            podman.display()
        );
    }
    let code = status.code().unwrap_or(crate::EXIT_FAILURE.into());
    Ok(Some(ExitCode::from(
        u8::try_from(code).unwrap_or(crate::EXIT_FAILURE),
    )))
}

/// podman's containers, asked only when some storage container `layerstore
/// run` handed podman has lost its run (after that was seen: see
/// [`PodmanContainers::dead_before`]).
fn ask_podman(global: &GlobalArgs, store: &layerstore::Store) -> PodmanAnswer {
    let Ok(snap) = store.snapshot() else {
        // gc itself reports what is wrong with the records.
        return PodmanAnswer::NotAsked;
    };
    let dead: HashSet<String> = snap
        .containers
        .iter()
        .filter(|c| PodmanUse::from_metadata(&c.metadata).is_some())
        .filter(|c| run_owner_of(c, &snap.layers).is_some_and(|o| !o.is_alive()))
        .map(|c| c.id.clone())
        .collect();
    if dead.is_empty() {
        return PodmanAnswer::NotAsked;
    }
    match crate::podman::containers(global) {
        Ok(mut view) => {
            for c in snap.containers.iter().filter(|c| dead.contains(&c.id)) {
                if let Some(user) = cidfile_user(store, c, &view) {
                    view.storage_users.entry(c.id.clone()).or_insert(user);
                }
            }
            PodmanAnswer::Answered(PodmanContainers {
                dead_before: dead,
                ..view
            })
        }
        Err(e) => {
            tracing::warn!(
                "asking podman which containers use the storage `layerstore run` handed it: {e:#}"
            );
            PodmanAnswer::Failed(format!("{e:#}"))
        }
    }
}

/// The podman container that podman's cidfile names for storage container
/// `c`, when its run died before it noted which (a foreground run killed
/// while podman ran) and that container still exists: listed, or its
/// directory in the graphroot. podman's answer alone does not do here: a
/// podman with another configuration (libpod namespace, database) lists
/// none of the containers of this store.
fn cidfile_user(
    store: &layerstore::Store,
    c: &layerstore::records::Container,
    view: &PodmanContainers,
) -> Option<String> {
    let marker = PodmanUse::from_metadata(&c.metadata)?;
    if !marker.container.is_empty() {
        return None;
    }
    let id = if marker.cidfile.is_empty() {
        let sid = layerstore::ContainerId::parse(&c.id).ok()?;
        super::run::podman::read_own_cidfile(store, &sid)?
    } else {
        super::run::podman::read_cidfile(Path::new(&marker.cidfile))?
    };
    (view.ids.contains(&id) || super::run::podman::podman_container_dir(store, &id).exists())
        .then_some(id)
}

/// The report, or `None` when another gc is running.
fn collect(global: &GlobalArgs, args: &GcArgs) -> anyhow::Result<Option<GcReport>> {
    let (store, driver) = global.open_store_and_driver()?;
    if !args.dry_run {
        // What killed runs left running or in their runtime's state goes
        // first, so that their storage is no longer in use.
        for id in super::run::reap_dead_runs(&store, &driver) {
            tracing::info!(container = %id, "removed what a dead or failed run left (processes, runtime state, cgroups)");
        }
    }
    let options = GcOptions {
        min_age: args.min_age,
        dry_run: args.dry_run,
        sizes: args.size,
        force: args.force,
        podman: ask_podman(global, &store),
        ..GcOptions::default()
    };
    match store.gc(&driver, &options) {
        Ok(report) => Ok(Some(report)),
        Err(StoreError::GcBusy { .. }) => Ok(None),
        Err(e @ StoreError::GcTooMuch { .. }) => Err(anyhow::Error::from(e)
            .context("layerstore gc --force removes them; nothing was changed")),
        Err(e) => Err(e).with_context(|| {
            format!(
                "collecting garbage in {}",
                store.options().graph_root.display()
            )
        }),
    }
}

fn print_report(report: &GcReport, full: bool) -> anyhow::Result<()> {
    let rows: Vec<Vec<String>> = report
        .done
        .iter()
        .map(|d| {
            vec![
                d.action.kind().to_owned(),
                short_id(d.action.subject(), full),
                d.bytes
                    .map_or_else(|| "-".to_owned(), |b| human_size(b as i64)),
                d.inodes.map_or_else(|| "-".to_owned(), |i| i.to_string()),
            ]
        })
        .collect();
    if !rows.is_empty() {
        print_table(&["KIND", "ID", "SIZE", "INODES"], &rows)?;
    }
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    for s in &report.skipped {
        writeln!(
            out,
            "kept {} {}: {}",
            s.kind,
            printable(&short_id(&s.id, full)),
            printable(&s.reason)
        )?;
    }
    let freed = match (report.bytes_freed, report.inodes_freed) {
        (Some(bytes), Some(inodes)) => format!(", {}, {inodes} inodes", human_size(bytes as i64)),
        _ => " (not measured: --size measures what they hold)".to_owned(),
    };
    writeln!(
        out,
        "{} {} layers{freed}{}",
        if report.dry_run {
            "would remove"
        } else {
            "removed"
        },
        report.layers_removed,
        if report.done.len() as u64 > report.layers_removed {
            format!(" ({} actions in all)", report.done.len())
        } else {
            String::new()
        }
    )?;
    out.flush()?;
    Ok(())
}

/// node_exporter textfile metrics, written to a temp file in the same
/// directory and renamed over `path`.
fn write_metrics(
    path: &Path,
    report: Option<&GcReport>,
    elapsed: Duration,
    dry_run: bool,
) -> anyhow::Result<()> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let mut text = String::new();
    let mut metric = |name: &str, help: &str, value: String| {
        let _ = writeln!(text, "# HELP layerstore_gc_{name} {help}");
        let _ = writeln!(text, "# TYPE layerstore_gc_{name} gauge");
        let _ = writeln!(text, "layerstore_gc_{name}{value}");
    };
    let success = u8::from(report.is_some());
    metric(
        "success",
        "Whether the last gc run succeeded (1) or failed (0).",
        format!(" {success}"),
    );
    metric(
        "dry_run",
        "Whether the last gc run was a dry run.",
        format!(" {}", u8::from(dry_run)),
    );
    metric(
        "last_run_timestamp_seconds",
        "When the last gc run ended (Unix time).",
        format!(" {now:.3}"),
    );
    metric(
        "duration_seconds",
        "How long the last gc run took.",
        format!(" {:.3}", elapsed.as_secs_f64()),
    );
    if let Some(r) = report {
        metric(
            "layers_removed",
            "Layers the last gc run removed (or would remove).",
            format!(" {}", r.layers_removed),
        );
        // A dry run without --size measured nothing: no gauge rather than 0.
        if let (Some(bytes), Some(inodes)) = (r.bytes_freed, r.inodes_freed) {
            metric(
                "bytes_freed",
                "Bytes the last gc run freed (or would free).",
                format!(" {bytes}"),
            );
            metric(
                "inodes_freed",
                "Inodes the last gc run freed (or would free).",
                format!(" {inodes}"),
            );
        }
        metric(
            "skipped",
            "Candidates the last gc run left alone.",
            format!(" {}", r.skipped.len()),
        );
        let mut kinds: Vec<&str> = r.done.iter().map(|d| d.action.kind()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        let _ = writeln!(
            text,
            "# HELP layerstore_gc_actions Actions of the last gc run, by kind."
        );
        let _ = writeln!(text, "# TYPE layerstore_gc_actions gauge");
        for kind in kinds {
            let n = r.done.iter().filter(|d| d.action.kind() == kind).count();
            let _ = writeln!(text, "layerstore_gc_actions{{kind=\"{kind}\"}} {n}");
        }
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".layerstore-gc-metrics")
        .tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    tmp.persist(path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn metrics_are_written_atomically_in_textfile_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gc.prom");
        let report = GcReport {
            layers_removed: 3,
            bytes_freed: Some(1000),
            inodes_freed: Some(42),
            ..GcReport::default()
        };
        write_metrics(&path, Some(&report), Duration::from_millis(1500), false).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("layerstore_gc_layers_removed 3\n"), "{text}");
        assert!(text.contains("layerstore_gc_inodes_freed 42\n"));
        assert!(text.contains("layerstore_gc_success 1\n"));
        assert!(text.contains("layerstore_gc_duration_seconds 1.500\n"));
        // A dry run that measured nothing says nothing of bytes or inodes.
        let unmeasured = GcReport {
            dry_run: true,
            layers_removed: 3,
            ..GcReport::default()
        };
        write_metrics(&path, Some(&unmeasured), Duration::ZERO, true).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("layerstore_gc_layers_removed 3\n"), "{text}");
        assert!(!text.contains("freed"), "{text}");
        write_metrics(&path, None, Duration::ZERO, false).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("layerstore_gc_success 0\n"));
        assert!(!text.contains("layers_removed"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
