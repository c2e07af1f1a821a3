//! `layerstore info`: where the store is, how it is configured, and what it
//! holds.

use clap::Args;
use serde::Serialize;

use crate::GlobalArgs;

/// Flags of `info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `info` reports.
#[derive(Debug, Serialize)]
struct Info {
    graph_root: String,
    run_root: String,
    driver: String,
    driver_options: Vec<String>,
    config_file: Option<String>,
    rootless: bool,
    transient_store: bool,
    layers: usize,
    /// Layers listed in some image's `mapped-layers` (template copies).
    mapped_layers: usize,
    incomplete_layers: usize,
    images: usize,
    containers: usize,
    mounted_layers: usize,
    /// What makes the store's records untrustworthy (nothing changes it
    /// until they are fixed).
    defects: Vec<String>,
}

/// `layerstore info`.
pub fn run(global: &GlobalArgs, args: &InfoArgs) -> anyhow::Result<()> {
    let store = global.open_store()?;
    let snap = store.snapshot()?;
    let o = store.options();
    let info = Info {
        graph_root: o.graph_root.display().to_string(),
        run_root: o.run_root.display().to_string(),
        driver: o.driver.clone(),
        driver_options: o.driver_options.clone(),
        config_file: o.config_file.as_ref().map(|p| p.display().to_string()),
        rootless: o.rootless,
        transient_store: o.transient_store,
        layers: snap.layers.len(),
        mapped_layers: {
            let ix = snap.index();
            snap.layers
                .iter()
                .filter(|l| ix.is_mapped_copy(&l.id))
                .count()
        },
        incomplete_layers: snap.layers.iter().filter(|l| l.is_incomplete()).count(),
        images: snap.images.len(),
        containers: snap.containers.len(),
        mounted_layers: snap.mounts.iter().filter(|m| m.count > 0).count(),
        defects: snap.defects.iter().map(ToString::to_string).collect(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return crate::output::finish_listing(&snap);
    }
    println!("graphroot:          {}", info.graph_root);
    println!("runroot:            {}", info.run_root);
    println!("driver:             {}", info.driver);
    println!("driver options:     {}", info.driver_options.join(" "));
    println!(
        "config file:        {}",
        info.config_file
            .as_deref()
            .unwrap_or("(none, built-in defaults)")
    );
    println!("rootless:           {}", info.rootless);
    println!("transient store:    {}", info.transient_store);
    println!(
        "layers:             {} ({} mapped copies, {} incomplete)",
        info.layers, info.mapped_layers, info.incomplete_layers
    );
    println!("images:             {}", info.images);
    println!("containers:         {}", info.containers);
    println!("mounted layers:     {}", info.mounted_layers);
    println!("defects:            {}", info.defects.len());
    crate::output::finish_listing(&snap)
}
