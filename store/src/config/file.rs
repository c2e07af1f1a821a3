//! Reading one `storage.conf`: its TOML (keys matched case-insensitively,
//! as Go's decoder does), `STORAGE_DRIVER`/`STORAGE_OPTS`, and the flattening
//! of `[storage.options]` into c/storage's `<driver>.<key>=<value>` strings.

use std::fs;
use std::io;
use std::path::Path;

use serde::Deserialize;

use super::{ConfigError, Env, Settings};

pub(super) fn exists(path: &Path) -> Result<bool, ConfigError> {
    match fs::metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(ConfigError::Read {
            path: path.into(),
            source,
        }),
    }
}

/// The `storage.conf` keys we use. Unknown keys are ignored, as c/storage
/// does; empty strings mean "unset".
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TomlFile {
    storage: TomlStorage,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TomlStorage {
    driver: String,
    graphroot: String,
    runroot: String,
    rootless_storage_path: String,
    transient_store: bool,
    imagestore: String,
    options: TomlOptions,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TomlOptions {
    additionalimagestores: Vec<String>,
    additionallayerstores: Vec<String>,
    size: String,
    mount_program: String,
    mountopt: String,
    skip_mount_home: String,
    ignore_chown_errors: String,
    /// A Go `os.FileMode` here (an integer); a string in the overlay table.
    force_mask: u32,
    #[serde(rename = "root-auto-userns-user")]
    root_auto_userns_user: String,
    #[serde(rename = "auto-userns-min-size")]
    auto_userns_min_size: u32,
    #[serde(rename = "auto-userns-max-size")]
    auto_userns_max_size: u32,
    overlay: TomlOverlay,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TomlOverlay {
    ignore_chown_errors: String,
    mountopt: String,
    mount_program: String,
    size: String,
    inodes: String,
    skip_mount_home: String,
    force_mask: String,
}

pub(super) fn read_settings(env: &Env, path: &Path) -> Result<Settings, ConfigError> {
    let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    let file = parse_toml(&text).map_err(|message| ConfigError::Parse {
        path: path.into(),
        message,
    })?;
    tracing::debug!(path = %path.display(), "read storage configuration");
    Ok(settings_from(env, file.storage))
}

/// Parse, matching keys case-insensitively as Go's TOML decoder does.
fn parse_toml(text: &str) -> Result<TomlFile, String> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| {
        let message = one_line(e.message());
        match e.span() {
            Some(span) => {
                let before = text.get(..span.start).unwrap_or(text);
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!("line {line}, column {column}: {message}")
            }
            None => message,
        }
    })?;
    lowercase_keys(&mut table);
    // The value deserializer names the key (`in `storage.driver``).
    TomlFile::deserialize(toml::Value::Table(table)).map_err(|e| one_line(&e.to_string()))
}

fn one_line(text: &str) -> String {
    text.trim()
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
}

fn lowercase_keys(table: &mut toml::Table) {
    let mixed: Vec<String> = table
        .keys()
        .filter(|k| k.chars().any(char::is_uppercase))
        .cloned()
        .collect();
    for key in mixed {
        let lower = key.to_lowercase();
        if !table.contains_key(&lower) {
            if let Some(value) = table.remove(&key) {
                table.insert(lower, value);
            }
        }
    }
    for (_, value) in table.iter_mut() {
        if let toml::Value::Table(t) = value {
            lowercase_keys(t);
        }
    }
}

/// c/storage's `ReloadConfigurationFile`: the file's settings, with
/// `STORAGE_DRIVER` and `STORAGE_OPTS` applied.
fn settings_from(env: &Env, s: TomlStorage) -> Settings {
    let raw_driver = env.var("STORAGE_DRIVER").map_or(s.driver, str::to_owned);
    let driver = normalise_driver(&raw_driver);
    let mut driver_options = flatten_options(&raw_driver, &driver, &s.options);
    if let Some(opts) = env.vars.get("STORAGE_OPTS") {
        // Set but empty clears the options.
        driver_options = match opts.as_str() {
            "" => Vec::new(),
            opts => opts.split(',').map(String::from).collect(),
        };
    }
    Settings {
        driver,
        graph_root: s.graphroot.into(),
        run_root: s.runroot.into(),
        rootless_storage_path: s.rootless_storage_path,
        driver_options,
        transient_store: s.transient_store,
        image_store: s.imagestore,
        auto_userns: super::AutoSettings {
            user: s.options.root_auto_userns_user,
            min_size: s.options.auto_userns_min_size,
            max_size: s.options.auto_userns_max_size,
        },
    }
}

/// `[storage.options]` as `<driver>.<key>=<value>` strings, in c/storage's
/// order: the generic keys (prefixed with the driver as written), then for
/// overlay the `[storage.options.overlay]` keys, each falling back to the
/// generic one. Later entries win, so the overlay table takes precedence.
fn flatten_options(prefix: &str, driver: &str, o: &TomlOptions) -> Vec<String> {
    let mask = if o.force_mask == 0 {
        String::new()
    } else {
        format!("{:o}", o.force_mask)
    };
    let mut out: Vec<String> = Vec::new();
    let stores = o
        .additionalimagestores
        .iter()
        .map(|s| ("imagestore", s.as_str()));
    let layers = o
        .additionallayerstores
        .iter()
        .map(|s| ("additionallayerstore", s.as_str()));
    let generic: [(&str, &str); 6] = [
        ("size", o.size.as_str()),
        ("mount_program", &o.mount_program),
        ("skip_mount_home", &o.skip_mount_home),
        ("ignore_chown_errors", &o.ignore_chown_errors),
        ("force_mask", &mask),
        ("mountopt", &o.mountopt),
    ];
    for (key, value) in stores.chain(layers).chain(generic) {
        if !value.is_empty() {
            out.push(format!("{prefix}.{key}={value}"));
        }
    }
    if driver != "overlay" {
        return out;
    }
    let v = &o.overlay;
    let overlay: [(&str, &str, &str); 7] = [
        (
            "ignore_chown_errors",
            v.ignore_chown_errors.as_str(),
            o.ignore_chown_errors.as_str(),
        ),
        ("mount_program", &v.mount_program, &o.mount_program),
        ("mountopt", &v.mountopt, &o.mountopt),
        ("size", &v.size, &o.size),
        ("inodes", &v.inodes, ""),
        ("skip_mount_home", &v.skip_mount_home, &o.skip_mount_home),
        ("force_mask", &v.force_mask, &mask),
    ];
    for (key, own, generic) in overlay {
        let value = if own.is_empty() { generic } else { own };
        if !value.is_empty() {
            out.push(format!("overlay.{key}={value}"));
        }
    }
    out
}

pub(super) fn normalise_driver(driver: &str) -> String {
    if driver == "overlay2" {
        "overlay"
    } else {
        driver
    }
    .to_owned()
}

/// An option key as the overlay driver reads it: lower case, without an
/// `overlay.`, `overlay2.` or `.` prefix.
pub(super) fn option_key(key: &str) -> String {
    let key = key.trim().to_ascii_lowercase();
    let key = key.strip_prefix("overlay.").unwrap_or(&key);
    let key = key.strip_prefix("overlay2.").unwrap_or(key);
    key.strip_prefix('.').unwrap_or(key).to_owned()
}
