//! Hostile and broken stores for the trust tests: one real podman 4.3.1
//! store ([`Scene`]) and a catalogue of the ways its records and
//! directories can lie ([`catalogue`]), each applied to a fresh scene.
//!
//! ```text
//! <tmp>/graph, <tmp>/run        the store (podman 4.3.1, templates forced)
//!   localhost/base              one busybox layer (podman import)
//!   pod1                        podman's container
//!   pod2                        podman's container with a uid/gid map (a template)
//!   ls1                         a container `layerstore create` made
//! <tmp>/victim/precious         beside the store: must survive everything
//! ```
//!
//! A [`Hostility`] is either [`Expect::Refused`]: the records cannot be
//! trusted, so every command that changes the store must refuse and leave
//! every byte as it was, or [`Expect::Contained`]: the records are sound
//! but the directories are hostile (symlinks out of the store), so commands
//! may fail or succeed but never touch anything outside the store or
//! anything a record names.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{images, run_ok, PodmanStore};

/// A small busybox image.
pub const BUSYBOX: &str = "
d bin 0755 0:0
F bin/busybox 0755 0:0 /bin/busybox
l bin/sh busybox
l bin/true busybox
l bin/cat busybox
d etc 0755 0:0
f etc/passwd 0644 0:0 root:x:0:0:root:/root:/bin/sh\\n
f etc/group 0644 0:0 root:x:0:\\n
d tmp 1777 0:0
";

/// The store every hostility is applied to.
#[derive(Debug)]
pub struct Scene {
    /// The store.
    pub store: PodmanStore,
    /// `<tmp>/victim`, a directory beside the store.
    pub victim: PathBuf,
    /// The image's top (and only) layer.
    pub base_layer: String,
    /// The image's id.
    pub image: String,
    /// `ls1`: the container layerstore made, and its layer.
    pub ours: (String, String),
    /// `pod1`: podman's container, and its layer.
    pub podmans: (String, String),
    /// The mapped template podman made for `pod2`.
    pub template: String,
}

/// What a hostility must lead to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Every writer refuses; nothing on disk changes.
    Refused,
    /// Commands may work or fail; nothing outside the store, and nothing a
    /// record names, is touched.
    Contained,
}

/// One way a store can be hostile.
#[derive(Debug, Clone, Copy)]
pub struct Hostility {
    /// A short name for messages.
    pub name: &'static str,
    /// Make the scene hostile.
    pub apply: fn(&Scene),
    /// What must follow.
    pub expect: Expect,
}

impl Scene {
    /// Build the scene with the `layerstore` binary at `bin`. Needs root,
    /// podman and runc.
    pub fn build(bin: &str) -> Scene {
        let store = PodmanStore::empty();
        store.force_templates();
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("busybox.tar");
        fs::write(&tar, images::layer_tar(BUSYBOX)).unwrap();
        run_ok(
            store
                .podman()
                .args(["import", "--quiet", "--change", "CMD [\"/bin/sh\"]"])
                .arg(&tar)
                .arg("localhost/base"),
        );
        run_ok(store.podman().args([
            "create",
            "--pull=never",
            "--name",
            "pod1",
            "localhost/base",
            "true",
        ]));
        run_ok(store.podman().args([
            "create",
            "--pull=never",
            "--name",
            "pod2",
            "--uidmap",
            "0:100000:65536",
            "--gidmap",
            "0:100000:65536",
            "localhost/base",
            "true",
        ]));
        run_ok(
            store
                .layerstore(bin)
                .args(["create", "--name", "ls1", "localhost/base"]),
        );
        let victim = store.graph.parent().unwrap().join("victim");
        fs::create_dir_all(&victim).unwrap();
        fs::write(victim.join("precious"), b"keep me").unwrap();
        // Empty, as a lock file that was never written is.
        fs::write(victim.join("empty"), b"").unwrap();
        let images = read_records(&store.graph.join("overlay-images/images.json"));
        let containers = read_records(&store.graph.join("overlay-containers/containers.json"));
        let ctr = |name: &str| {
            let c = containers
                .iter()
                .find(|c| {
                    c["names"]
                        .as_array()
                        .is_some_and(|n| n.iter().any(|n| n == name))
                })
                .unwrap_or_else(|| panic!("no container {name}"));
            (
                c["id"].as_str().unwrap().to_owned(),
                c["layer"].as_str().unwrap().to_owned(),
            )
        };
        let image = &images[0];
        Scene {
            base_layer: image["layer"].as_str().unwrap().to_owned(),
            image: image["id"].as_str().unwrap().to_owned(),
            template: image["mapped-layers"][0].as_str().unwrap().to_owned(),
            ours: ctr("ls1"),
            podmans: ctr("pod1"),
            victim,
            store,
        }
    }

    /// `layers.json`.
    pub fn layers_json(&self) -> PathBuf {
        self.store.graph.join("overlay-layers/layers.json")
    }

    /// `images.json`.
    pub fn images_json(&self) -> PathBuf {
        self.store.graph.join("overlay-images/images.json")
    }

    /// `containers.json`.
    pub fn containers_json(&self) -> PathBuf {
        self.store.graph.join("overlay-containers/containers.json")
    }

    /// `<home>/<id>`.
    pub fn layer_dir(&self, id: &str) -> PathBuf {
        self.store.graph.join("overlay").join(id)
    }

    /// What the victim directory holds (names and contents).
    pub fn victim_state(&self) -> BTreeMap<String, Vec<u8>> {
        fs::read_dir(&self.victim)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let data = fs::read(e.path()).unwrap_or_default();
                (e.file_name().to_string_lossy().into_owned(), data)
            })
            .collect()
    }

    /// Make the store safe for podman again before it is cleaned up: FIFOs
    /// (podman would wait on them forever) and huge files (it would read
    /// them) in the record directories are removed.
    pub fn disarm(&self) {
        for root in [&self.store.graph, &self.store.run] {
            for dir in ["overlay-layers", "overlay-images", "overlay-containers"] {
                let Ok(entries) = fs::read_dir(root.join(dir)) else {
                    continue;
                };
                for e in entries.flatten() {
                    let Ok(meta) = e.path().symlink_metadata() else {
                        continue;
                    };
                    let t = meta.file_type();
                    if std::os::unix::fs::FileTypeExt::is_fifo(&t)
                        || (t.is_file() && meta.len() > 1 << 30)
                    {
                        let _ = fs::remove_file(e.path());
                    }
                }
            }
        }
    }

    /// Every path a record names that must exist while its record does:
    /// a layer directory per complete layer record, and the image and
    /// container records themselves (their ids, as read).
    pub fn named_paths(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for l in read_records(&self.layers_json()) {
            let id = l["id"].as_str().unwrap_or_default();
            let incomplete = l["flags"]["incomplete"] == Value::Bool(true);
            if is_plain_id(id) && !incomplete {
                out.push(self.layer_dir(id));
            }
        }
        out
    }
}

/// A 64-hex id (what the scene's own records hold).
fn is_plain_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The records of a JSON file (none when it is missing or unreadable).
pub fn read_records(path: &Path) -> Vec<Value> {
    fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .and_then(|v: Value| v.as_array().cloned())
        .unwrap_or_default()
}

/// Rewrite the records of `path` with `change` (plain write: a hostile
/// tool does not care about atomicity).
pub fn edit(path: &Path, change: impl FnOnce(&mut Vec<Value>)) {
    let mut records = read_records(path);
    change(&mut records);
    fs::write(path, serde_json::to_vec(&records).unwrap()).unwrap();
}

fn set_id_everywhere(s: &Scene, old: &str, new: &str) {
    let swap = |v: &mut Value, key: &str| {
        if v[key] == old {
            v[key] = Value::String(new.to_owned());
        }
    };
    edit(&s.layers_json(), |ls| {
        for l in ls {
            swap(l, "id");
            swap(l, "parent");
        }
    });
    edit(&s.containers_json(), |cs| {
        for c in cs {
            swap(c, "layer");
        }
    });
}

fn replace_with_symlink(path: &Path, target: &Path) {
    if path.is_dir() && !path.is_symlink() {
        fs::remove_dir_all(path).unwrap();
    } else {
        let _ = fs::remove_file(path);
    }
    symlink(target, path).unwrap();
}

fn make_fifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
}

/// Every hostility of the trust tests.
pub fn catalogue() -> Vec<Hostility> {
    use Expect::{Contained, Refused};
    vec![
        Hostility {
            name: "layers.json is empty (0 bytes)",
            apply: |s| fs::write(s.layers_json(), b"").unwrap(),
            expect: Refused,
        },
        Hostility {
            name: "layers.json is []",
            apply: |s| fs::write(s.layers_json(), b"[]").unwrap(),
            expect: Refused,
        },
        Hostility {
            name: "layers.json is missing",
            apply: |s| fs::remove_file(s.layers_json()).unwrap(),
            expect: Refused,
        },
        Hostility {
            name: "a hex digit dropped from the image's top layer id",
            apply: |s| {
                let short = &s.base_layer[..63];
                edit(&s.layers_json(), |ls| {
                    for l in ls {
                        if l["id"] == s.base_layer.as_str() {
                            l["id"] = Value::String(short.to_owned());
                        }
                    }
                })
            },
            expect: Refused,
        },
        Hostility {
            name: "a layer id ../../victim (container layer, consistently)",
            apply: |s| set_id_everywhere(s, &s.ours.1, "../../victim"),
            expect: Refused,
        },
        Hostility {
            name: "a layer id .. (container layer, consistently)",
            apply: |s| set_id_everywhere(s, &s.ours.1, ".."),
            expect: Refused,
        },
        Hostility {
            name: "an absolute container id",
            apply: |s| {
                let victim = s.victim.display().to_string();
                edit(&s.containers_json(), |cs| {
                    for c in cs {
                        if c["id"] == s.ours.0.as_str() {
                            c["id"] = Value::String(victim.clone());
                        }
                    }
                })
            },
            expect: Refused,
        },
        Hostility {
            name: "a container id ../../victim",
            apply: |s| {
                edit(&s.containers_json(), |cs| {
                    for c in cs {
                        if c["id"] == s.ours.0.as_str() {
                            c["id"] = Value::String("../../victim".into());
                        }
                    }
                })
            },
            expect: Refused,
        },
        Hostility {
            name: "an image id ../victim",
            apply: |s| {
                edit(&s.images_json(), |is| {
                    is[0]["id"] = Value::String("../victim".into());
                });
                edit(&s.containers_json(), |cs| {
                    for c in cs {
                        c["image"] = Value::String("../victim".into());
                    }
                })
            },
            expect: Refused,
        },
        Hostility {
            name: "mapped-layers entries ../../victim and .hidden",
            apply: |s| {
                edit(&s.images_json(), |is| {
                    let m = is[0]["mapped-layers"].as_array_mut().unwrap();
                    m.push(Value::String("../../victim".into()));
                    m.push(Value::String(".hidden".into()));
                })
            },
            expect: Refused,
        },
        Hostility {
            name: "a layer that is its own parent",
            apply: |s| {
                edit(&s.layers_json(), |ls| {
                    for l in ls {
                        if l["id"] == s.base_layer.as_str() {
                            l["parent"] = Value::String(s.base_layer.clone());
                        }
                    }
                })
            },
            expect: Refused,
        },
        Hostility {
            name: "a two-layer parent cycle",
            apply: |s| {
                edit(&s.layers_json(), |ls| {
                    for l in ls {
                        if l["id"] == s.base_layer.as_str() {
                            l["parent"] = Value::String(s.podmans.1.clone());
                        }
                    }
                })
            },
            expect: Refused,
        },
        Hostility {
            name: "images.json truncated",
            apply: |s| {
                let b = fs::read(s.images_json()).unwrap();
                fs::write(s.images_json(), &b[..b.len() / 2]).unwrap();
            },
            expect: Refused,
        },
        Hostility {
            name: "a container record with a field of the wrong type",
            apply: |s| {
                edit(&s.containers_json(), |cs| {
                    cs[0]["names"] = Value::from(5);
                })
            },
            expect: Refused,
        },
        Hostility {
            name: "a container whose layer is gone",
            apply: |s| {
                edit(&s.containers_json(), |cs| {
                    for c in cs {
                        if c["id"] == s.ours.0.as_str() {
                            c["layer"] = Value::String("0".repeat(64));
                        }
                    }
                })
            },
            expect: Refused,
        },
        Hostility {
            name: "a mount record with id ../../victim and path /",
            apply: |s| {
                let path = s.store.run.join("overlay-layers/mountpoints.json");
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(path, br#"[{"id":"../../victim","path":"/","count":1}]"#).unwrap();
            },
            expect: Refused,
        },
        Hostility {
            name: "our container's merged is a symlink to the victim",
            apply: |s| replace_with_symlink(&s.layer_dir(&s.ours.1).join("merged"), &s.victim),
            expect: Contained,
        },
        Hostility {
            name: "our container's diff is a symlink to the victim",
            apply: |s| replace_with_symlink(&s.layer_dir(&s.ours.1).join("diff"), &s.victim),
            expect: Contained,
        },
        Hostility {
            name: "lower files that climb out of the store",
            apply: |s| {
                let dir = s.layer_dir(&s.ours.1);
                fs::write(dir.join("lower-layers"), "../../victim").unwrap();
                fs::write(dir.join("lower"), "l/../../../victim").unwrap();
            },
            expect: Contained,
        },
        Hostility {
            name: "a link file that climbs out of the store",
            apply: |s| fs::write(s.layer_dir(&s.base_layer).join("link"), "../../victim").unwrap(),
            expect: Contained,
        },
        Hostility {
            name: "an l/ link to the victim",
            apply: |s| {
                symlink(
                    &s.victim,
                    s.store.graph.join("overlay/l/EVILEVILEVILEVILEVILEVILEV"),
                )
                .unwrap()
            },
            expect: Contained,
        },
        Hostility {
            name: "our container's data directory is a symlink to the victim",
            apply: |s| {
                let dir = s.store.graph.join("overlay-containers").join(&s.ours.0);
                replace_with_symlink(&dir, &s.victim)
            },
            expect: Contained,
        },
        Hostility {
            name: "layers.lock is a symlink to a victim file",
            apply: |s| {
                replace_with_symlink(
                    &s.store.graph.join("overlay-layers/layers.lock"),
                    &s.victim.join("empty"),
                )
            },
            expect: Contained,
        },
        Hostility {
            name: "the overlay-containers directory is a symlink to the victim",
            apply: |s| {
                let dir = s.store.graph.join("overlay-containers");
                let moved = s.store.graph.join("moved-containers");
                fs::rename(&dir, &moved).unwrap();
                symlink(&s.victim, &dir).unwrap();
            },
            expect: Contained,
        },
        Hostility {
            name: "layers.lock is a hard link to a victim file",
            apply: |s| {
                let lock = s.store.graph.join("overlay-layers/layers.lock");
                let _ = fs::remove_file(&lock);
                fs::hard_link(s.victim.join("empty"), &lock).unwrap();
            },
            expect: Contained,
        },
        Hostility {
            name: "images.json is a FIFO",
            apply: |s| {
                fs::remove_file(s.images_json()).unwrap();
                make_fifo(&s.images_json());
            },
            expect: Refused,
        },
        Hostility {
            name: "layers.json is a sparse 1 TiB file",
            apply: |s| {
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(s.layers_json())
                    .unwrap();
                f.set_len(1 << 40).unwrap();
            },
            expect: Refused,
        },
        Hostility {
            name: "the runroot's layerstore-runtime is a symlink to the victim",
            apply: |s| symlink(&s.victim, s.store.run.join("layerstore-runtime")).unwrap(),
            expect: Contained,
        },
        Hostility {
            name: "the runroot's overlay-containers is a symlink to the victim",
            apply: |s| {
                let dir = s.store.run.join("overlay-containers");
                if dir.exists() {
                    fs::rename(&dir, s.store.run.join("moved-containers")).unwrap();
                }
                symlink(&s.victim, &dir).unwrap();
            },
            expect: Contained,
        },
        Hostility {
            name: "a dead run's forged runtime state names a hook",
            apply: |s| {
                // ls1 claims a `layerstore run` that died, and the runtime
                // state beside it asks for a poststop hook (what
                // `runc delete` would run as root).
                let ours = s.ours.0.clone();
                edit(&s.containers_json(), |cs| {
                    for c in cs.iter_mut().filter(|c| c["id"] == ours.as_str()) {
                        let mut meta: Value =
                            serde_json::from_str(c["metadata"].as_str().unwrap_or("{}"))
                                .unwrap_or_else(|_| serde_json::json!({}));
                        meta["layerstore-run"] = serde_json::json!({
                            "pid": 2_147_483_646u32,
                            "start-time": 1,
                            "runtime": "runc",
                        });
                        c["metadata"] = Value::String(meta.to_string());
                    }
                });
                let state = s.store.run.join("layerstore-runtime").join(&s.ours.0);
                fs::create_dir_all(&state).unwrap();
                let hook = format!("touch {}/pwned", s.victim.display());
                let config = serde_json::json!({
                    "id": s.ours.0,
                    "init_process_pid": 2_147_483_646u32,
                    "init_process_start": 1,
                    "created": "2026-01-01T00:00:00Z",
                    "config": {
                        "rootfs": s.victim,
                        "hooks": {"poststop": [{"path": "/bin/sh", "args": ["sh", "-c", hook]}]},
                        "namespaces": [],
                        "cgroups": {"path": "/layerstore/forged", "devices": [], "memory": 0},
                    },
                    "rootless": false,
                    "cgroup_paths": {},
                    "namespace_paths": {},
                    "external_descriptors": [],
                });
                fs::write(state.join("state.json"), config.to_string()).unwrap();
            },
            expect: Contained,
        },
        Hostility {
            name: "names with terminal escapes on disk",
            apply: |s| {
                let g = &s.store.graph;
                fs::create_dir(g.join("overlay/\u{1b}[2J\u{1b}]0;owned\u{7}")).unwrap();
                fs::create_dir(g.join("overlay-containers/\u{1b}]0;LOST\u{7}")).unwrap();
                symlink("../gone/diff", g.join("overlay/l/\u{1b}[31mRED")).unwrap();
            },
            expect: Contained,
        },
        Hostility {
            name: "container records whose layer is a terminal escape",
            apply: |s| {
                edit(&s.containers_json(), |cs| {
                    for c in cs.iter_mut().take(2) {
                        c["layer"] = Value::String("\u{1b}]0;PWN\u{7}".into());
                    }
                })
            },
            expect: Refused,
        },
        Hostility {
            name: "a template's tar-split is a symlink to a victim file",
            apply: |s| {
                let ts = s
                    .store
                    .graph
                    .join("overlay-layers")
                    .join(format!("{}.tar-split.gz", s.template));
                replace_with_symlink(&ts, &s.victim.join("precious"))
            },
            expect: Contained,
        },
    ]
}
