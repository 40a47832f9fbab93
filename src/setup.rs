//! `crashmail setup`: writes the `[smtp]` settings into `AXIS.INI` and
//! checks the server, as the old product's SETUP did.
//!
//! Only the lines that change are touched: every other section, comment,
//! blank line, key order, line ending and the file's encoding stay as they
//! were, since `AXIS.INI` is the application's own file too.

use crate::config::ini::{self, Encoding};
use crate::config::SMTP;
use std::path::{Path, PathBuf};

/// A server found in another program's configuration on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suggestion {
    pub server: String,
    pub port: Option<u16>,
    /// Where it was found, for the prompt.
    pub source: String,
}

impl Suggestion {
    /// `host` or `host:port`, as `Server` takes it.
    pub fn server_value(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.server),
            None => self.server.clone(),
        }
    }
}

/// Servers configured for other mail programs: msmtp, sSMTP, git
/// send-email, Thunderbird, Postfix's relayhost. `home` is the user's home
/// folder and `etc` the system configuration folder (`/etc`).
pub fn suggestions(home: &Path, etc: &Path) -> Vec<Suggestion> {
    let mut found = Vec::new();
    for path in [home.join(".msmtprc"), etc.join("msmtprc")] {
        if let Ok(text) = std::fs::read_to_string(&path) {
            let mut host = None;
            let mut port = None;
            for line in text.lines() {
                let mut words = line.split_whitespace();
                match words.next() {
                    Some("host") => host = host.or(words.next().map(str::to_string)),
                    Some("port") => port = port.or(words.next().and_then(|p| p.parse().ok())),
                    _ => {}
                }
            }
            if let Some(server) = host {
                found.push(Suggestion {
                    server,
                    port,
                    source: path.display().to_string(),
                });
            }
        }
    }
    let ssmtp = etc.join("ssmtp/ssmtp.conf");
    if let Ok(text) = std::fs::read_to_string(&ssmtp) {
        if let Some(hub) = text.lines().find_map(|l| l.trim().strip_prefix("mailhub=")) {
            found.push(split_suggestion(hub.trim(), &ssmtp.display().to_string()));
        }
    }
    if let Some(server) = git_config(home, "sendemail.smtpServer") {
        let port = git_config(home, "sendemail.smtpServerPort").and_then(|p| p.parse().ok());
        found.push(Suggestion {
            server,
            port,
            source: "git config sendemail.smtpServer".into(),
        });
    }
    for profile in std::fs::read_dir(home.join(".thunderbird"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let prefs = profile.path().join("prefs.js");
        let Ok(text) = std::fs::read_to_string(&prefs) else {
            continue;
        };
        let value = |key: &str| -> Option<String> {
            text.lines().find_map(|line| {
                let rest = line.trim().strip_prefix("user_pref(\"")?;
                let (name, value) = rest.split_once("\",")?;
                (name.starts_with("mail.smtpserver.") && name.ends_with(key)).then(|| {
                    value
                        .trim()
                        .trim_end_matches(");")
                        .trim()
                        .trim_matches('"')
                        .to_string()
                })
            })
        };
        if let Some(server) = value(".hostname") {
            found.push(Suggestion {
                server,
                port: value(".port").and_then(|p| p.parse().ok()),
                source: prefs.display().to_string(),
            });
        }
    }
    let main_cf = etc.join("postfix/main.cf");
    if let Ok(text) = std::fs::read_to_string(&main_cf) {
        let relay = text.lines().find_map(|line| {
            let (key, value) = line.split_once('=')?;
            (key.trim() == "relayhost" && !value.trim().is_empty())
                .then(|| value.trim().to_string())
        });
        if let Some(relay) = relay {
            // `[host]:port`: the brackets only turn off MX lookups.
            let relay = relay.replacen('[', "", 1).replacen(']', "", 1);
            found.push(split_suggestion(
                &relay,
                &format!("{} relayhost", main_cf.display()),
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    found.retain(|s| seen.insert(s.server_value()));
    found
}

fn split_suggestion(value: &str, source: &str) -> Suggestion {
    match value.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => Suggestion {
            server: host.to_string(),
            port: port.parse().ok(),
            source: source.to_string(),
        },
        _ => Suggestion {
            server: value.to_string(),
            port: None,
            source: source.to_string(),
        },
    }
}

fn git_config(home: &Path, key: &str) -> Option<String> {
    let output = std::process::Command::new("git")
        .args(["config", "--global", "--get", key])
        .env("HOME", home)
        .env_remove("GIT_CONFIG_GLOBAL")
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let value = String::from_utf8_lossy(&output.stdout).trim().to_string();
    (output.status.success() && !value.is_empty()).then_some(value)
}

/// Applies `changes` (key, new value) to the `[smtp]` section of an INI
/// file's bytes and returns the new bytes. `None` starts a new file.
pub fn apply(original: Option<&[u8]>, changes: &[(&str, String)]) -> Result<Vec<u8>, String> {
    let (text, encoding) = match original {
        Some(bytes) => ini::decode(bytes),
        None => (String::new(), Encoding::Utf8),
    };
    let newline = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let document = ini::parse(&text).map_err(|e| format!("line {}: {}", e.line, e.message))?;
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let ends_with_newline = text.is_empty() || text.ends_with('\n');

    // Where new keys go: after the last line of the last [smtp] section.
    let mut insert_at = last_line_of_section(&lines, SMTP);
    let mut appended_section = false;
    for (key, value) in changes {
        let written = format_value(value);
        match document.get(SMTP, key) {
            Some(entry) if entry.value == *value => {}
            Some(entry) => {
                let line = &mut lines[entry.line - 1];
                let prefix_end = line.find('=').map(|i| i + 1).unwrap_or(line.len());
                let spacing = if line[prefix_end..].starts_with(' ') {
                    " "
                } else {
                    ""
                };
                *line = format!("{}{spacing}{written}", &line[..prefix_end]);
            }
            None => {
                let new_line = format!("{key} = {written}");
                match insert_at {
                    Some(index) => {
                        lines.insert(index + 1, new_line);
                        insert_at = Some(index + 1);
                    }
                    None => {
                        if !lines.is_empty() && !lines.last().is_some_and(|l| l.trim().is_empty()) {
                            lines.push(String::new());
                        }
                        if !appended_section {
                            lines.push("[smtp]".to_string());
                            appended_section = true;
                        }
                        lines.push(new_line);
                        insert_at = Some(lines.len() - 1);
                    }
                }
            }
        }
    }
    let mut text = lines.join(newline);
    if ends_with_newline || appended_section {
        text.push_str(newline);
    }
    Ok(ini::encode(&text, encoding))
}

/// The index of the last non-blank line of the last `[section]`.
fn last_line_of_section(lines: &[String], section: &str) -> Option<usize> {
    let mut in_section = false;
    let mut last = None;
    for (index, line) in lines.iter().enumerate() {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix('[') {
            in_section = rest
                .split(']')
                .next()
                .is_some_and(|name| name.trim().eq_ignore_ascii_case(section));
            if in_section {
                last = Some(index);
            }
            continue;
        }
        if in_section && !trimmed.is_empty() {
            last = Some(index);
        }
    }
    last
}

/// A value as written: quoted when spaces at its ends or a quote at its
/// start would otherwise be lost.
fn format_value(value: &str) -> String {
    if value != value.trim() || value.starts_with('"') || value.starts_with('\'') {
        format!("\"{value}\"")
    } else {
        value.to_string()
    }
}

/// Writes the file: in place with its permissions kept, or new and
/// readable by its owner only.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0o600);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    crate::outbox::write_atomic(path, bytes)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Where setup writes when no `--ini` is given: the file that would be
/// read, else `AXIS.INI` in `$AXIS_HOME` or the current folder.
pub fn default_path(cwd: &Path) -> PathBuf {
    if let Ok(found) = crate::config::find(None, None, Some(cwd)) {
        return found;
    }
    let home = std::env::var_os(crate::config::AXIS_HOME_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| cwd.to_path_buf());
    home.join("AXIS.INI")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply_text(original: &str, changes: &[(&str, &str)]) -> String {
        let changes: Vec<(&str, String)> =
            changes.iter().map(|(k, v)| (*k, v.to_string())).collect();
        String::from_utf8(apply(Some(original.as_bytes()), &changes).unwrap()).unwrap()
    }

    #[test]
    fn only_changed_lines_change() {
        let original = "; AXIS settings\r\n[database]\r\nPath = \\\\srv\\data\r\n\r\n[SMTP]\r\n; relay\r\nserver   =   old.example.com\r\nTo = support@example.com\r\n\r\n[ui]\r\nTheme = dark\r\n";
        let updated = apply_text(
            original,
            &[
                ("Server", "mail.example.com"),
                ("To", "support@example.com"),
                ("Domain", "example.com"),
            ],
        );
        assert_eq!(
            updated,
            "; AXIS settings\r\n[database]\r\nPath = \\\\srv\\data\r\n\r\n[SMTP]\r\n; relay\r\nserver   = mail.example.com\r\nTo = support@example.com\r\nDomain = example.com\r\n\r\n[ui]\r\nTheme = dark\r\n"
        );
    }

    #[test]
    fn a_missing_section_is_appended() {
        let updated = apply_text("[app]\nx = 1\n", &[("Server", "mail.example.com")]);
        assert_eq!(
            updated,
            "[app]\nx = 1\n\n[smtp]\nServer = mail.example.com\n"
        );
    }

    #[test]
    fn the_key_in_force_is_the_one_changed() {
        let updated = apply_text("[smtp]\nPort = 25\nPort = 2525\n", &[("Port", "587")]);
        assert_eq!(updated, "[smtp]\nPort = 25\nPort = 587\n");
    }

    #[test]
    fn encoding_is_kept() {
        let original: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(
                "[smtp]\r\nServer = a.example\r\n"
                    .encode_utf16()
                    .flat_map(|u| u.to_le_bytes()),
            )
            .collect();
        let updated = apply(Some(&original), &[("Server", "b.example".to_string())]).unwrap();
        let (text, encoding) = ini::decode(&updated);
        assert_eq!(encoding, Encoding::Utf16LeBom);
        assert_eq!(text, "[smtp]\r\nServer = b.example\r\n");
    }

    #[test]
    fn suggestions_come_from_other_mail_programs() {
        let home = tempfile::tempdir().unwrap();
        let etc = tempfile::tempdir().unwrap();
        std::fs::write(
            home.path().join(".msmtprc"),
            "defaults\naccount work\nhost smtp.work.example\nport 587\n",
        )
        .unwrap();
        std::fs::create_dir_all(etc.path().join("ssmtp")).unwrap();
        std::fs::write(
            etc.path().join("ssmtp/ssmtp.conf"),
            "root=postmaster\nmailhub=hub.example.net:25\n",
        )
        .unwrap();
        std::fs::create_dir_all(etc.path().join("postfix")).unwrap();
        std::fs::write(
            etc.path().join("postfix/main.cf"),
            "myhostname = x\nrelayhost = [relay.example.org]:2525\n",
        )
        .unwrap();
        let profile = home.path().join(".thunderbird/abcd.default");
        std::fs::create_dir_all(&profile).unwrap();
        std::fs::write(
            profile.join("prefs.js"),
            "user_pref(\"mail.smtpserver.smtp1.hostname\", \"smtp.mailbox.example\");\nuser_pref(\"mail.smtpserver.smtp1.port\", 465);\n",
        )
        .unwrap();
        std::fs::write(
            home.path().join(".gitconfig"),
            "[sendemail]\n\tsmtpServer = git-smtp.example.com\n",
        )
        .unwrap();
        let found: Vec<String> = suggestions(home.path(), etc.path())
            .iter()
            .map(Suggestion::server_value)
            .collect();
        assert_eq!(
            found,
            vec![
                "smtp.work.example:587",
                "hub.example.net:25",
                "git-smtp.example.com",
                "smtp.mailbox.example:465",
                "relay.example.org:2525"
            ]
        );
    }
}
