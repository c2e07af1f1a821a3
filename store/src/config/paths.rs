//! Path handling as c/storage and Go do it: `$UID`/`$VAR` expansion, lexical
//! cleaning, making override paths absolute, and symlink resolution.

use std::fs;
use std::path::{Component, Path, PathBuf};

use super::{ConfigError, Env};

pub(super) fn require_absolute(what: &'static str, path: &Path) -> Result<(), ConfigError> {
    if path.is_absolute() {
        return Ok(());
    }
    Err(ConfigError::NotAbsolute {
        what,
        path: path.into(),
    })
}

pub(super) fn absolute(path: &Path) -> Result<PathBuf, ConfigError> {
    if path.is_absolute() {
        return Ok(clean(path));
    }
    let cwd = std::env::current_dir().map_err(|source| ConfigError::CurrentDir {
        path: path.into(),
        source,
    })?;
    Ok(clean(&cwd.join(path)))
}

/// c/storage's `expandEnvPath` without the symlink step: `$UID` becomes
/// `uid`, then `$VAR`/`${VAR}` expand as Go's `os.ExpandEnv` does (unset ->
/// empty), then the path is cleaned.
pub(super) fn expand_env_path(path: &Path, uid: u32, env: &Env) -> PathBuf {
    let Some(text) = path.to_str() else {
        return clean(path);
    };
    let text = text.replace("$UID", &uid.to_string());
    let expanded = expand_vars(&text, |name| {
        env.vars.get(name).cloned().unwrap_or_default()
    });
    clean(Path::new(&expanded))
}

/// Go's `os.Expand`.
pub(super) fn expand_vars(s: &str, lookup: impl Fn(&str) -> String) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let (mut literal_start, mut j) = (0, 0);
    while j < bytes.len() {
        if bytes[j] == b'$' && j + 1 < bytes.len() {
            out.push_str(&s[literal_start..j]);
            let (name, width) = shell_name(&s[j + 1..]);
            if !name.is_empty() {
                out.push_str(&lookup(name));
            } else if width == 0 {
                out.push('$');
            }
            j += width;
            literal_start = j + 1;
        }
        j += 1;
    }
    out.push_str(&s[literal_start..]);
    out
}

/// Go's `getShellName`: the variable name after a `$` and the bytes it spans.
fn shell_name(s: &str) -> (&str, usize) {
    let special = |b: u8| b"*#$@!?-".contains(&b) || b.is_ascii_digit();
    let b = s.as_bytes();
    if b[0] == b'{' {
        if b.len() > 2 && special(b[1]) && b[2] == b'}' {
            return (&s[1..2], 3);
        }
        return match s[1..].find('}') {
            Some(0) => ("", 2),
            Some(k) => (&s[1..=k], k + 2),
            None => ("", 1),
        };
    }
    if special(b[0]) {
        return (&s[..1], 1);
    }
    let n = b
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count();
    (&s[..n], n)
}

/// Go's `filepath.Clean`: drop `.` and repeated `/`, resolve `..` lexically.
pub(super) fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    let mut depth = 0usize;
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if depth > 0 => {
                out.pop();
                depth -= 1;
            }
            Component::ParentDir if out.has_root() => {}
            Component::Normal(_) => {
                out.push(c);
                depth += 1;
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Resolve symlinks in the longest existing prefix of an absolute path.
pub(super) fn resolve_symlinks(path: &Path) -> PathBuf {
    if !path.is_absolute() {
        return path.to_path_buf();
    }
    let mut rest = Vec::new();
    let mut cur = path;
    loop {
        if let Ok(real) = fs::canonicalize(cur) {
            return rest.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                cur = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}
