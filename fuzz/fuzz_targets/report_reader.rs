//! The report reader on arbitrary bytes, as `crashmail inspect` and
//! `crashmail triage` meet them: a zip, or an email that may carry one.
//! It may refuse them; it must never panic or run away with memory.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let zip = if data.starts_with(b"PK") {
        Some(data.to_vec())
    } else {
        crashmail::inspect::zip_from_email(data)
    };
    if let Some(zip) = zip {
        if let Ok(entries) = crashmail::bundle::read_zip_entries(&zip) {
            let report = crashmail::inspect::from_entries(entries);
            let options = crashmail::inspect::ShowOptions {
                log_lines: 5,
                ..Default::default()
            };
            let _ = crashmail::inspect::render(&report, &options);
        }
    }
});
