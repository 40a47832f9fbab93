//! The AXIS.INI reader on arbitrary bytes: it may refuse them, never panic.
#![no_main]

// The reader is std-only, so it is compiled in directly: the fuzz build does
// not have to instrument all of crashmail's dependencies.
#[path = "../../src/config/ini.rs"]
mod ini;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (text, encoding) = ini::decode(data);
    if let Ok(document) = ini::parse(&text) {
        for entry in &document.entries {
            let found = document.get(&entry.section, &entry.key).expect("a parsed key is found");
            assert!(found.line >= entry.line);
        }
    }
    let round_trip = ini::encode(&text, encoding);
    let (again, _) = ini::decode(&round_trip);
    // UTF-8 round-trips exactly; the others may have replaced invalid
    // sequences, which can change how the bytes look the second time.
    if matches!(encoding, ini::Encoding::Utf8 | ini::Encoding::Utf8Bom) {
        assert_eq!(again, text, "decoding what was encoded gives the text back");
    }
    let word: String = text.chars().take(24).collect();
    let _ = ini::nearest(&word, &["Server", "Port", "Security"]);
});
