//! What the benches share (each bench uses part of it; the tests use
//! `another_report` too).
#![allow(dead_code)]

/// `size` bytes of printable text that does not compress (a xorshift
/// stream), in lines of 100: log tails that cost what real ones do.
pub fn noisy(size: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..size)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if i % 100 == 99 {
                b'\n'
            } else {
                b' ' + (state % 94) as u8
            }
        })
        .collect()
}

/// A copy of a report email (`template`) that is another report: its zip's
/// `report.json` carries report id number `n`, everything else as it was.
/// Triage counts one report once however many copies of its email there are,
/// so many reports are made this way, not by copying one email.
pub fn another_report(template: &[u8], n: u64) -> Vec<u8> {
    use std::io::Write as _;
    let zip = crashmail::inspect::zip_from_email(template).expect("a report email");
    let mut entries = crashmail::bundle::read_zip_entries(&zip).expect("a report zip");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&entries["report.json"]).expect("report.json");
    meta["id"] = format!("00000000-0000-4000-8000-{n:012x}").into();
    entries.insert(
        "report.json".into(),
        serde_json::to_vec_pretty(&meta).unwrap(),
    );
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in &entries {
        writer
            .start_file(name.as_str(), zip::write::SimpleFileOptions::default())
            .unwrap();
        writer.write_all(bytes).unwrap();
    }
    let zip = writer.finish().unwrap().into_inner();

    // The attachment's body: from the blank line after its headers to the
    // closing boundary.
    let text = String::from_utf8_lossy(template);
    let part = text.find("application/zip").expect("a zip attachment");
    let body = part + text[part..].find("\r\n\r\n").expect("its headers end") + 4;
    let end = body + text[body..].find("\r\n--").expect("its boundary");
    let mut out = text[..body].to_string();
    out.push_str(&base64_lines(&zip));
    out.push_str(&text[end..]);
    out.into_bytes()
}

/// Base64 in lines of 76, as MIME writes it.
fn base64_lines(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut encoded = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                encoded.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                encoded.push('=');
            }
        }
    }
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(76)
        .map(|line| std::str::from_utf8(line).unwrap())
        .collect();
    lines.join("\r\n")
}
