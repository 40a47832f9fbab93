//! A reader for INI files as people really write them, keeping every line.
//!
//! `rust-ini` was the first choice, but it keeps no line numbers, so it can
//! neither name the line of an invalid value nor the two lines of a repeated
//! key, and it drops comments, which `crashmail setup` must keep. This reader
//! is small and does exactly what `AXIS.INI` needs:
//!
//! - UTF-8 with or without BOM, UTF-16LE with BOM, else Windows-1252 bytes;
//! - CRLF or LF, kept as found when the file is rewritten;
//! - `[section]` and `key = value`, names case-insensitive;
//! - whole-line comments with `;` or `#`; no inline comments, so `;` and `#`
//!   inside a value stay (passwords contain them);
//! - one pair of surrounding quotes removed from a value;
//! - no escapes: backslashes are kept as written (Windows and UNC paths);
//! - a repeated key: the last one wins, with a warning naming both lines.

use std::fmt;

/// The text encoding a file was read in; it is written back the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Utf8,
    Utf8Bom,
    Utf16LeBom,
    Utf16BeBom,
    /// UTF-16 without a byte-order mark, recognised by its zero bytes.
    Utf16Le,
    Utf16Be,
    Windows1252,
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encoding::Utf8 => "UTF-8",
            Encoding::Utf8Bom => "UTF-8 with BOM",
            Encoding::Utf16LeBom => "UTF-16LE with BOM",
            Encoding::Utf16BeBom => "UTF-16BE with BOM",
            Encoding::Utf16Le => "UTF-16LE",
            Encoding::Utf16Be => "UTF-16BE",
            Encoding::Windows1252 => "Windows-1252",
        })
    }
}

/// Decodes the bytes of an INI file.
pub fn decode(bytes: &[u8]) -> (String, Encoding) {
    if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        return (
            String::from_utf8_lossy(rest).into_owned(),
            Encoding::Utf8Bom,
        );
    }
    if let Some(rest) = bytes.strip_prefix(b"\xFF\xFE") {
        return (utf16(rest, u16::from_le_bytes), Encoding::Utf16LeBom);
    }
    if let Some(rest) = bytes.strip_prefix(b"\xFE\xFF") {
        return (utf16(rest, u16::from_be_bytes), Encoding::Utf16BeBom);
    }
    // UTF-16 without a BOM: ASCII text has a zero in every other byte.
    if bytes.len() >= 4 && bytes.len().is_multiple_of(2) {
        let zeros_odd = bytes.iter().skip(1).step_by(2).filter(|b| **b == 0).count();
        let zeros_even = bytes.iter().step_by(2).filter(|b| **b == 0).count();
        let half = bytes.len() / 2;
        if zeros_odd * 10 >= half * 9 && zeros_even == 0 {
            return (utf16(bytes, u16::from_le_bytes), Encoding::Utf16Le);
        }
        if zeros_even * 10 >= half * 9 && zeros_odd == 0 {
            return (utf16(bytes, u16::from_be_bytes), Encoding::Utf16Be);
        }
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_string(), Encoding::Utf8),
        Err(_) => (
            bytes.iter().map(|&b| windows_1252(b)).collect(),
            Encoding::Windows1252,
        ),
    }
}

fn utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> String {
    let units: Vec<u16> = bytes.chunks_exact(2).map(|c| unit([c[0], c[1]])).collect();
    String::from_utf16_lossy(&units)
}

/// Encodes text back into `encoding`. Characters Windows-1252 cannot hold
/// become `?`.
pub fn encode(text: &str, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Utf8 => text.as_bytes().to_vec(),
        Encoding::Utf8Bom => [b"\xEF\xBB\xBF".as_slice(), text.as_bytes()].concat(),
        Encoding::Utf16LeBom | Encoding::Utf16Le | Encoding::Utf16BeBom | Encoding::Utf16Be => {
            let little = matches!(encoding, Encoding::Utf16LeBom | Encoding::Utf16Le);
            let mut bytes = match encoding {
                Encoding::Utf16LeBom => vec![0xFF, 0xFE],
                Encoding::Utf16BeBom => vec![0xFE, 0xFF],
                _ => Vec::new(),
            };
            for unit in text.encode_utf16() {
                bytes.extend_from_slice(&if little {
                    unit.to_le_bytes()
                } else {
                    unit.to_be_bytes()
                });
            }
            bytes
        }
        Encoding::Windows1252 => text
            .chars()
            .map(|c| (0u8..=255).find(|&b| windows_1252(b) == c).unwrap_or(b'?'))
            .collect(),
    }
}

/// The character a Windows-1252 byte stands for.
fn windows_1252(byte: u8) -> char {
    const HIGH: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8D}', 'Ž',
        '\u{8F}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9D}',
        'ž', 'Ÿ',
    ];
    match byte {
        0x80..=0x9F => HIGH[(byte - 0x80) as usize],
        _ => byte as char,
    }
}

/// One `key = value` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The section as written (`SMTP`); compare with [`Entry::is_in`].
    pub section: String,
    /// The key as written (`server`).
    pub key: String,
    /// The value, trimmed and unquoted.
    pub value: String,
    /// 1-based line number.
    pub line: usize,
}

impl Entry {
    pub fn is_in(&self, section: &str) -> bool {
        self.section.eq_ignore_ascii_case(section)
    }

    pub fn is(&self, section: &str, key: &str) -> bool {
        self.is_in(section) && self.key.eq_ignore_ascii_case(key)
    }
}

/// A remark about the file that is not an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub line: usize,
    pub message: String,
}

/// A line the reader cannot make sense of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub message: String,
}

/// A parsed INI file.
#[derive(Clone, Debug, Default)]
pub struct Document {
    /// Every `key = value`, in file order, repeats included.
    pub entries: Vec<Entry>,
    /// Sections in file order, each with the line of its first header.
    pub sections: Vec<(String, usize)>,
    pub warnings: Vec<Warning>,
}

impl Document {
    /// The entry that decides `key` of `section`: the last one written.
    pub fn get(&self, section: &str, key: &str) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.is(section, key))
    }

    pub fn has_section(&self, section: &str) -> bool {
        self.sections
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case(section))
    }
}

/// Parses INI text. Keys before any section header belong to the section "".
pub fn parse(text: &str) -> Result<Document, SyntaxError> {
    let mut document = Document::default();
    let mut section = String::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let Some((name, after)) = rest.split_once(']') else {
                return Err(SyntaxError {
                    line: number,
                    message: format!("section header {line:?} has no closing ]"),
                });
            };
            let after = after.trim();
            if !after.is_empty() && !after.starts_with(';') && !after.starts_with('#') {
                return Err(SyntaxError {
                    line: number,
                    message: format!("unexpected text {after:?} after the section header"),
                });
            }
            section = name.trim().to_string();
            if let Some((_, first)) = document
                .sections
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(&section))
            {
                document.warnings.push(Warning {
                    line: number,
                    message: format!(
                        "section [{section}] appears again (first on line {first}); its keys are merged, and a key given twice keeps its last value"
                    ),
                });
            } else {
                document.sections.push((section.clone(), number));
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(SyntaxError {
                line: number,
                // Only the line's first word is shown: the rest may be a
                // password written with the wrong separator.
                message: format!(
                    "expected `key = value` or `[section]`; this line begins with {:?} (the rest is not shown)",
                    first_word(line)
                ),
            });
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(SyntaxError {
                line: number,
                message: "a value without a key".into(),
            });
        }
        if let Some(previous) = document.entries.iter().rev().find(|e| e.is(&section, key)) {
            document.warnings.push(Warning {
                line: number,
                message: format!(
                    "[{section}] {key} is given on line {} and again on line {number}; the last one (line {number}) is used",
                    previous.line
                ),
            });
        }
        document.entries.push(Entry {
            section: section.clone(),
            key: key.to_string(),
            value: unquote(value.trim()).to_string(),
            line: number,
        });
    }
    Ok(document)
}

/// The leading letters, digits and underscores of a line.
fn first_word(line: &str) -> String {
    line.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '-')
        .take(40)
        .collect()
}

/// `"a b"` → `a b`; `'x'` → `x`; anything else unchanged.
fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return &value[1..value.len() - 1];
        }
    }
    value
}

/// The known name closest to `name`, if it is close enough to be a typo.
pub fn nearest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let name = name.to_ascii_lowercase();
    known
        .iter()
        .map(|candidate| {
            (
                edit_distance(&name, &candidate.to_ascii_lowercase()),
                *candidate,
            )
        })
        .filter(|(distance, candidate)| *distance <= 2.max(candidate.len() / 3))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keep_semicolons_hashes_and_backslashes() {
        let doc = parse("[smtp]\nPassword = p@ss;word#1\nLog = C:\\logs\\a.log\n").unwrap();
        assert_eq!(doc.get("SMTP", "password").unwrap().value, "p@ss;word#1");
        assert_eq!(doc.get("smtp", "LOG").unwrap().value, "C:\\logs\\a.log");
    }

    #[test]
    fn quotes_are_removed_once() {
        let doc = parse("[a]\nx = \"hello world\"\ny = 'it''s'\nz = \"\n").unwrap();
        assert_eq!(doc.get("a", "x").unwrap().value, "hello world");
        assert_eq!(doc.get("a", "y").unwrap().value, "it''s");
        assert_eq!(doc.get("a", "z").unwrap().value, "\"");
    }

    #[test]
    fn repeated_key_warns_with_both_lines_and_the_last_wins() {
        let doc = parse("[smtp]\nPort = 25\n; comment\nport = 587\n").unwrap();
        assert_eq!(doc.get("smtp", "Port").unwrap().value, "587");
        assert_eq!(doc.warnings.len(), 1);
        assert!(
            doc.warnings[0].message.contains("line 2"),
            "{:?}",
            doc.warnings
        );
        assert!(
            doc.warnings[0].message.contains("line 4"),
            "{:?}",
            doc.warnings
        );
    }

    #[test]
    fn a_line_that_is_neither_key_nor_section_is_an_error_with_its_number() {
        let err = parse("[smtp]\nServer = a\njust words\n").unwrap_err();
        assert_eq!(err.line, 3);
    }

    #[test]
    fn a_password_with_the_wrong_separator_is_not_shown() {
        for line in [
            "Password: hunter2b",
            "Password hunter2b",
            "Password:hunter2b",
        ] {
            let err = parse(&format!("[smtp]\n{line}\n")).unwrap_err();
            assert!(!err.message.contains("hunter2b"), "{}", err.message);
            assert!(err.message.contains("\"Password\""), "{}", err.message);
        }
    }

    #[test]
    fn a_long_first_word_of_wide_characters_is_cut_on_a_character() {
        // Found by the fuzzer: a byte index inside a three-byte character.
        let line = "\u{1818}".repeat(30);
        let err = parse(&format!("[smtp]\n{line}\n")).unwrap_err();
        assert_eq!(err.line, 2);
    }

    #[test]
    fn encodings_are_recognised() {
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(
                "[smtp]\r\nTo = ü@example.com\r\n"
                    .encode_utf16()
                    .flat_map(|u| u.to_le_bytes()),
            )
            .collect();
        let (text, encoding) = decode(&utf16);
        assert_eq!(encoding, Encoding::Utf16LeBom);
        assert!(text.contains("ü@example.com"));
        let (text, encoding) = decode(b"[smtp]\nFromName = Soci\xe9t\xe9 \x80\n");
        assert_eq!(encoding, Encoding::Windows1252);
        assert!(text.contains("Société €"));
        assert_eq!(
            encode(&text, Encoding::Windows1252),
            b"[smtp]\nFromName = Soci\xe9t\xe9 \x80\n"
        );
    }

    #[test]
    fn utf16_big_endian_and_without_bom_are_read_and_written_back() {
        let text = "[smtp]\r\nServer = a.example\r\n";
        for encoding in [Encoding::Utf16BeBom, Encoding::Utf16Le, Encoding::Utf16Be] {
            let bytes = encode(text, encoding);
            assert_eq!(decode(&bytes), (text.to_string(), encoding), "{encoding}");
        }
    }

    #[test]
    fn typos_find_their_key() {
        let known = ["Server", "Port", "Security", "Password", "PasswordFile"];
        assert_eq!(nearest("Sever", &known), Some("Server"));
        assert_eq!(nearest("pasword", &known), Some("Password"));
        assert_eq!(nearest("Colour", &known), None);
    }
}
