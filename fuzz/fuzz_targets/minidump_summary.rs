//! The minidump summary (signal, stack walk, modules) on arbitrary bytes:
//! a clear error for what cannot be read, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = crashmail::dump::analyse(data, &[]);
});
