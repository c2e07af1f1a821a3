//! `storegen [--layers N] DIR`: write a containers/storage overlay store of
//! N layer records (default 1000; see `layerstore_benches::storegen`) into
//! DIR/graph and DIR/run, and print a one-line summary.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use layerstore_benches::storegen::{generate, Shape};

const USAGE: &str = "usage: storegen [--layers N] DIR";

fn parse() -> Result<(usize, PathBuf), String> {
    let mut layers = 1_000;
    let mut dir = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--layers" => {
                let n = args.next().ok_or("--layers needs a number")?;
                layers = n
                    .replace('_', "")
                    .parse()
                    .map_err(|e| format!("--layers {n}: {e}"))?;
            }
            "-h" | "--help" => return Err(String::new()),
            _ if arg.starts_with('-') => return Err(format!("unknown option {arg}")),
            _ if dir.is_none() => dir = Some(PathBuf::from(arg)),
            _ => return Err(format!("unexpected argument {arg}")),
        }
    }
    Ok((layers, dir.ok_or("DIR missing")?))
}

fn main() -> ExitCode {
    let (layers, dir) = match parse() {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("storegen: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let shape = Shape::from_layers(layers);
    let started = Instant::now();
    match generate(&dir, &shape) {
        Ok(g) => {
            println!(
                "storegen: {} layers, {} images ({} mapped copies each), {} containers in {} and {}; layers.json {:.1} MB; {:.1} s; image {}, container {}",
                g.layers,
                g.images,
                shape.mapped_per_image,
                g.containers,
                g.graph.display(),
                g.run.display(),
                g.layers_json_bytes as f64 / 1e6,
                started.elapsed().as_secs_f64(),
                g.image_name,
                g.container_name.as_deref().unwrap_or("-"),
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("storegen: {}: {err}", dir.display());
            ExitCode::FAILURE
        }
    }
}
