//! The command line of `layerstore run` in podman mode: podman's run flags
//! (and its global flags, which podman also takes after `run`), told apart
//! from layerstore's own, the image and the command.
//!
//! podman's parser (cobra/pflag) is followed: `--flag value`,
//! `--flag=value`, `-x value`, `-xvalue`, combined short booleans (`-it`,
//! the last one may take a value: `-ite K=V`), `--bool=false`, and `--`
//! ending the flags. The first argument that is not a flag is the image;
//! everything after it is the command, untouched. A flag podman does not
//! know is refused with podman's own message and exit code 125, before
//! anything is made.
//!
//! The table holds podman 4.3.1's flags (`podman run --help`, `podman
//! --help`, and the hidden ones) and those podman 5 (up to 5.8) added,
//! checked against podman's flag definitions (`cmd/podman/common/create.go`,
//! `cmd/podman/containers/run.go`, the persistent flags of
//! `cmd/podman/root.go`); a flag only one version knows is passed on, and
//! that podman refuses it itself.

use std::fmt;

/// Whether a flag takes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `--flag` / `--flag=true|false`.
    Bool,
    /// `--flag VALUE` / `--flag=VALUE`.
    Value,
}

use Kind::{Bool as B, Value as V};

/// podman's run flags and global flags: long name, shorthand, kind.
/// Where podman's `run` and global flags share a shorthand (`-c`, `-v`,
/// `-h`), `run`'s wins, as in podman.
const FLAGS: &[(&str, Option<char>, Kind)] = &[
    // layerstore's own (see OURS).
    ("nocache", None, B),
    ("direct", None, B),
    ("keyring", None, B),
    // podman run (4.3.1).
    ("add-host", None, V),
    ("annotation", None, V),
    ("arch", None, V),
    ("attach", Some('a'), V),
    ("authfile", None, V),
    ("blkio-weight", None, V),
    ("blkio-weight-device", None, V),
    ("cap-add", None, V),
    ("cap-drop", None, V),
    ("cgroup-conf", None, V),
    ("cgroup-parent", None, V),
    ("cgroupns", None, V),
    ("cgroups", None, V),
    ("chrootdirs", None, V),
    ("cidfile", None, V),
    ("conmon-pidfile", None, V),
    ("cpu-period", None, V),
    ("cpu-quota", None, V),
    ("cpu-rt-period", None, V),
    ("cpu-rt-runtime", None, V),
    ("cpu-shares", Some('c'), V),
    ("cpus", None, V),
    ("cpuset-cpus", None, V),
    ("cpuset-mems", None, V),
    ("detach", Some('d'), B),
    ("detach-keys", None, V),
    ("device", None, V),
    ("device-cgroup-rule", None, V),
    ("device-read-bps", None, V),
    ("device-read-iops", None, V),
    ("device-write-bps", None, V),
    ("device-write-iops", None, V),
    ("disable-content-trust", None, B),
    ("dns", None, V),
    ("dns-option", None, V),
    ("dns-search", None, V),
    ("entrypoint", None, V),
    ("env", Some('e'), V),
    ("env-file", None, V),
    ("env-host", None, B),
    ("env-merge", None, V),
    ("expose", None, V),
    ("gidmap", None, V),
    ("group-add", None, V),
    ("health-cmd", None, V),
    ("health-interval", None, V),
    ("health-on-failure", None, V),
    ("health-retries", None, V),
    ("health-start-period", None, V),
    ("health-timeout", None, V),
    ("help", None, B),
    ("hostname", Some('h'), V),
    ("hostuser", None, V),
    ("http-proxy", None, B),
    ("image-volume", None, V),
    ("init", None, B),
    ("init-path", None, V),
    ("interactive", Some('i'), B),
    ("ip", None, V),
    ("ip6", None, V),
    ("ipc", None, V),
    ("label", Some('l'), V),
    ("label-file", None, V),
    ("log-driver", None, V),
    ("log-opt", None, V),
    ("mac-address", None, V),
    ("memory", Some('m'), V),
    ("memory-reservation", None, V),
    ("memory-swap", None, V),
    ("memory-swappiness", None, V),
    ("mount", None, V),
    ("name", None, V),
    ("network", None, V),
    ("network-alias", None, V),
    ("no-healthcheck", None, B),
    ("no-hosts", None, B),
    ("oom-kill-disable", None, B),
    ("oom-score-adj", None, V),
    ("os", None, V),
    ("passwd", None, B),
    ("passwd-entry", None, V),
    ("personality", None, V),
    ("pid", None, V),
    ("pidfile", None, V),
    ("pids-limit", None, V),
    ("platform", None, V),
    ("pod", None, V),
    ("pod-id-file", None, V),
    ("preserve-fds", None, V),
    ("privileged", None, B),
    ("publish", Some('p'), V),
    ("publish-all", Some('P'), B),
    ("pull", None, V),
    ("quiet", Some('q'), B),
    ("read-only", None, B),
    ("read-only-tmpfs", None, B),
    ("replace", None, B),
    ("requires", None, V),
    ("restart", None, V),
    ("rm", None, B),
    ("rmi", None, B),
    ("rootfs", None, B),
    ("sdnotify", None, V),
    ("seccomp-policy", None, V),
    ("secret", None, V),
    ("security-opt", None, V),
    ("shm-size", None, V),
    ("sig-proxy", None, B),
    ("stop-signal", None, V),
    ("stop-timeout", None, V),
    ("subgidname", None, V),
    ("subuidname", None, V),
    ("sysctl", None, V),
    ("systemd", None, V),
    ("timeout", None, V),
    ("tls-verify", None, B),
    ("tmpfs", None, V),
    ("tty", Some('t'), B),
    ("tz", None, V),
    ("uidmap", None, V),
    ("ulimit", None, V),
    ("umask", None, V),
    ("unsetenv", None, V),
    ("unsetenv-all", None, B),
    ("user", Some('u'), V),
    ("userns", None, V),
    ("uts", None, V),
    ("variant", None, V),
    ("volume", Some('v'), V),
    ("volumes-from", None, V),
    ("workdir", Some('w'), V),
    // podman run, added in podman 5.
    ("cert-dir", None, V),
    ("creds", None, V),
    ("decryption-key", None, V),
    ("gpus", None, V),
    ("group-entry", None, V),
    ("health-log-destination", None, V),
    ("health-max-log-count", None, V),
    ("health-max-log-size", None, V),
    ("health-startup-cmd", None, V),
    ("health-startup-interval", None, V),
    ("health-startup-retries", None, V),
    ("health-startup-success", None, V),
    ("health-startup-timeout", None, V),
    ("hosts-file", None, V),
    ("no-hostname", None, B),
    ("rdt-class", None, V),
    ("retry", None, V),
    ("retry-delay", None, V),
    ("shm-size-systemd", None, V),
    ("preserve-fd", None, V),
    // podman run, hidden.
    ("kernel-memory", None, V),
    // podman's global flags (valid after `run` too).
    ("cgroup-manager", None, V),
    ("conmon", None, V),
    ("connection", None, V),
    ("db-backend", None, V),
    ("events-backend", None, V),
    ("hooks-dir", None, V),
    ("identity", None, V),
    ("imagestore", None, V),
    ("log-level", None, V),
    ("module", None, V),
    ("namespace", None, V),
    ("ns", None, V),
    ("network-cmd-path", None, V),
    ("network-config-dir", None, V),
    ("noout", None, B),
    ("out", None, V),
    ("remote", Some('r'), B),
    ("root", None, V),
    ("runroot", None, V),
    ("runtime", None, V),
    ("runtime-flag", None, V),
    ("ssh", None, V),
    ("storage-driver", None, V),
    ("storage-opt", None, V),
    ("syslog", None, B),
    ("tmpdir", None, V),
    ("transient-store", None, B),
    ("url", None, V),
    ("version", None, B),
    ("volumepath", None, V),
    // podman's hidden global flags, and podman 5's.
    ("cdi-spec-dir", None, V),
    ("cpu-profile", None, V),
    ("default-mounts-file", None, V),
    ("max-workers", None, V),
    ("memory-profile", None, V),
    ("network-backend", None, V),
    ("pull-option", None, V),
    ("registries-conf", None, V),
    ("signature-policy", None, V),
    ("trace", None, B),
];

/// layerstore's own flags: never passed to podman.
const OURS: &[&str] = &["nocache", "direct", "keyring"];

/// One flag as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Flag {
    /// Its long name (also when given by its shorthand).
    pub(super) name: &'static str,
    /// Its value (`"true"`/`"false"` for a boolean).
    pub(super) value: String,
}

/// The parsed command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct RunLine {
    /// Every flag before the image, in order, layerstore's own included.
    pub(super) flags: Vec<Flag>,
    /// The image (empty: none given).
    pub(super) image: String,
    /// The command and its arguments after the image.
    pub(super) command: Vec<String>,
}

/// A command line podman would refuse: its message, as podman prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct UsageError(pub(super) String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\nSee 'layerstore run --help'", self.0)
    }
}

impl std::error::Error for UsageError {}

/// The old names podman's run still takes for some flags (podman's
/// `AliasFlags` normalization, set on `run`'s flags): `--net` is
/// `--network`, `--purge` is `--rm`, ...
fn alias(name: &str) -> &str {
    match name {
        "dns-opt" => "dns-option",
        "healthcheck-command" => "health-cmd",
        "healthcheck-interval" => "health-interval",
        "healthcheck-retries" => "health-retries",
        "healthcheck-start-period" => "health-start-period",
        "healthcheck-timeout" => "health-timeout",
        "net" => "network",
        "purge" => "rm",
        "override-arch" => "arch",
        "override-os" => "os",
        "override-variant" => "variant",
        other => other,
    }
}

fn long(name: &str) -> Option<(&'static str, Kind)> {
    let name = alias(name);
    FLAGS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(n, _, k)| (*n, *k))
}

fn short(c: char) -> Option<(&'static str, Kind)> {
    FLAGS
        .iter()
        .find(|(_, s, _)| *s == Some(c))
        .map(|(n, _, k)| (*n, *k))
}

fn bool_value(name: &str, value: &str) -> Result<String, UsageError> {
    match value {
        "true" | "1" | "t" | "T" | "TRUE" | "True" => Ok("true".to_owned()),
        "false" | "0" | "f" | "F" | "FALSE" | "False" => Ok("false".to_owned()),
        _ => Err(UsageError(format!(
            "invalid argument \"{value}\" for \"--{name}\" flag: strconv.ParseBool: parsing \"{value}\": invalid syntax"
        ))),
    }
}

/// Parse the arguments after `run`.
pub(super) fn parse(args: &[String]) -> Result<RunLine, UsageError> {
    let mut line = RunLine::default();
    let mut i = 0;
    let missing = |name: &str| UsageError(format!("flag needs an argument: --{name}"));
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            break;
        }
        if let Some(rest) = arg.strip_prefix("--") {
            let (name, inline) = match rest.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (rest, None),
            };
            let Some((name, kind)) = long(name) else {
                return Err(UsageError(format!("unknown flag: --{name}")));
            };
            let value = match (kind, inline) {
                (Kind::Bool, None) => "true".to_owned(),
                (Kind::Bool, Some(v)) => bool_value(name, v)?,
                (Kind::Value, Some(v)) => v.to_owned(),
                (Kind::Value, None) => {
                    let v = args.get(i).ok_or_else(|| missing(name))?;
                    i += 1;
                    v.clone()
                }
            };
            line.flags.push(Flag { name, value });
        } else if arg.len() > 1 && arg.starts_with('-') {
            let shorts: Vec<char> = arg[1..].chars().collect();
            let mut j = 0;
            while j < shorts.len() {
                let c = shorts[j];
                j += 1;
                let Some((name, kind)) = short(c) else {
                    return Err(UsageError(format!(
                        "unknown shorthand flag: '{c}' in {arg}"
                    )));
                };
                match kind {
                    Kind::Bool => {
                        // `-d=false`; a bare `-d=` leaves `=` as the next
                        // shorthand, as in pflag.
                        let value = if shorts.get(j) == Some(&'=') && j + 1 < shorts.len() {
                            let v: String = shorts[j + 1..].iter().collect();
                            j = shorts.len();
                            bool_value(name, &v)?
                        } else {
                            "true".to_owned()
                        };
                        line.flags.push(Flag { name, value });
                    }
                    Kind::Value => {
                        // `-u=5` is 5, but `-u=` is `=` (pflag strips
                        // the `=` only before a value).
                        let rest: String = shorts[j..].iter().collect();
                        let rest = match rest.strip_prefix('=') {
                            Some(v) if !v.is_empty() => v.to_owned(),
                            _ => rest,
                        };
                        let value = if !rest.is_empty() {
                            rest
                        } else {
                            let v = args.get(i).ok_or_else(|| {
                                UsageError(format!("flag needs an argument: '{c}' in -{c}"))
                            })?;
                            i += 1;
                            v.clone()
                        };
                        line.flags.push(Flag { name, value });
                        j = shorts.len();
                    }
                }
            }
        } else {
            line.image = arg.clone();
            line.command = args[i..].to_vec();
            return Ok(line);
        }
    }
    // After `--` (or at the end): the image, then the command.
    if i < args.len() {
        line.image = args[i].clone();
        line.command = args[i + 1..].to_vec();
    }
    Ok(line)
}

impl RunLine {
    /// The values of flag `name`, in order.
    pub(super) fn values(&self, name: &str) -> Vec<&str> {
        self.flags
            .iter()
            .filter(|f| f.name == name)
            .map(|f| f.value.as_str())
            .collect()
    }

    /// The values of a flag podman reads as comma-separated lists (its
    /// `strings` flags: `--uidmap`, `--gidmap`, `--annotation`, ...), each
    /// value split as podman splits it (one CSV record).
    pub(super) fn list_values(&self, name: &str) -> Vec<String> {
        self.values(name).into_iter().flat_map(csv_record).collect()
    }

    /// The last value of flag `name`.
    pub(super) fn last(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|f| f.name == name)
            .map(|f| f.value.as_str())
    }

    /// Whether flag `name` was given at all.
    pub(super) fn given(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f.name == name)
    }

    /// A boolean flag's value (false when not given).
    pub(super) fn is_set(&self, name: &str) -> bool {
        self.last(name) == Some("true")
    }

    /// The flags for podman, in the `--name=value` form (which no value can
    /// be mistaken in), leaving out layerstore's own and those in `skip`.
    pub(super) fn podman_args(&self, skip: &[&str]) -> Vec<String> {
        self.flags
            .iter()
            .filter(|f| !OURS.contains(&f.name) && !skip.contains(&f.name))
            .map(|f| format!("--{}={}", f.name, f.value))
            .collect()
    }
}

/// One CSV record, as Go's encoding/csv reads the value of a `strings`
/// flag: fields split at commas, a field in double quotes may hold commas
/// and doubled quotes. Only the first line counts.
pub(super) fn csv_record(value: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = value.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if at_start => {
                quoted = true;
                at_start = false;
            }
            '"' if quoted => {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    quoted = false;
                }
            }
            ',' if !quoted => {
                fields.push(std::mem::take(&mut field));
                at_start = true;
            }
            '\n' if !quoted => break,
            c => {
                field.push(c);
                at_start = false;
            }
        }
    }
    fields.push(field);
    fields
}

/// `value` as one CSV field, quoted when it must be (so that a `strings`
/// flag reads it back as it is).
pub(super) fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) || value.starts_with(' ') {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests;
