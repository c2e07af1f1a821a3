//! `layerstore layers | images | containers`: list records, as a table for
//! people or, with `--json`, as containers/storage encodes them.

use clap::Args;
use layerstore::idmap::format_id_map;
use layerstore::Index;

use crate::output::{
    finish_listing, finish_listing_of, human_size, print_records, print_table, print_table_of,
    short_id,
};
use crate::GlobalArgs;

/// Flags of `layerstore images`.
#[derive(Debug, Args)]
pub struct ImageListArgs {
    #[command(flatten)]
    pub list: ListArgs,
    /// Add a SIZE column: the sum of the image's layers' recorded sizes.
    /// Reads layers.json too, which on a store of many layers costs far
    /// more than the listing.
    #[arg(long)]
    pub size: bool,
}

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
    let row = |i: usize| {
        let l = &snap.layers[i];
        vec![
            short_id(&l.id, args.no_trunc),
            l.names.join(","),
            short_id(&l.parent, args.no_trunc),
            human_size(l.diff_size),
            layer_state(&ix, l),
            l.created.0.format("%Y-%m-%d %H:%M:%S").to_string(),
        ]
    };
    print_table_of(
        &["ID", "NAMES", "PARENT", "SIZE", "STATE", "CREATED"],
        snap.layers.len(),
        row,
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

/// `layerstore images`: images.json alone unless `--size` asks for the
/// layers too.
pub fn images(global: &GlobalArgs, args: &ImageListArgs) -> anyhow::Result<()> {
    let store = global.open_store()?;
    if !args.size {
        let table = store.image_records()?;
        if args.list.json {
            print_records(&table.records)?;
        } else {
            let rows: Vec<Vec<String>> = table
                .records
                .iter()
                .map(|i| image_row(i, args.list.no_trunc, None))
                .collect();
            print_table(&["ID", "NAMES", "TOP LAYER", "MAPPED", "CREATED"], &rows)?;
        }
        return finish_listing_of(&table.defects);
    }
    let snap = store.snapshot()?;
    if args.list.json {
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
            image_row(i, args.list.no_trunc, Some(size))
        })
        .collect();
    print_table(&IMAGE_HEADER, &rows)?;
    finish_listing(&snap)
}

/// With `--size`, the columns of the listing before `images` read only
/// images.json (SIZE before CREATED).
const IMAGE_HEADER: [&str; 6] = ["ID", "NAMES", "TOP LAYER", "MAPPED", "SIZE", "CREATED"];

fn image_row(i: &layerstore::records::Image, no_trunc: bool, size: Option<String>) -> Vec<String> {
    let mut row = vec![
        short_id(&i.id, no_trunc),
        i.names.join(","),
        short_id(&i.top_layer, no_trunc),
        i.mapped_layers.len().to_string(),
    ];
    row.extend(size);
    row.push(i.created.0.format("%Y-%m-%d %H:%M:%S").to_string());
    row
}

/// `layerstore containers`: containers.json alone (the IMAGE column is
/// the image's id, as the record names it).
pub fn containers(global: &GlobalArgs, args: &ListArgs) -> anyhow::Result<()> {
    let table = global.open_store()?.container_records()?;
    if args.json {
        print_records(&table.records)?;
        return finish_listing_of(&table.defects);
    }
    let rows: Vec<Vec<String>> = table
        .records
        .iter()
        .map(|c| {
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
                short_id(&c.image, args.no_trunc),
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
    finish_listing_of(&table.defects)
}
