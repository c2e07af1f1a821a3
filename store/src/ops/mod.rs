//! Changes to a store, made the way containers/storage makes them: under
//! its locks, in its lock order, with its `incomplete` protocol for layers,
//! and with its safety rules for deletions.
//!
//! ```text
//! <graphroot>/overlay-layers/<id>.tar-split.gz   written by the caller's populate step
//! <graphroot>/overlay-layers/<id>/               layer big data (removed with the layer)
//! <graphroot>/overlay-images/<id>/<key>           image big data (manifest, config, ...)
//! <graphroot>/overlay-containers/<id>/            container data (removed with it)
//! <runroot>/overlay-containers/<id>/              container run data (removed with it)
//! ```

mod containers;
mod files;
mod images;
mod layers;
mod mapped;
mod mounts;
mod remove_container;

pub use containers::{
    is_created_by_layerstore, mark_created_by_layerstore, NewContainer, CREATED_KEY,
    USER_FILE_LIMIT,
};
pub use files::{tar_split_name, TarSplitTemp};
pub(crate) use files::{CONTAINERS_DIR, IMAGES_DIR, LAYERS_DIR};
pub use images::{BigData, NewImage};
pub(crate) use layers::unflag;
pub use layers::{LayerDiff, NewLayer, FLAG_CONTAINER};

/// A new random id as containers/storage makes them: 32 random bytes in
/// lowercase hex, drawn again while the first 12 characters read as a
/// decimal number (they would be ambiguous with numbers in short form).
pub fn random_id() -> String {
    loop {
        let mut bytes = [0u8; 32];
        let mut filled = 0;
        while filled < bytes.len() {
            match rustix::rand::getrandom(
                &mut bytes[filled..],
                rustix::rand::GetRandomFlags::empty(),
            ) {
                Ok(n) => filled += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => panic!("getrandom failed: {e}"),
            }
        }
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        if !id[..12].bytes().all(|b| b.is_ascii_digit()) {
            return id;
        }
    }
}

/// The file name containers/storage uses for a big-data key: the key
/// itself when every character is one of `.0-9a-z`, else `=` followed by
/// the key in standard base64 (with padding).
pub fn big_data_file_name(key: &str) -> String {
    if !key.is_empty()
        && key
            .bytes()
            .all(|b| b == b'.' || b.is_ascii_digit() || b.is_ascii_lowercase())
    {
        return key.to_owned();
    }
    format!("={}", base64_std(key.as_bytes()))
}

fn base64_std(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// sha256 digest string of `data` (`sha256:<hex>`).
pub(crate) fn sha256_digest(data: &[u8]) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(data);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names() {
        let id = random_id();
        assert_eq!(id.len(), 64);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(random_id(), id);
    }

    #[test]
    fn big_data_names_match_containers_storage() {
        // Observed in a podman 4.3.1 store (testdata/podman-4.3.1).
        assert_eq!(big_data_file_name("manifest"), "manifest");
        assert_eq!(
            big_data_file_name("sha256:c9fa"),
            format!("={}", base64_std(b"sha256:c9fa"))
        );
        assert_eq!(base64_std(b"sha256:abc"), "c2hhMjU2OmFiYw==");
        assert_eq!(base64_std(b"ab"), "YWI=");
        assert_eq!(base64_std(b"abc"), "YWJj");
        assert_eq!(big_data_file_name("Manifest"), "=TWFuaWZlc3Q=");
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
