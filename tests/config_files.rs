//! AXIS.INI files as people write them: one fixture per case (fixtures/config).

use crashmail::config::{self, ConfigError, Security};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/config")
        .join(name)
}

fn load(name: &str) -> Result<config::Config, ConfigError> {
    config::load(&fixture(name))
}

/// A copy of fixtures in a private folder, with the given mode.
fn private_copy(dir: &Path, names: &[&str], mode: u32) -> PathBuf {
    for name in names {
        let target = dir.join(name);
        std::fs::copy(fixture(name), &target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    dir.join(names[0])
}

#[test]
fn notepad_fixture_is_read_as_written() {
    let config = load("notepad-bom-crlf.ini").expect("valid");
    assert_eq!(config.encoding, config::ini::Encoding::Utf8Bom);
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
fn utf16_file_from_notepad_unicode() {
    let config = load("utf16le-bom-crlf.ini").expect("valid");
    assert_eq!(config.encoding, config::ini::Encoding::Utf16LeBom);
    assert_eq!(config.smtp.host, "mail.example.com");
    assert_eq!(config.smtp.from_name.as_deref(), Some("Support Übergröße"));
}

#[test]
fn windows_1252_file_from_notepad_ansi() {
    let config = load("windows-1252.ini").expect("valid");
    assert_eq!(config.encoding, config::ini::Encoding::Windows1252);
    assert_eq!(
        config.smtp.from_name.as_deref(),
        Some("Société Générale – Support")
    );
}

#[test]
fn names_are_case_insensitive_and_comments_are_whole_lines() {
    let config = load("case-and-comments.ini").expect("valid");
    assert_eq!(
        (config.smtp.host.as_str(), config.smtp.port),
        ("mail.example.com", 2525)
    );
    assert_eq!(config.smtp.security, Security::None);
    assert_eq!(
        config.smtp.to,
        vec!["support@example.com", "ops@example.com"]
    );
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn surrounding_quotes_are_removed_and_inner_semicolons_kept() {
    let config = load("quoted-values.ini").expect("valid");
    assert_eq!(config.smtp.host, "mail.example.com");
    assert_eq!(config.smtp.domain.as_deref(), Some("example.com"));
    assert_eq!(
        config.smtp.from_name.as_deref(),
        Some("AXIS Support; Night Shift")
    );
}

#[test]
fn repeated_key_warns_naming_both_lines_and_the_last_wins() {
    let config = load("duplicate-key.ini").expect("valid");
    assert_eq!(config.smtp.host, "mail.example.com");
    let warning = config
        .warnings
        .iter()
        .find(|w| w.message.contains("Server"))
        .expect("a warning");
    assert_eq!(warning.line, Some(5));
    assert!(
        warning.message.contains("line 2") && warning.message.contains("line 5"),
        "{warning}"
    );
}

#[test]
fn repeated_section_is_merged_with_a_warning() {
    let config = load("duplicate-section.ini").expect("valid: the second [smtp] supplies To");
    assert_eq!(config.smtp.to, vec!["support@example.com"]);
    let warning = config
        .warnings
        .iter()
        .find(|w| w.message.contains("[smtp] appears again"))
        .expect("a warning");
    assert_eq!(warning.line, Some(8));
    assert!(warning.message.contains("line 1"), "{warning}");
}

#[test]
fn unknown_key_suggests_the_nearest_known_one() {
    let config = load("unknown-key.ini").expect("valid");
    let warning = config
        .warnings
        .iter()
        .find(|w| w.message.contains("Pasword"))
        .expect("a warning");
    assert_eq!(warning.line, Some(5));
    assert!(
        warning.message.contains("did you mean Password?"),
        "{warning}"
    );
}

#[test]
fn invalid_port_names_file_line_and_key() {
    let err = load("invalid-port.ini").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("invalid-port.ini:3:"), "{text}");
    assert!(text.contains("[smtp] Port = \"abc\""), "{text}");
    assert_eq!(err.name(), "invalid-value");
}

#[test]
fn invalid_security_names_file_line_and_key() {
    let text = load("invalid-security.ini").unwrap_err().to_string();
    assert!(text.contains("invalid-security.ini:3:"), "{text}");
    assert!(text.contains("Security = \"maybe\""), "{text}");
}

#[test]
fn credentials_without_tls_are_a_configuration_error() {
    let text = load("credentials-without-tls.ini").unwrap_err().to_string();
    assert!(text.contains("never sent without TLS"), "{text}");
    assert!(
        !text.contains("s3cret"),
        "the password must not be printed: {text}"
    );
}

#[test]
fn password_file_is_read_and_its_permissions_checked() {
    let dir = tempfile::tempdir().unwrap();
    let ini = private_copy(
        dir.path(),
        &["password-file.ini", "smtp-password.txt"],
        0o600,
    );
    let config = config::load(&ini).expect("valid");
    assert_eq!(
        config.smtp.password.as_ref().map(|p| p.expose()),
        Some("from;a#file")
    );
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);

    std::fs::set_permissions(
        dir.path().join("smtp-password.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let config = config::load(&ini).expect("valid");
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.message.contains("can be read by other users")),
        "{:?}",
        config.warnings
    );
}

#[test]
fn an_ini_that_only_names_a_password_file_may_be_readable_by_all() {
    let dir = tempfile::tempdir().unwrap();
    let ini = private_copy(
        dir.path(),
        &["password-file.ini", "smtp-password.txt"],
        0o600,
    );
    std::fs::set_permissions(&ini, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = config::load(&ini).expect("valid");
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let password = config
        .settings
        .iter()
        .find(|s| s.key == "Password")
        .unwrap();
    assert_eq!(password.value, "********");
    assert!(
        password.origin.starts_with("from PasswordFile, line "),
        "{}",
        password.origin
    );
}

#[test]
fn a_password_in_a_world_readable_ini_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let ini = private_copy(dir.path(), &["notepad-bom-crlf.ini"], 0o644);
    let config = config::load(&ini).unwrap();
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.message.contains("chmod 600")),
        "{:?}",
        config.warnings
    );
    std::fs::set_permissions(&ini, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(config::load(&ini).unwrap().warnings.is_empty());
}

#[test]
fn other_sections_are_left_alone_and_sizes_take_units() {
    let config = load("other-sections.ini").expect("valid");
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    assert_eq!(config.report.log_tail_bytes, 64 * 1024);
    assert_eq!(
        config.report.log_files[0],
        PathBuf::from("C:\\AXIS\\logs\\app.log")
    );
}

#[test]
fn every_setting_is_listed_with_its_origin_and_secrets_masked() {
    let config = load("notepad-bom-crlf.ini").unwrap();
    let port = config.settings.iter().find(|s| s.key == "Port").unwrap();
    assert_eq!(
        (port.value.as_str(), port.origin.as_str()),
        ("587", "line 4")
    );
    let verify = config
        .settings
        .iter()
        .find(|s| s.key == "TlsVerify")
        .unwrap();
    assert_eq!(
        (verify.value.as_str(), verify.origin.as_str()),
        ("yes", "default")
    );
    let password = config
        .settings
        .iter()
        .find(|s| s.key == "Password")
        .unwrap();
    assert_eq!(password.value, "********");
    for key in config::SMTP_KEYS {
        assert!(
            config.settings.iter().any(|s| s.key == *key),
            "{key} not listed"
        );
    }
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

/// `crashmail config` shows the outbox actually used: `$CRASHMAIL_OUTBOX`
/// wins over `[report] Outbox`, and the line it overrides is named.
#[test]
fn config_shows_the_outbox_the_environment_chooses() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("AXIS.INI");
    std::fs::write(
        &ini,
        "[smtp]\nServer = a.example\nTo = s@example.com\nDomain = example.com\n\
         [report]\nOutbox = /srv/reports\n",
    )
    .unwrap();
    let outbox_line = |env_outbox: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_crashmail"));
        command.arg("config").arg("--ini").arg(&ini);
        match env_outbox {
            Some(path) => command.env("CRASHMAIL_OUTBOX", path),
            None => command.env_remove("CRASHMAIL_OUTBOX"),
        };
        let output = command.output().unwrap();
        assert!(output.status.success(), "{output:?}");
        let stdout = String::from_utf8(output.stdout).unwrap();
        let line = stdout
            .lines()
            .find(|l| l.starts_with("Outbox "))
            .unwrap_or_else(|| panic!("no Outbox line in:\n{stdout}"))
            .to_string();
        line.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    assert_eq!(outbox_line(None), "Outbox = /srv/reports ; line 6");
    assert_eq!(
        outbox_line(Some("/tmp/elsewhere")),
        "Outbox = /tmp/elsewhere ; $CRASHMAIL_OUTBOX (wins over line 6)"
    );
}
