//! A JSON writer that produces the bytes Go's `encoding/json` (and the
//! json-iterator "compatible" configuration containers/storage uses) produces.
//!
//! containers/storage rewrites its metadata files from Go structs, so the
//! exact output is defined by Go's encoder:
//!
//! - compact: no whitespace, no trailing newline;
//! - struct fields in declaration order (the records spell that order out);
//! - map keys sorted bytewise;
//! - strings escaped with HTML safety: `<`, `>`, `&` as `\u003c`, `\u003e`,
//!   `\u0026`, U+2028 / U+2029 as `\u2028` / `\u2029`, control characters
//!   other than `\n`, `\r`, `\t` as `\u00XX` (lowercase hex);
//! - `float64` values (what an `interface{}` holds after decoding) in the
//!   shortest form, plain decimal unless `abs < 1e-6 || abs >= 1e21`;
//! - `time.Time` as RFC 3339 with nanoseconds and trailing zeros trimmed.
//!
//! [`GoWriter`] is an append-only buffer with one method per field shape;
//! each record type calls them in its Go declaration order, honouring
//! `omitempty` where the Go tag has it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, FixedOffset, NaiveDate, Timelike};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A `time.Time` as containers/storage stores it: an instant plus the UTC
/// offset it was written with (Go keeps the offset through a round trip).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoTime(pub DateTime<FixedOffset>);

impl GoTime {
    /// Go's zero `time.Time` (`0001-01-01T00:00:00Z`), what Go writes for a
    /// record that never had a creation time.
    pub fn zero() -> GoTime {
        let naive = NaiveDate::from_ymd_opt(1, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .expect("0001-01-01 is a valid date");
        GoTime(naive.and_utc().fixed_offset())
    }

    /// The current time in UTC, as containers/storage stamps new records.
    pub fn now() -> GoTime {
        GoTime(chrono::Utc::now().fixed_offset())
    }

    /// Whether this is Go's zero time.
    pub fn is_zero(&self) -> bool {
        *self == GoTime::zero()
    }

    /// Parse an RFC 3339 timestamp, as Go's `time.Time.UnmarshalJSON` does.
    pub fn parse(text: &str) -> Result<GoTime, chrono::ParseError> {
        DateTime::parse_from_rfc3339(text).map(GoTime)
    }

    /// Format as Go's `time.RFC3339Nano`: fraction with trailing zeros
    /// trimmed (and no dot when it is zero), `Z` for a zero offset.
    pub fn to_go_string(&self) -> String {
        let t = &self.0;
        let mut out = t.format("%Y-%m-%dT%H:%M:%S").to_string();
        let nanos = t.nanosecond() % 1_000_000_000;
        if nanos != 0 {
            let frac = format!("{nanos:09}");
            out.push('.');
            out.push_str(frac.trim_end_matches('0'));
        }
        let offset = t.offset().local_minus_utc();
        if offset == 0 {
            out.push('Z');
        } else {
            let sign = if offset < 0 { '-' } else { '+' };
            let abs = offset.unsigned_abs();
            let _ = write!(out, "{sign}{:02}:{:02}", abs / 3600, (abs % 3600) / 60);
        }
        out
    }
}

impl Default for GoTime {
    fn default() -> Self {
        GoTime::zero()
    }
}

impl<'de> Deserialize<'de> for GoTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Option::<String>::deserialize(d)? {
            // Go leaves the zero time for `null`.
            None => Ok(GoTime::zero()),
            Some(s) => GoTime::parse(&s)
                .map_err(|e| serde::de::Error::custom(format!("invalid time {s:?}: {e}"))),
        }
    }
}

/// Deserialize a value where JSON `null` means "absent" (Go leaves the zero
/// value for `null`): use with `#[serde(default, deserialize_with = ...)]`.
pub fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Append-only writer of one Go-encoded JSON value.
///
/// Field methods named `*_omitempty` skip the field when Go's `omitempty`
/// would (empty string, zero number, empty slice or map).
#[derive(Debug, Default)]
pub struct GoWriter {
    buf: Vec<u8>,
    /// Whether the next field or element needs a leading comma, per level.
    first: Vec<bool>,
}

impl GoWriter {
    /// A new, empty writer.
    pub fn new() -> GoWriter {
        GoWriter::default()
    }

    /// The bytes written so far.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// Start an object (`{`).
    pub fn begin_object(&mut self) {
        self.buf.push(b'{');
        self.first.push(true);
    }

    /// End an object (`}`).
    pub fn end_object(&mut self) {
        self.first.pop();
        self.buf.push(b'}');
    }

    /// Start an array (`[`).
    pub fn begin_array(&mut self) {
        self.buf.push(b'[');
        self.first.push(true);
    }

    /// End an array (`]`).
    pub fn end_array(&mut self) {
        self.first.pop();
        self.buf.push(b']');
    }

    /// Write the separator before an array element.
    pub fn element(&mut self) {
        self.comma();
    }

    fn comma(&mut self) {
        if let Some(first) = self.first.last_mut() {
            if *first {
                *first = false;
            } else {
                self.buf.push(b',');
            }
        }
    }

    /// Write `"key":`.
    pub fn key(&mut self, key: &str) {
        self.comma();
        self.string(key);
        self.buf.push(b':');
    }

    /// Write a string with Go's escaping.
    pub fn string(&mut self, s: &str) {
        write_go_string(&mut self.buf, s);
    }

    /// A string field without `omitempty`.
    pub fn str_field(&mut self, key: &str, value: &str) {
        self.key(key);
        self.string(value);
    }

    /// A string field with `omitempty`.
    pub fn str_omitempty(&mut self, key: &str, value: &str) {
        if !value.is_empty() {
            self.str_field(key, value);
        }
    }

    /// An integer field with `omitempty`.
    pub fn int_omitempty(&mut self, key: &str, value: i64) {
        if value != 0 {
            self.int_field(key, value);
        }
    }

    /// An integer field without `omitempty`.
    pub fn int_field(&mut self, key: &str, value: i64) {
        self.key(key);
        let _ = write!(Utf8Sink(&mut self.buf), "{value}");
    }

    /// A `time.Time` field (written even when zero: `omitempty` has no
    /// effect on structs in Go).
    pub fn time_field(&mut self, key: &str, value: &GoTime) {
        self.key(key);
        self.string(&value.to_go_string());
    }

    /// A `[]string` field with `omitempty`.
    pub fn strs_omitempty(&mut self, key: &str, values: &[String]) {
        if values.is_empty() {
            return;
        }
        self.key(key);
        self.begin_array();
        for v in values {
            self.element();
            self.string(v);
        }
        self.end_array();
    }

    /// A `[]uint32` field with `omitempty`.
    pub fn u32s_omitempty(&mut self, key: &str, values: &[u32]) {
        if values.is_empty() {
            return;
        }
        self.key(key);
        self.begin_array();
        for v in values {
            self.element();
            let _ = write!(Utf8Sink(&mut self.buf), "{v}");
        }
        self.end_array();
    }

    /// A `map[string]int64` field with `omitempty`.
    pub fn int_map_omitempty(&mut self, key: &str, map: &BTreeMap<String, i64>) {
        if map.is_empty() {
            return;
        }
        self.key(key);
        self.begin_object();
        for (k, v) in map {
            self.int_field(k, *v);
        }
        self.end_object();
    }

    /// A `map[string]string` field with `omitempty`.
    pub fn str_map_omitempty(&mut self, key: &str, map: &BTreeMap<String, String>) {
        if map.is_empty() {
            return;
        }
        self.key(key);
        self.begin_object();
        for (k, v) in map {
            self.str_field(k, v);
        }
        self.end_object();
    }

    /// A `map[string]interface{}` field with `omitempty`.
    pub fn any_map_omitempty(&mut self, key: &str, map: &BTreeMap<String, Value>) {
        if map.is_empty() {
            return;
        }
        self.key(key);
        self.begin_object();
        for (k, v) in map {
            self.key(k);
            self.value(v);
        }
        self.end_object();
    }

    /// Fields this version of layerstore does not know, kept from the file
    /// and written back after the known ones, in their original order.
    pub fn extra_fields(&mut self, extra: &serde_json::Map<String, Value>) {
        for (k, v) in extra {
            self.key(k);
            self.value(v);
        }
    }

    /// Write a decoded `interface{}` value the way Go re-encodes it:
    /// objects as maps (sorted keys), numbers as `float64`.
    pub fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.buf.extend_from_slice(b"null"),
            Value::Bool(b) => self
                .buf
                .extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::Number(n) => self.number(n),
            Value::String(s) => self.string(s),
            Value::Array(items) => {
                self.begin_array();
                for item in items {
                    self.element();
                    self.value(item);
                }
                self.end_array();
            }
            Value::Object(map) => {
                let sorted: BTreeMap<&String, &Value> = map.iter().collect();
                self.begin_object();
                for (k, item) in sorted {
                    self.key(k);
                    self.value(item);
                }
                self.end_object();
            }
        }
    }

    fn number(&mut self, n: &serde_json::Number) {
        let text = match (n.as_i64(), n.as_u64(), n.as_f64()) {
            // Integers that a float64 holds exactly print the same either way.
            (Some(i), _, _) if i.unsigned_abs() < (1 << 53) => i.to_string(),
            (_, _, Some(f)) => go_float(f),
            _ => n.to_string(),
        };
        self.buf.extend_from_slice(text.as_bytes());
    }
}

/// `io::Write`-free adapter so `write!` can append to the byte buffer.
struct Utf8Sink<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Utf8Sink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Format a float64 as Go's JSON encoder does (`strconv.AppendFloat` with
/// `'f'` or, for very small or large magnitudes, `'e'` with a 1-digit
/// minimum exponent, e.g. `1e-07` becomes `1e-7`).
pub fn go_float(f: f64) -> String {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        // Rust's `{:e}` is shortest-roundtrip like Go's -1 precision;
        // Go writes an explicit `+` on positive exponents.
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((mant, exp)) if !exp.starts_with('-') => format!("{mant}e+{exp}"),
            _ => s,
        }
    } else {
        format!("{f}")
    }
}

/// Append `s` as a Go JSON string literal (HTML-safe escaping).
pub fn write_go_string(buf: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0x00..=0x1f | b'<' | b'>' | b'&' => None,
            // U+2028 and U+2029 are E2 80 A8 / E2 80 A9 in UTF-8.
            0xe2 if bytes.get(i + 1) == Some(&0x80)
                && matches!(bytes.get(i + 2), Some(0xa8 | 0xa9)) =>
            {
                buf.extend_from_slice(&bytes[start..i]);
                buf.extend_from_slice(if bytes[i + 2] == 0xa8 {
                    b"\\u2028"
                } else {
                    b"\\u2029"
                });
                i += 3;
                start = i;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        };
        buf.extend_from_slice(&bytes[start..i]);
        match escape {
            Some(e) => buf.extend_from_slice(e),
            None => buf.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
        i += 1;
        start = i;
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &str) -> String {
        let mut b = Vec::new();
        write_go_string(&mut b, s);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn strings_are_escaped_like_go() {
        let cases = [
            ("plain", r#""plain""#),
            ("a<b>&c", r#""a\u003cb\u003e\u0026c""#),
            ("q\"\\", r#""q\"\\""#),
            ("\n\r\t", r#""\n\r\t""#),
            ("\u{1}\u{8}\u{c}\u{1f}", r#""\u0001\u0008\u000c\u001f""#),
            ("\u{2028}x\u{2029}", r#""\u2028x\u2029""#),
            ("é✓\u{7f}", "\"é✓\u{7f}\""),
        ];
        for (input, want) in cases {
            assert_eq!(enc(input), want, "input {input:?}");
        }
    }

    #[test]
    fn floats_match_go() {
        let cases = [
            (1.0, "1"),
            (0.5, "0.5"),
            (-2.25, "-2.25"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (1e-7, "1e-7"),
            (0.000001, "0.000001"),
            (0.0, "0"),
        ];
        for (f, want) in cases {
            assert_eq!(go_float(f), want, "{f}");
        }
    }

    #[test]
    fn times_round_trip_in_go_form() {
        let cases = [
            "2026-11-22T14:10:59.0722991Z",
            "2026-11-22T14:07:39.848479976Z",
            "2026-11-22T14:07:39Z",
            "0001-01-01T00:00:00Z",
            "2026-01-02T03:04:05.5+02:00",
            "2026-01-02T03:04:05.000000001-07:30",
        ];
        for text in cases {
            assert_eq!(GoTime::parse(text).unwrap().to_go_string(), text);
        }
        assert!(GoTime::parse("0001-01-01T00:00:00Z").unwrap().is_zero());
        // Go trims trailing zeros of the fraction.
        let t = GoTime::parse("2026-11-22T14:10:59.100000000Z").unwrap();
        assert_eq!(t.to_go_string(), "2026-11-22T14:10:59.1Z");
    }

    #[test]
    fn maps_are_sorted_and_fields_keep_order() {
        let mut w = GoWriter::new();
        w.begin_object();
        w.str_field("id", "x");
        w.str_omitempty("skipped", "");
        w.int_omitempty("zero", 0);
        let v: Value =
            serde_json::from_str(r#"{"b":1,"a":[true,null,"<"],"c":{"z":1.5,"y":{}}}"#).unwrap();
        w.key("any");
        w.value(&v);
        w.end_object();
        assert_eq!(
            String::from_utf8(w.into_bytes()).unwrap(),
            r#"{"id":"x","any":{"a":[true,null,"\u003c"],"b":1,"c":{"y":{},"z":1.5}}}"#
        );
    }
}
