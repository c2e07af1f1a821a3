//! `layerstore layers | images | containers`: list records, as a table for
//! people or, with `--json`, as containers/storage encodes them.

use clap::Args;
use layerstore::idmap::format_id_map;
use layerstore::Index;

use crate::output::{finish_listing, human_size, print_records, print_table, short_id};
use crate::GlobalArgs;

/// Flags shared by the listing commands.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON: the records with the keys of the store's own files.
    #[arg(long)]
    pub json: bool,
    /// Print full ids.
    #[arg(long)]
    pub no_trunc: bool,
}

/// `layerstore layers`.
pub fn layers(global: &GlobalArgs, args: &ListArgs) -> anyhow::Result<()> {
    let snap = global.open_store()?.snapshot()?;
    if args.json {
        print_records(&snap.layers)?;
        return finish_listing(&snap);
    }
    let ix = snap.index();
    let rows: Vec<Vec<String>> = snap
        .layers
        .iter()
        .map(|l| {
            vec![
                short_id(&l.id, args.no_trunc),
                l.names.join(","),
                short_id(&l.parent, args.no_trunc),
                human_size(l.diff_size),
                layer_state(&ix, l),
                l.created.0.format("%Y-%m-%d %H:%M:%S").to_string(),
            ]
        })
        .collect();
    print_table(
        &["ID", "NAMES", "PARENT", "SIZE", "STATE", "CREATED"],
        &rows,
    )?;
    finish_listing(&snap)
}

/// What a person wants to know about a layer at a glance.
fn layer_state(ix: &Index<'_>, layer: &layerstore::records::Layer) -> String {
    let mut words = Vec::new();
    if layer.is_incomplete() {
        words.push("incomplete".to_owned());
    }
    let users = ix.layer_users(&layer.id);
    if !users.top_of_images.is_empty() {
        words.push("image-top".to_owned());
    }
    if !users.mapped_for_images.is_empty() {
        words.push("mapped-copy".to_owned());
    } else if layer.is_mapped() {
        words.push("mapped".to_owned());
    }
    if !users.containers.is_empty() {
        words.push("container".to_owned());
    }
    if let Some(m) = ix.mount_of(&layer.id) {
        words.push(format!("mounted({})", m.count));
    }
    if layer.volatile {
        words.push("volatile".to_owned());
    }
    words.join(",")
}

/// `layerstore images`.
pub fn images(global: &GlobalArgs, args: &ListArgs) -> anyhow::Result<()> {
    let snap = global.open_store()?.snapshot()?;
    if args.json {
        print_records(&snap.images)?;
        return finish_listing(&snap);
    }
    let ix = snap.index();
    let rows: Vec<Vec<String>> = snap
        .images
        .iter()
        .map(|i| {
            // A chain that cannot be followed (a missing layer: a defect,
            // reported after the table) has no size to show.
            let size = ix
                .layer_chain(&i.top_layer)
                .map(|chain| human_size(chain.iter().map(|l| l.diff_size).sum()))
                .unwrap_or_else(|_| "?".to_owned());
            vec![
                short_id(&i.id, args.no_trunc),
                i.names.join(","),
                short_id(&i.top_layer, args.no_trunc),
                i.mapped_layers.len().to_string(),
                size,
                i.created.0.format("%Y-%m-%d %H:%M:%S").to_string(),
            ]
        })
        .collect();
    print_table(
        &["ID", "NAMES", "TOP LAYER", "MAPPED", "SIZE", "CREATED"],
        &rows,
    )?;
    finish_listing(&snap)
}

/// `layerstore containers`.
pub fn containers(global: &GlobalArgs, args: &ListArgs) -> anyhow::Result<()> {
    let snap = global.open_store()?.snapshot()?;
    if args.json {
        print_records(&snap.containers)?;
        return finish_listing(&snap);
    }
    let ix = snap.index();
    let rows: Vec<Vec<String>> = snap
        .containers
        .iter()
        .map(|c| {
            let image = ix
                .image(&c.image)
                .ok()
                .and_then(|i| i.names.first().cloned())
                .unwrap_or_else(|| short_id(&c.image, args.no_trunc));
            let maps = match (c.uidmap.is_empty(), c.gidmap.is_empty()) {
                (true, true) => "host".to_owned(),
                _ => format!(
                    "uid {} gid {}",
                    format_id_map(&c.uidmap),
                    format_id_map(&c.gidmap)
                ),
            };
            vec![
                short_id(&c.id, args.no_trunc),
                c.names.join(","),
                image,
                short_id(&c.layer, args.no_trunc),
                maps,
                c.created.0.format("%Y-%m-%d %H:%M:%S").to_string(),
            ]
        })
        .collect();
    print_table(
        &["ID", "NAMES", "IMAGE", "LAYER", "ID MAPS", "CREATED"],
        &rows,
    )?;
    finish_listing(&snap)
}
