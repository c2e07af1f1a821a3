//! Output helpers: aligned tables for people, Go-shaped JSON for scripts.

use std::io::Write;

use layerstore::consistency::Defect;
use layerstore::records::{encode_file, Record};
use layerstore::Snapshot;

/// Whether `c` must not reach a terminal as it is: a control character
/// (C0, DEL, C1: escape sequences, bells, carriage returns) or a
/// bidirectional override that would show a name reversed.
fn unprintable(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with control characters (an escape sequence in a name read
/// from a record) and bidirectional overrides shown escaped, so that what
/// a record holds cannot drive the terminal. Other characters are kept.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(unprintable) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unprintable(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// stderr for log lines, with what [`printable`] escapes escaped (the
/// line's own newline and tabs kept): log fields quote file names and
/// errors from inside the store.
pub struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let escaped = text
            .split('\n')
            .map(|line| {
                line.split('\t')
                    .map(|part| printable(part).into_owned())
                    .collect::<Vec<_>>()
                    .join("\t")
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::io::stderr().lock().write_all(escaped.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// [`printable`] line by line: the message's own line breaks stay.
pub fn printable_lines(text: &str) -> String {
    text.split('\n')
        .map(printable)
        .collect::<Vec<_>>()
        .join("\n")
}

/// After a listing: the store's defects on stderr, one `warning:` line
/// each, and an error (exit 1) when there are any. The listing itself
/// shows the records that could be read.
pub fn finish_listing(snap: &Snapshot) -> anyhow::Result<()> {
    finish_listing_of(&snap.defects)
}

/// [`finish_listing`] for a listing of one table's records.
pub fn finish_listing_of(defects: &[Defect]) -> anyhow::Result<()> {
    if defects.is_empty() {
        return Ok(());
    }
    let mut err = std::io::stderr().lock();
    for d in defects {
        writeln!(err, "warning: {}", printable(&d.to_string()))?;
    }
    anyhow::bail!(
        "the store has {} defect(s), listed above: the listing shows only the records that could be read, \
         and layerstore refuses to change the store until they are fixed",
        defects.len()
    )
}

/// Print records as containers/storage encodes them (the keys of the
/// store's JSON files), one JSON array followed by a newline.
pub fn print_records<R: Record>(records: &[R]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(&encode_file(records))?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Print rows under a header, columns padded to their widest cell.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
    print_table_of(header, rows.len(), |i| rows[i].clone())
}

/// [`print_table`] of `count` rows made by `row` (called twice per row:
/// once to measure the columns, once to print), so that a table of a
/// million layers never holds all its cells at once.
pub fn print_table_of(
    header: &[&str],
    count: usize,
    row: impl Fn(usize) -> Vec<String>,
) -> anyhow::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for i in 0..count {
        for (w, cell) in widths.iter_mut().zip(row(i)) {
            // Escaped where needed, as it is printed.
            *w = (*w).max(printable(&cell).chars().count());
        }
    }
    // Buffered: one write per 64 KiB, not one per line.
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let line = |cells: &mut dyn Iterator<Item = &str>| -> String {
        let padded: Vec<String> = cells
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    writeln!(out, "{}", line(&mut header.iter().copied()))?;
    for i in 0..count {
        let cells = row(i);
        let shown: Vec<std::borrow::Cow<'_, str>> = cells.iter().map(|c| printable(c)).collect();
        writeln!(out, "{}", line(&mut shown.iter().map(|c| c.as_ref())))?;
    }
    out.flush()?;
    Ok(())
}

/// An id shortened to 12 characters unless `full`.
pub fn short_id(id: &str, full: bool) -> String {
    if full {
        id.to_owned()
    } else {
        id.chars().take(12).collect()
    }
}

/// A byte count for people (`1.9 MB`), decimal units as podman prints them.
pub fn human_size(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ids() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1_996_800), "2.0 MB");
        assert_eq!(short_id("0123456789abcdef", false), "0123456789ab");
        assert_eq!(short_id("0123", true), "0123");
    }

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(printable("plain-name ünïcode"), "plain-name ünïcode");
        assert_eq!(printable("a\u{1b}[2Jb\nc\t"), "a\\u{1b}[2Jb\\nc\\t");
        assert!(!printable("\u{7}\u{9b}x").chars().any(char::is_control));
        assert_eq!(printable("abc\u{202e}fed"), "abc\\u{202e}fed");
    }
}
