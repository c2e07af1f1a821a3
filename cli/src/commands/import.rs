//! `layerstore import SOURCE [NAME]`: import an image from a docker
//! archive, an OCI archive or layout, or a plain rootfs tarball.

use std::io::IsTerminal;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use layerstore_overlay::import::{import_image, ImportProgress, NoProgress, Source};

use crate::GlobalArgs;

/// Flags of `import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// docker-archive:PATH, oci-archive:PATH, oci:DIR[:REF], or a rootfs tarball (plain, gzip or zstd).
    pub source: String,
    /// Name for the image (`localhost/` and `:latest` are added as podman does).
    pub name: Option<String>,
    /// Print only the image id; no progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Print the import report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A progress bar over the bytes of each layer, on stderr.
struct Bar(ProgressBar);

impl ImportProgress for Bar {
    fn start_layer(&self, index: usize, count: usize, bytes: u64) {
        self.0.reset();
        self.0.set_length(bytes);
        self.0.set_message(format!("layer {}/{count}", index + 1));
    }
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
    fn finish_layer(&self, reused: bool) {
        if reused {
            self.0.set_message("already present");
        }
    }
}

/// `layerstore import`.
pub fn run(global: &GlobalArgs, args: &ImportArgs) -> anyhow::Result<()> {
    let (store, driver) = global.open_store_and_driver()?;
    let source = Source::parse(&args.source);
    let names: Vec<String> = args.name.iter().cloned().collect();
    let bar = (!args.quiet && !args.json && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(0);
        if let Ok(style) = ProgressStyle::with_template(
            "{msg:>12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        Bar(bar)
    });
    let progress: &dyn ImportProgress = match &bar {
        Some(b) => b,
        None => &NoProgress,
    };
    let report = import_image(&store, &driver, &source, &names, progress);
    if let Some(b) = &bar {
        b.0.finish_and_clear();
    }
    let report =
        report.map_err(|e| anyhow::Error::new(e).context(format!("importing {}", args.source)))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if !args.quiet {
            let reused = report.layers.iter().filter(|l| l.reused).count();
            eprintln!(
                "imported {} layer(s) ({reused} already present){}",
                report.layers.len(),
                if report.names.is_empty() {
                    String::new()
                } else {
                    format!(" as {}", crate::output::printable(&report.names.join(", ")))
                }
            );
        }
        println!("{}", report.image_id);
    }
    Ok(())
}
