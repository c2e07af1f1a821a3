//! Image names as podman normalizes them: a name without a registry gets
//! one (`localhost/` for `podman import`, `docker.io/` (+`library/`) for
//! docker archives' tags) and a name without tag or digest gets `:latest`.

use super::ImportError;

/// Normalize `name` with `default_domain` (`localhost` or `docker.io`).
pub fn normalize_name(name: &str, default_domain: &str) -> Result<String, ImportError> {
    let bad = |reason| ImportError::BadName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("it contains whitespace"));
    }
    let (first, rest) = name.split_once('/').unwrap_or(("", name));
    let has_domain =
        !first.is_empty() && (first.contains('.') || first.contains(':') || first == "localhost");
    let (domain, path) = if has_domain {
        (first.to_owned(), rest.to_owned())
    } else if default_domain == "docker.io" && !name.contains('/') {
        ("docker.io".to_owned(), format!("library/{name}"))
    } else {
        (default_domain.to_owned(), name.to_owned())
    };
    let (repo, suffix) = match path.find(['@', ':']) {
        Some(i) => (&path[..i], &path[i..]),
        None => (path.as_str(), ""),
    };
    if repo.is_empty() || repo.split('/').any(str::is_empty) {
        return Err(bad("it has an empty path component"));
    }
    if repo.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(bad("repository names must be lowercase"));
    }
    if !repo
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c))
    {
        return Err(bad(
            "repository names use only a-z, 0-9, '.', '_', '-' and '/'",
        ));
    }
    let suffix = if suffix.is_empty() { ":latest" } else { suffix };
    if suffix == ":" || suffix == "@" {
        return Err(bad("the tag or digest is empty"));
    }
    Ok(format!("{domain}/{repo}{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_like_podman() {
        let cases = [
            ("base", "localhost", "localhost/base:latest"),
            ("base:v1", "localhost", "localhost/base:v1"),
            (
                "localhost/base:latest",
                "localhost",
                "localhost/base:latest",
            ),
            ("quay.io/a/b", "localhost", "quay.io/a/b:latest"),
            ("registry:5000/x:1", "localhost", "registry:5000/x:1"),
            (
                "busybox:latest",
                "docker.io",
                "docker.io/library/busybox:latest",
            ),
            ("me/app", "docker.io", "docker.io/me/app:latest"),
            ("a/b@sha256:abc", "localhost", "localhost/a/b@sha256:abc"),
        ];
        for (input, domain, want) in cases {
            assert_eq!(normalize_name(input, domain).unwrap(), want, "{input}");
        }
        for bad in ["", "Upper", "a b", "x:", "a//b", "a/b$"] {
            assert!(normalize_name(bad, "localhost").is_err(), "{bad:?}");
        }
    }
}
