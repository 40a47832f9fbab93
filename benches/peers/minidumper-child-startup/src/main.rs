//! Prints how long `MinidumperChild::spawn` takes (µs), then exits.
fn main() {
    let started = std::time::Instant::now();
    let guard = minidumper_child::MinidumperChild::new()
        .on_minidump(|_buffer, _path| {})
        .spawn();
    let took = started.elapsed().as_micros();
    if guard.is_ok() {
        println!("spawn_us={took}");
    }
}
