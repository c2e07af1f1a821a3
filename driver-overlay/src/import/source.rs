//! Where an image comes from: `docker-archive:PATH`, `oci-archive:PATH`,
//! `oci:DIR[:REF]`, or a plain rootfs tarball (as `podman import` takes).
//! Archives are indexed once and their members read in place (seek and
//! length), so memory does not grow with image size.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageIndex, ImageManifest};
use serde::Deserialize;

use super::ImportError;

/// Largest config or manifest read into memory.
const MAX_METADATA: u64 = 16 << 20;

/// An image source named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `docker save` output.
    DockerArchive(PathBuf),
    /// A tar of an OCI image layout.
    OciArchive(PathBuf),
    /// An OCI image layout directory, optionally with a reference name.
    OciDir {
        /// The layout directory.
        dir: PathBuf,
        /// `org.opencontainers.image.ref.name` to pick from the index.
        reference: Option<String>,
    },
    /// A (possibly compressed) tarball of a root filesystem.
    Tarball(PathBuf),
}

impl Source {
    /// Parse `TRANSPORT:PATH` or a plain path.
    pub fn parse(text: &str) -> Source {
        if let Some(p) = text.strip_prefix("docker-archive:") {
            return Source::DockerArchive(p.into());
        }
        if let Some(p) = text.strip_prefix("oci-archive:") {
            return Source::OciArchive(p.into());
        }
        if let Some(rest) = text.strip_prefix("oci:") {
            return match rest.rsplit_once(':') {
                Some((dir, reference)) if !reference.contains('/') => Source::OciDir {
                    dir: dir.into(),
                    reference: Some(reference.to_owned()),
                },
                _ => Source::OciDir {
                    dir: rest.into(),
                    reference: None,
                },
            };
        }
        Source::Tarball(text.into())
    }
}

/// Where a blob's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Blob {
    /// A whole file.
    File(PathBuf),
    /// A member of a tar archive: the content's offset and size.
    Member {
        archive: PathBuf,
        name: String,
        offset: u64,
        size: u64,
    },
}

impl Blob {
    pub(crate) fn open(&self) -> Result<Box<dyn Read>, ImportError> {
        match self {
            Blob::File(path) => {
                let f = File::open(path).map_err(ImportError::io("opening", path))?;
                Ok(Box::new(f))
            }
            Blob::Member {
                archive,
                offset,
                size,
                ..
            } => {
                let mut f = File::open(archive).map_err(ImportError::io("opening", archive))?;
                f.seek(SeekFrom::Start(*offset))
                    .map_err(ImportError::io("reading", archive))?;
                Ok(Box::new(f.take(*size)))
            }
        }
    }

    pub(crate) fn size(&self) -> u64 {
        match self {
            Blob::File(p) => std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
            Blob::Member { size, .. } => *size,
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Blob::File(p) => p.display().to_string(),
            Blob::Member { archive, name, .. } => format!("{}:{name}", archive.display()),
        }
    }

    /// Read a small blob (config, manifest) whole.
    pub(crate) fn read_small(&self) -> Result<Vec<u8>, ImportError> {
        if self.size() > MAX_METADATA {
            return Err(ImportError::Malformed {
                source_name: self.describe(),
                reason: format!("larger than {MAX_METADATA} bytes"),
            });
        }
        let mut out = Vec::new();
        self.open()?
            .read_to_end(&mut out)
            .map_err(|e| ImportError::Io {
                op: "reading",
                path: self.describe().into(),
                source: e,
            })?;
        Ok(out)
    }
}

/// One layer to import.
#[derive(Debug, Clone)]
pub(crate) struct LayerBlob {
    pub(crate) blob: Blob,
    /// The digest the manifest promises for the blob, if any.
    pub(crate) digest: Option<String>,
}

/// What a source holds, before any of it is imported.
#[derive(Debug, Clone, Default)]
pub(crate) struct ImageParts {
    /// The image config as stored (None: a tarball, we make one).
    pub(crate) config: Option<Vec<u8>>,
    /// The manifest as stored (None: we make one).
    pub(crate) manifest: Option<Vec<u8>>,
    pub(crate) layers: Vec<LayerBlob>,
    /// Names the source carries (docker-archive `RepoTags`).
    pub(crate) tags: Vec<String>,
}

impl Source {
    /// Read what the source holds (metadata only; layers stay where they are).
    pub(crate) fn parts(&self) -> Result<ImageParts, ImportError> {
        match self {
            Source::DockerArchive(p) => docker_archive(p),
            Source::OciArchive(p) => {
                let index = TarIndex::read(p)?;
                oci_layout(&|name: &str| index.blob(name), None)
            }
            Source::OciDir { dir, reference } => oci_dir(dir, reference.as_deref()),
            Source::Tarball(p) => {
                std::fs::metadata(p).map_err(ImportError::io("opening", p))?;
                Ok(ImageParts {
                    layers: vec![LayerBlob {
                        blob: Blob::File(p.clone()),
                        digest: None,
                    }],
                    ..ImageParts::default()
                })
            }
        }
    }
}

fn oci_dir(dir: &Path, reference: Option<&str>) -> Result<ImageParts, ImportError> {
    let find = |name: &str| -> Result<Blob, ImportError> {
        let path = dir.join(name);
        std::fs::metadata(&path).map_err(ImportError::io("opening", &path))?;
        Ok(Blob::File(path))
    };
    oci_layout(&find, reference)
}

/// Read `index.json`, pick the manifest (the one named `reference`, or the
/// only one), and list its config and layers.
fn oci_layout(
    find: &dyn Fn(&str) -> Result<Blob, ImportError>,
    reference: Option<&str>,
) -> Result<ImageParts, ImportError> {
    let index_blob = find("index.json")?;
    let index = ImageIndex::from_reader(index_blob.read_small()?.as_slice())
        .map_err(|e| ImportError::malformed(&index_blob, e))?;
    fn named(d: &oci_spec::image::Descriptor) -> Option<&str> {
        d.annotations()
            .as_ref()
            .and_then(|a| a.get("org.opencontainers.image.ref.name"))
            .map(String::as_str)
    }
    let chosen = match reference {
        Some(r) => index.manifests().iter().find(|d| named(d) == Some(r)),
        None if index.manifests().len() == 1 => index.manifests().first(),
        None => None,
    };
    let Some(desc) = chosen else {
        let refs: Vec<&str> = index.manifests().iter().filter_map(named).collect();
        return Err(ImportError::Malformed {
            source_name: index_blob.describe(),
            reason: match reference {
                Some(r) => format!("no manifest named {r:?} (it names {refs:?})"),
                None => format!(
                    "{} manifests; name one with oci:DIR:REF ({refs:?})",
                    index.manifests().len()
                ),
            },
        });
    };
    let manifest_blob = find(&blob_path(desc.digest().to_string().as_str()))?;
    let manifest_bytes = manifest_blob.read_small()?;
    let manifest = ImageManifest::from_reader(manifest_bytes.as_slice())
        .map_err(|e| ImportError::malformed(&manifest_blob, e))?;
    let config_blob = find(&blob_path(manifest.config().digest().as_ref()))?;
    let mut layers = Vec::new();
    for l in manifest.layers() {
        let digest = l.digest().to_string();
        layers.push(LayerBlob {
            blob: find(&blob_path(&digest))?,
            digest: Some(digest),
        });
    }
    Ok(ImageParts {
        config: Some(config_blob.read_small()?),
        manifest: Some(manifest_bytes),
        layers,
        tags: Vec::new(),
    })
}

/// `sha256:<hex>` -> `blobs/sha256/<hex>` (the digest was validated by
/// oci-spec: algorithm and hex only, no path separators).
fn blob_path(digest: &str) -> String {
    let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    format!("blobs/{alg}/{hex}")
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn docker_archive(path: &Path) -> Result<ImageParts, ImportError> {
    let index = TarIndex::read(path)?;
    let manifest_blob = index.blob("manifest.json")?;
    let entries: Vec<DockerManifestEntry> = serde_json::from_slice(&manifest_blob.read_small()?)
        .map_err(|e| ImportError::malformed(&manifest_blob, e))?;
    let entry = match entries.as_slice() {
        [one] => one,
        _ => {
            return Err(ImportError::Malformed {
                source_name: manifest_blob.describe(),
                reason: format!(
                    "holds {} images; layerstore imports archives of one image",
                    entries.len()
                ),
            })
        }
    };
    let layers = entry
        .layers
        .iter()
        .map(|name| {
            Ok(LayerBlob {
                blob: index.blob(name)?,
                digest: None,
            })
        })
        .collect::<Result<_, ImportError>>()?;
    Ok(ImageParts {
        config: Some(index.blob(&entry.config)?.read_small()?),
        manifest: None,
        layers,
        tags: entry.repo_tags.clone().unwrap_or_default(),
    })
}

/// The members of a tar archive: name -> (content offset, size).
struct TarIndex {
    path: PathBuf,
    members: HashMap<String, (u64, u64)>,
}

impl TarIndex {
    fn read(path: &Path) -> Result<TarIndex, ImportError> {
        let file = File::open(path).map_err(ImportError::io("opening", path))?;
        let mut archive = tar::Archive::new(io::BufReader::new(file));
        let mut members = HashMap::new();
        let bad = |e: io::Error| ImportError::Malformed {
            source_name: path.display().to_string(),
            reason: format!("not a readable tar archive: {e}"),
        };
        for entry in archive.entries().map_err(bad)? {
            let entry = entry.map_err(bad)?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let name = name.trim_start_matches("./").to_owned();
            members.insert(name, (entry.raw_file_position(), entry.size()));
        }
        Ok(TarIndex {
            path: path.to_owned(),
            members,
        })
    }

    fn blob(&self, name: &str) -> Result<Blob, ImportError> {
        let key = name.trim_start_matches("./");
        match self.members.get(key) {
            Some(&(offset, size)) => Ok(Blob::Member {
                archive: self.path.clone(),
                name: key.to_owned(),
                offset,
                size,
            }),
            None => Err(ImportError::Missing {
                what: key.to_owned(),
                source_name: self.path.display().to_string(),
            }),
        }
    }
}
