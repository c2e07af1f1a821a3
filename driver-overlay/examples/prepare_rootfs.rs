//! Prepare a container root filesystem for a new uid/gid mapping with the
//! engine API, show who owns a few files, and release it.
//!
//! ```text
//! cargo run -p layerstore-overlay --example prepare_rootfs -- \
//!     GRAPHROOT RUNROOT IMAGE UIDMAP GIDMAP [--nocache]
//! # e.g. /var/lib/containers/storage /run/containers/storage \
//! #      localhost/debian:latest 0:200000:65536:70000:270000:1 0:200000:65537
//! ```
//!
//! Runs as root. The mount is idmapped where the kernel allows it, so the
//! host sees host ids while a process in the mapping's user namespace sees
//! the image's own owners; nothing is copied.

use std::os::unix::fs::MetadataExt;

use layerstore::config::{Overrides, StoreOptions};
use layerstore::idmap::parse_id_map;
use layerstore_overlay::engine::{Engine, RootfsOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 5 {
        return Err(
            "usage: prepare_rootfs GRAPHROOT RUNROOT IMAGE UIDMAP GIDMAP [--nocache]".into(),
        );
    }
    let options = StoreOptions::load(&Overrides {
        root: Some(args[0].clone().into()),
        runroot: Some(args[1].clone().into()),
        storage_driver: Some("overlay".into()),
        ..Overrides::default()
    })?;
    let engine = Engine::open(options)?;
    let rootfs = engine.prepare(
        &args[2],
        &RootfsOptions {
            uidmap: parse_id_map(&args[3])?,
            gidmap: parse_id_map(&args[4])?,
            no_cache: args.get(5).is_some_and(|a| a == "--nocache"),
            ..RootfsOptions::default()
        },
    )?;
    println!(
        "container {} at {}",
        rootfs.container.id,
        rootfs.path.display()
    );
    for path in ["", "etc/passwd"] {
        let meta = std::fs::symlink_metadata(rootfs.path.join(path))?;
        println!("/{path}: {}:{} on the host", meta.uid(), meta.gid());
    }
    engine.release(&rootfs, true)?;
    println!("released");
    Ok(())
}
