//! AXIS.INI files as people write them (fixtures/config).

use crashmail::config::{self, Security};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/config")
        .join(name)
}

#[test]
fn notepad_fixture_is_read_as_written() {
    let config = config::load(&fixture("notepad-bom-crlf.ini")).expect("valid");
    assert_eq!(config.smtp.host, "mail.example.com");
    assert_eq!(config.smtp.port, 587);
    assert_eq!(config.smtp.security, Security::StartTls);
    assert_eq!(
        config.smtp.password.as_ref().map(|p| p.expose()),
        Some("p@ss;word#1")
    );
    assert_eq!(config.smtp.from, "crashmail@example.com");
    assert_eq!(
        config.report.log_files,
        vec![
            PathBuf::from("C:\\AXIS\\logs\\app.log"),
            PathBuf::from("\\\\fileserver\\axis\\shared.log")
        ]
    );
}

#[test]
fn the_file_is_found_case_insensitively_in_the_home_folder() {
    let home = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("notepad-bom-crlf.ini"),
        home.path().join("axis.ini"),
    )
    .unwrap();
    let found = config::find(None, Some(home.path()), None).expect("found");
    assert_eq!(found, home.path().join("axis.ini"));
}

#[test]
fn a_missing_file_names_where_it_was_looked_for() {
    let empty = tempfile::tempdir().unwrap();
    let err = config::find(None, Some(empty.path()), None).unwrap_err();
    assert!(
        err.to_string()
            .contains(&empty.path().display().to_string()),
        "{err}"
    );
}
