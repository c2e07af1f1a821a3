use std::collections::HashMap;
use std::io::{self, Read};

use flate2::read::MultiGzDecoder;

use super::testtar::{disassemble, sample_tar, write_tarsplit, Piece};
use super::writer::{encode_file, encode_segment};
use super::*;

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    MultiGzDecoder::new(data).read_to_end(&mut out).unwrap();
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn file_line(name: &[u8], size: u64, crc: Option<[u8; 8]>, position: u64) -> String {
    let mut buf = Vec::new();
    encode_file(&mut buf, name, size, crc, position);
    String::from_utf8(buf).unwrap()
}

/// Bit-at-a-time CRC-64/GO-ISO, the reference for the table-driven one.
fn crc_reference(data: &[u8]) -> u64 {
    let mut crc = !0u64;
    for &b in data {
        crc ^= u64::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xD800_0000_0000_0000
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn crc64_matches_go_iso() {
    assert_eq!(Crc64::new().value(), 0);
    assert_eq!(
        Crc64::checksum(b"123456789"),
        0xb909_56c7_75a4_1001u64.to_be_bytes()
    );
    // From a tar-split written by containers-storage 1.43 for "hello".
    assert_eq!(Crc64::checksum(b"hello").to_vec(), b64("PD7u4tgQAAA="));
    let data: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for len in [0, 1, 7, 8, 9, 15, 16, 17, 100, 4096, 5000] {
        assert_eq!(
            Crc64::checksum(&data[..len]),
            crc_reference(&data[..len]).to_be_bytes()
        );
    }
    // Feeding in pieces (and through io::Write) gives the same sum.
    let mut crc = Crc64::new();
    for piece in data.chunks(13) {
        io::Write::write_all(&mut crc, piece).unwrap();
    }
    assert_eq!(crc.value(), crc_reference(&data));
}

fn b64(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

#[test]
fn entries_are_encoded_like_go() {
    let mut seg = Vec::new();
    encode_segment(&mut seg, &[0, 1, 2], 0);
    assert_eq!(seg, b"{\"type\":2,\"payload\":\"AAEC\",\"position\":0}\n");
    let mut empty = Vec::new();
    encode_segment(&mut empty, &[], 16);
    assert_eq!(empty, b"{\"type\":2,\"payload\":\"\",\"position\":16}\n");
    let crc = Crc64::checksum(b"hello");
    // Lines as containers-storage 1.43 wrote them.
    assert_eq!(
        file_line(b"./a", 5, Some(crc), 7),
        "{\"type\":1,\"name\":\"./a\",\"size\":5,\"payload\":\"PD7u4tgQAAA=\",\"position\":7}\n"
    );
    assert_eq!(
        file_line(b"./d/", 0, None, 11),
        "{\"type\":1,\"name\":\"./d/\",\"payload\":null,\"position\":11}\n"
    );
    // No name at all: both name fields are omitempty.
    assert_eq!(
        file_line(b"", 0, None, 1),
        "{\"type\":1,\"payload\":null,\"position\":1}\n"
    );
}

#[test]
fn names_are_escaped_like_go() {
    assert_eq!(
        file_line("a<b>&c\"\\\u{1}\u{2028}é".as_bytes(), 0, None, 0),
        "{\"type\":1,\"name\":\"a\\u003cb\\u003e\\u0026c\\\"\\\\\\u0001\\u2028é\",\"payload\":null,\"position\":0}\n"
    );
    // Not UTF-8: the bytes go to name_raw, in base64.
    assert_eq!(
        file_line(b"caf\xe9", 0, None, 3),
        "{\"type\":1,\"name_raw\":\"Y2Fm6Q==\",\"payload\":null,\"position\":3}\n"
    );
}

#[test]
fn clean_path_is_go_filepath_clean() {
    let cases: [(&[u8], &[u8]); 12] = [
        (b"", b"."),
        (b".", b"."),
        (b"./", b"."),
        (b"./a", b"a"),
        (b"a/", b"a"),
        (b"a//b/./c/", b"a/b/c"),
        (b"a/../b", b"b"),
        (b"a/../..", b".."),
        (b"../a/..", b".."),
        (b"/..", b"/"),
        (b"//a/../../b", b"/b"),
        (b"/", b"/"),
    ];
    for (input, want) in cases {
        assert_eq!(
            clean_path(input),
            want,
            "{:?}",
            input.escape_ascii().to_string()
        );
    }
}

#[test]
fn writer_refuses_duplicate_paths() {
    let mut w = TarSplitWriter::new(Vec::new());
    w.file(b"./a", 0, None).unwrap();
    for dup in [&b"a"[..], b"a/", b"b/../a", b"./a"] {
        let err = w.file(dup, 0, None).unwrap_err();
        assert!(
            matches!(&err, TarSplitError::DuplicatePath { name } if name == dup),
            "{err}"
        );
    }
    w.segment(b"").unwrap(); // no entry
    w.file(b"b", 0, None).unwrap();
    let json = gunzip(&w.finish().unwrap());
    // Refused and empty entries take no position.
    assert_eq!(
        String::from_utf8(json).unwrap(),
        "{\"type\":1,\"name\":\"./a\",\"payload\":null,\"position\":0}\n\
         {\"type\":1,\"name\":\"b\",\"payload\":null,\"position\":1}\n"
    );
}

#[test]
fn reader_decodes_go_lines() {
    let json = "{\"type\":2,\"payload\":\"AAEC\",\"position\":0}\n\
        \n\
        {\"type\":1,\"name\":\"./a\",\"size\":5,\"payload\":\"PD7u4tgQAAA=\",\"position\":1}\n\
        {\"type\":1,\"name_raw\":\"Y2Fm6Q==\",\"payload\":null,\"position\":2}\n\
        {\"type\":1,\"name\":\"x\",\"name_raw\":\"eQ==\",\"payload\":null,\"position\":3}\n\
        {\"type\":2,\"payload\":\"\",\"position\":4}\n";
    let entries = read_entries(gzip(json.as_bytes()).as_slice()).unwrap();
    let file = |name: &[u8], size, crc| Entry::File {
        name: name.to_vec(),
        size,
        crc,
    };
    assert_eq!(
        entries,
        [
            Entry::Segment(vec![0, 1, 2]),
            file(b"./a", 5, Some(Crc64::checksum(b"hello"))),
            file(b"caf\xe9", 0, None),
            file(b"y", 0, None),
            Entry::Segment(vec![]),
        ]
    );
}

fn read_err(json: &str) -> TarSplitError {
    read_entries(gzip(json.as_bytes()).as_slice()).unwrap_err()
}

#[test]
fn reader_rejects_bad_entries() {
    let dup = "{\"type\":1,\"name\":\"a\",\"payload\":null,\"position\":0}\n\
        {\"type\":1,\"name\":\"./a/\",\"payload\":null,\"position\":1}\n";
    assert!(matches!(read_err(dup), TarSplitError::DuplicatePath { name } if name == b"./a/"));
    let cases = [
        (
            "{\"type\":2,\"payload\":\"\"}\n{\"type\":2,\"payload\":\"%%\"}\n",
            2,
            "payload is not valid base64",
        ),
        ("{\"type\":3,\"payload\":null}\n", 1, "unknown entry type 3"),
        ("{\"payload\":null}\n", 1, "entry has no type"),
        (
            "{\"type\":1,\"size\":-1,\"payload\":null}\n",
            1,
            "negative size",
        ),
        (
            "{\"type\":1,\"size\":1,\"payload\":\"AAEC\"}\n",
            1,
            "3 bytes, a CRC-64 has 8",
        ),
    ];
    for (json, want_line, want) in cases {
        match read_err(json) {
            TarSplitError::Decode { line, message } => {
                assert_eq!(line, want_line, "{json}");
                assert!(message.contains(want), "{message:?} for {json}");
            }
            other => panic!("{other:?} for {json}"),
        }
    }
    let err = read_err("{\"type\":2,\"payload\":\"\"}\n{\"type\":2,\n");
    assert!(
        matches!(err, TarSplitError::Json { line: 2, .. }),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "tar-split line 2 is not a valid entry");
}

/// Member contents by name, as a layer's files would provide them.
fn contents(tar: &[u8]) -> HashMap<Vec<u8>, Vec<u8>> {
    let mut map = HashMap::new();
    for piece in disassemble(tar).unwrap() {
        if let Piece::Member { name, content, .. } = piece {
            map.insert(name, tar[content].to_vec());
        }
    }
    map
}

fn reassemble_from(
    tarsplit: &[u8],
    files: &HashMap<Vec<u8>, Vec<u8>>,
) -> Result<Vec<u8>, TarSplitError> {
    let mut out = Vec::new();
    let n = reassemble(
        tarsplit,
        |name| {
            let data = files
                .get(name)
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
            Ok(Box::new(io::Cursor::new(data.clone())) as Box<dyn Read>)
        },
        &mut out,
    )?;
    assert_eq!(n, out.len() as u64);
    Ok(out)
}

#[test]
fn round_trip_reproduces_the_tar() {
    let mut trailer = vec![0u8; 9 * 512];
    trailer.extend_from_slice(b"junk after the archive");
    for trailer in [&[][..], &trailer] {
        let tar = sample_tar(trailer);
        let files = contents(&tar);
        for empty_segment in [true, false] {
            let tarsplit = write_tarsplit(&tar, empty_segment);
            assert_eq!(reassemble_from(&tarsplit, &files).unwrap(), tar);
        }
    }
}

#[test]
fn sample_entries_have_the_tar_reader_names() {
    let tar = sample_tar(&[7; 100]);
    let entries = read_entries(write_tarsplit(&tar, true).as_slice()).unwrap();
    let files: Vec<(String, u64, bool)> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::File { name, size, crc } => Some((
                String::from_utf8_lossy(name).into_owned(),
                *size,
                crc.is_some(),
            )),
            Entry::Segment(_) => None,
        })
        .collect();
    let f = |n: &str, size, crc| (n.to_owned(), size, crc);
    assert_eq!(
        files,
        [
            f("pax_global_header", 0, false),
            f("d/", 0, false),
            f("d/hello", 6, true),
            f("d/empty", 0, false),
            f("d/link", 0, false),
            f("d/hard", 0, false),
            f(&format!("d/{}", "x".repeat(120)), 4, true),
            f(&format!("{}/{}", "p".repeat(80), "q".repeat(60)), 8, true),
            f("d/longlink", 0, false),
            f("d/pax-ñame<&>", 3, true),
            f("d/caf\u{fffd}", 6, true),
            f("big", (1 << 20) + 3, true),
        ]
    );
    // The end: padding + zero blocks, the trailer, the empty segment.
    let n = entries.len();
    assert_eq!(entries[n - 2], Entry::Segment(vec![7; 100]));
    assert_eq!(entries[n - 1], Entry::Segment(vec![]));
    match &entries[n - 3] {
        Entry::Segment(raw) => assert!(raw.len() >= 1024 && raw.iter().all(|&b| b == 0)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn long_trailers_are_split_in_chunks() {
    let trailer = vec![0u8; PADDING_CHUNK_SIZE + 10];
    let tar = sample_tar(&trailer);
    let entries = read_entries(write_tarsplit(&tar, false).as_slice()).unwrap();
    let n = entries.len();
    assert_eq!(entries[n - 2], Entry::Segment(vec![0; PADDING_CHUNK_SIZE]));
    assert_eq!(entries[n - 1], Entry::Segment(vec![0; 10]));
    assert_eq!(
        reassemble_from(&write_tarsplit(&tar, false), &contents(&tar)).unwrap(),
        tar
    );
}

#[test]
fn reassemble_checks_file_contents() {
    let tar = sample_tar(&[]);
    let tarsplit = write_tarsplit(&tar, true);
    let name = b"d/hello".to_vec();
    let with = |content: &[u8]| {
        let mut files = contents(&tar);
        files.insert(name.clone(), content.to_vec());
        reassemble_from(&tarsplit, &files).unwrap_err()
    };
    let err = with(b"HELLO\n");
    assert!(
        matches!(&err, TarSplitError::CrcMismatch { name: n } if *n == name),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "\"d/hello\" does not match the checksum in its tar-split entry"
    );
    let err = with(b"hel");
    assert!(
        matches!(
            err,
            TarSplitError::ShortFile {
                expected: 6,
                found: 3,
                ..
            }
        ),
        "{err:?}"
    );
    let err = with(b"hello\nworld");
    assert!(
        matches!(err, TarSplitError::LongFile { expected: 6, .. }),
        "{err:?}"
    );
    let mut files = contents(&tar);
    files.remove(&b"d/caf\xe9"[..]);
    let err = reassemble_from(&tarsplit, &files).unwrap_err();
    assert!(matches!(&err, TarSplitError::OpenFile { name, .. } if name == b"d/caf\xe9"));
    assert_eq!(
        err.to_string(),
        "opening \"d/caf\\xe9\" to reassemble the tar"
    );
}
