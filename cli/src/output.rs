//! Output helpers: aligned tables for people, Go-shaped JSON for scripts.

use std::io::Write;

use layerstore::records::{encode_file, Record};
use layerstore::Snapshot;

/// `text` with control characters (an escape sequence in a name read
/// from a record) shown escaped, so that what a record holds cannot drive
/// the terminal. Other characters are kept.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
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
    if snap.defects.is_empty() {
        return Ok(());
    }
    let mut err = std::io::stderr().lock();
    for d in &snap.defects {
        writeln!(err, "warning: {}", printable(&d.to_string()))?;
    }
    anyhow::bail!(
        "the store has {} defect(s), listed above: the listing shows only the records that could be read, \
         and layerstore refuses to change the store until they are fixed",
        snap.defects.len()
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
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| printable(c).into_owned()).collect())
        .collect();
    let rows = &rows;
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    let line = |cells: &mut dyn Iterator<Item = &str>| -> String {
        let padded: Vec<String> = cells
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    writeln!(out, "{}", line(&mut header.iter().copied()))?;
    for row in rows {
        writeln!(out, "{}", line(&mut row.iter().map(String::as_str)))?;
    }
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
    }
}
