//! Make an ID-mapped template copy of a layer the way containers/storage
//! v1.43 does for a new mapping, with our driver: create a driver-level
//! child of TEMPLATE and run `update_layer_id_map` on it. Only the driver
//! directory is made (no layers.json record): for timing against
//! `containers-storage create-container` (scripts/bench/chown-vs-containers-storage.sh).
//!
//! ```text
//! template GRAPHROOT RUNROOT TEMPLATE-ID NEW-ID UIDMAP GIDMAP
//! ```
//! Maps in podman syntax (`0:200000:1000:1000:1000:1:...`). Prints the
//! entries visited and changed and the seconds taken.

use std::process::ExitCode;
use std::time::Instant;

use layerstore::config::StoreOptions;
use layerstore::idmap::{parse_id_map, root_pair, IdMappings};
use layerstore::LayerId;
use layerstore_overlay::layout::OverlayDriver;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, graph, run, template, id, uidmap, gidmap] = args.as_slice() else {
        eprintln!("usage: template GRAPHROOT RUNROOT TEMPLATE-ID NEW-ID UIDMAP GIDMAP");
        return ExitCode::from(2);
    };
    match run_template(graph, run, template, id, uidmap, gidmap) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn run_template(
    graph: &str,
    run: &str,
    template: &str,
    id: &str,
    uidmap: &str,
    gidmap: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let driver = OverlayDriver::new(&StoreOptions {
        graph_root: graph.into(),
        run_root: run.into(),
        driver: "overlay".into(),
        driver_options: vec!["overlay.mountopt=nodev".into()],
        ..Default::default()
    })?;
    let maps = IdMappings {
        uids: parse_id_map(uidmap)?,
        gids: parse_id_map(gidmap)?,
    };
    let (id, template) = (LayerId::parse(id)?, LayerId::parse(template)?);
    driver.create_layer(&id, Some(&template), root_pair(&maps.uids, &maps.gids)?)?;
    let report = driver.update_layer_id_map(&id, &IdMappings::default(), &maps, None)?;
    println!(
        "entries {} changed {} seconds {:.3}",
        report.entries,
        report.changed,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
