//! Memory does not grow with the layer: a 64 MB tar, generated on the fly
//! (never held whole), is applied with a peak RSS growth of less than
//! 16 MB (a quarter of it; in practice about 1 MB). Alone in its test
//! binary so nothing else moves the peak. Sized to stay quick in debug
//! builds, where hashing runs unoptimised.

use std::fs;
use std::io::{self, Read};

use layerstore_overlay::ocidiff::{apply_layer, ApplyOptions, WhiteoutFormat};
use layerstore_overlay::tarsplit::TarSplitWriter;

const FILES: u64 = 4;
const FILE_SIZE: u64 = 16 << 20;
const MAX_GROWTH_KB: u64 = 16 * 1024;

/// Content, repeated (a multiple of 512 bytes long).
static PATTERN: [u8; 4096] = {
    let mut p = [0u8; 4096];
    let mut i = 0;
    while i < p.len() {
        p[i] = (i * 7 % 251) as u8;
        i += 1;
    }
    p
};

/// A tar of `FILES` files of `FILE_SIZE` bytes each, produced as read.
struct Generator {
    file: u64,
    /// Header (or end-of-archive) bytes not read yet.
    meta: Vec<u8>,
    /// Content bytes of the current file not read yet.
    content_left: u64,
    /// Padding after the content.
    pad_left: u64,
    done: bool,
}

impl Generator {
    fn new() -> Generator {
        Generator {
            file: 0,
            meta: Vec::new(),
            content_left: 0,
            pad_left: 0,
            done: false,
        }
    }

    fn next_member(&mut self) {
        if self.file == FILES {
            self.meta = vec![0; 1024];
            self.done = true;
            return;
        }
        let mut h = tar::Header::new_ustar();
        h.set_path(format!("data/file{}", self.file)).unwrap();
        h.set_mode(0o644);
        h.set_uid(rustix::process::geteuid().as_raw().into());
        h.set_gid(rustix::process::getegid().as_raw().into());
        h.set_size(FILE_SIZE);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        self.meta = h.as_bytes().to_vec();
        self.content_left = FILE_SIZE;
        self.pad_left = (512 - FILE_SIZE % 512) % 512;
        self.file += 1;
    }
}

impl Read for Generator {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.meta.is_empty() && self.content_left == 0 && self.pad_left == 0 {
            if self.done {
                return Ok(0);
            }
            self.next_member();
        }
        if !self.meta.is_empty() {
            let n = buf.len().min(self.meta.len());
            buf[..n].copy_from_slice(&self.meta[..n]);
            self.meta.drain(..n);
            return Ok(n);
        }
        if self.content_left > 0 {
            let n = buf.len().min(self.content_left as usize).min(PATTERN.len());
            buf[..n].copy_from_slice(&PATTERN[..n]);
            self.content_left -= n as u64;
            return Ok(n);
        }
        let n = buf.len().min(self.pad_left as usize);
        buf[..n].fill(0);
        self.pad_left -= n as u64;
        Ok(n)
    }
}

fn status_kb(field: &str) -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn memory_does_not_grow_with_the_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let diff = tmp.path().join("diff");
    fs::create_dir(&diff).unwrap();
    let opts = ApplyOptions {
        whiteout: WhiteoutFormat::Overlay { user_xattr: false },
        ignore_chown_errors: false,
    };
    // Reset the peak ("5" > clear_refs) so VmHWM measures this apply only.
    fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = status_kb("VmRSS:");
    let mut split = TarSplitWriter::new(io::sink());
    let report = apply_layer(Generator::new(), &diff, &mut split, &opts).unwrap();
    let growth_kb = status_kb("VmHWM:").saturating_sub(before);
    assert_eq!(report.diff_size as u64, FILES * (512 + FILE_SIZE) + 1024);
    assert_eq!(
        fs::metadata(diff.join("data/file3")).unwrap().len(),
        FILE_SIZE
    );
    assert!(
        growth_kb < MAX_GROWTH_KB,
        "peak RSS grew by {growth_kb} kB applying a {} MB layer",
        report.diff_size >> 20
    );
    eprintln!(
        "peak RSS growth: {growth_kb} kB for {} MB",
        report.diff_size >> 20
    );
}
