//! Triage throughput: 10,000 report emails (distinct reports) in a
//! Maildir, grouped by signature. Prints reports per second (median of several runs).
//!
//! Run with `cargo bench --bench triage`.

mod common;

use std::time::Instant;

const REPORTS: usize = 10_000;
const RUNS: usize = 5;

fn main() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/reports");
    let panic = std::fs::read(format!("{fixtures}/demo-panic.eml")).unwrap();
    let segv = std::fs::read(format!("{fixtures}/demo-segv.eml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cur = dir.path().join("Maildir/cur");
    std::fs::create_dir_all(&cur).unwrap();
    std::fs::create_dir_all(dir.path().join("Maildir/new")).unwrap();
    std::fs::create_dir_all(dir.path().join("Maildir/tmp")).unwrap();
    for n in 0..REPORTS {
        let template = if n % 3 == 0 { &panic } else { &segv };
        std::fs::write(
            cur.join(format!("{n}.bench:2,S")),
            common::another_report(template, n as u64),
        )
        .unwrap();
    }
    let paths = vec![dir.path().join("Maildir")];
    let mut rates = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let triage = crashmail::triage::triage(&paths, None, &|_, _| {}).unwrap();
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(triage.reports as usize, REPORTS);
        rates.push(REPORTS as f64 / seconds);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "{:<44} {:>10} {:>10} {:>10}",
        "measure", "median", "min", "max"
    );
    println!(
        "{:<44} {:>10.0} {:>10.0} {:>10.0}",
        format!(
            "triage of {REPORTS} emails (reports/s, {} cores)",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        ),
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1]
    );
}
