//! `AXIS.INI`: where it is found and what its `[smtp]` and `[report]`
//! sections mean.
//!
//! The file is parsed with `rust-ini` (escapes off, so Windows paths keep
//! their backslashes; no inline comments, so `;` and `#` stay in passwords).
//! Every value is validated here, once, and an invalid one is an error that
//! names the file, the line and the key: never a silent default.

use ini::{Ini, ParseOption};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The environment variable naming `AXIS.INI` directly.
pub const AXIS_INI_ENV: &str = "AXIS_INI";
/// The environment variable naming the application's home folder.
pub const AXIS_HOME_ENV: &str = "AXIS_HOME";

/// How the SMTP connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// Plain connection upgraded with STARTTLS; required, never opportunistic.
    StartTls,
    /// TLS from the first byte ("SMTPS").
    Tls,
    /// No encryption. Only when written explicitly, and never with credentials.
    None,
}

impl Security {
    /// The port used when `Port` is not given.
    pub fn default_port(self) -> u16 {
        match self {
            Security::StartTls => 587,
            Security::Tls => 465,
            Security::None => 25,
        }
    }

    fn parse(value: &str) -> Option<Security> {
        match value.trim().to_ascii_lowercase().as_str() {
            "starttls" => Some(Security::StartTls),
            "tls" | "ssl" | "smtps" => Some(Security::Tls),
            "none" | "plain" => Some(Security::None),
            _ => None,
        }
    }
}

impl fmt::Display for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Security::StartTls => "starttls",
            Security::Tls => "tls",
            Security::None => "none",
        })
    }
}

/// A secret that never shows itself in `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"********\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("********")
    }
}

/// The `[smtp]` section, validated.
#[derive(Clone, Debug)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// The domain mail is sent from: default sender and EHLO name.
    pub domain: Option<String>,
    /// The sender address.
    pub from: String,
    /// The support address(es).
    pub to: Vec<String>,
    /// The EHLO name.
    pub helo_name: Option<String>,
    /// Deadline for each SMTP step.
    pub timeout: Duration,
}

/// The `[report]` section: what goes into reports and where they wait.
#[derive(Clone, Debug, Default)]
pub struct ReportConfig {
    /// Extra log files to attach, beside those the application names.
    pub log_files: Vec<PathBuf>,
    /// Bytes kept from the end of each log file.
    pub log_tail_bytes: u64,
    /// The outbox, when not the default.
    pub outbox: Option<PathBuf>,
}

/// A loaded `AXIS.INI`.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub smtp: SmtpConfig,
    pub report: ReportConfig,
}

/// Default bytes kept from the end of each log file.
pub const DEFAULT_LOG_TAIL_BYTES: u64 = 256 * 1024;
/// Default deadline for each SMTP step.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no AXIS.INI found (looked in: {})", .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NotFound { searched: Vec<PathBuf> },
    #[error("{}: cannot read: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", .path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: section [{section}] is missing", .path.display())]
    MissingSection {
        path: PathBuf,
        section: &'static str,
    },
    #[error("{}: [{section}] {key} is required", .path.display())]
    MissingKey {
        path: PathBuf,
        section: &'static str,
        key: &'static str,
    },
    #[error("{}:{}: [{section}] {key} = {value:?}: {why}", .path.display(), .line.map(|l| l.to_string()).unwrap_or_else(|| "?".into()))]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        section: &'static str,
        key: &'static str,
        value: String,
        why: String,
    },
}

impl ConfigError {
    /// A stable short name, for logs and exit codes.
    pub fn name(&self) -> &'static str {
        match self {
            ConfigError::NotFound { .. } => "not-found",
            ConfigError::Read { .. } => "unreadable",
            ConfigError::Syntax { .. } => "syntax",
            ConfigError::MissingSection { .. } => "missing-section",
            ConfigError::MissingKey { .. } => "missing-key",
            ConfigError::Invalid { .. } => "invalid-value",
        }
    }
}

/// Finds `AXIS.INI`: the explicit path, then `$AXIS_INI`, then the home
/// folder (`$AXIS_HOME`, else `exe_dir`), then `cwd`. The name matches
/// case-insensitively.
pub fn find(
    explicit: Option<&Path>,
    exe_dir: Option<&Path>,
    cwd: Option<&Path>,
) -> Result<PathBuf, ConfigError> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os(AXIS_INI_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let home = std::env::var_os(AXIS_HOME_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| exe_dir.map(Path::to_path_buf));
    let mut searched = Vec::new();
    for dir in [home, cwd.map(Path::to_path_buf)].into_iter().flatten() {
        if let Some(found) = find_in_dir(&dir) {
            return Ok(found);
        }
        searched.push(dir);
    }
    Err(ConfigError::NotFound { searched })
}

fn find_in_dir(dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut names: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .eq_ignore_ascii_case("axis.ini")
        })
        .map(|entry| entry.path())
        .collect();
    // `AXIS.INI` before `axis.ini` when both exist: the order is stable.
    names.sort();
    names.into_iter().next()
}

/// Reads and validates `AXIS.INI`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &bytes)
}

/// Validates the bytes of an `AXIS.INI`; `path` is only for messages.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Config, ConfigError> {
    let text = decode(bytes);
    let options = ParseOption {
        enabled_quote: true,
        enabled_escape: false,
        ..ParseOption::default()
    };
    let ini = Ini::load_from_str_opt(&text, options).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        line: e.line,
        message: e.msg.to_string(),
    })?;
    let file = IniFile {
        path,
        text: &text,
        ini: &ini,
    };
    Ok(Config {
        path: path.to_path_buf(),
        smtp: file.smtp()?,
        report: file.report()?,
    })
}

/// Text of the file: UTF-8 with or without BOM; other bytes decoded lossily.
fn decode(bytes: &[u8]) -> String {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    String::from_utf8_lossy(bytes).into_owned()
}

struct IniFile<'a> {
    path: &'a Path,
    text: &'a str,
    ini: &'a Ini,
}

impl IniFile<'_> {
    fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.ini
            .section(Some(section))
            .and_then(|s| s.get(key))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }

    fn invalid(
        &self,
        section: &'static str,
        key: &'static str,
        value: &str,
        why: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: line_of(self.text, section, key),
            section,
            key,
            value: value.to_string(),
            why: why.into(),
        }
    }

    fn missing(&self, section: &'static str, key: &'static str) -> ConfigError {
        ConfigError::MissingKey {
            path: self.path.to_path_buf(),
            section,
            key,
        }
    }

    fn smtp(&self) -> Result<SmtpConfig, ConfigError> {
        const S: &str = "smtp";
        if self.ini.section(Some(S)).is_none() {
            return Err(ConfigError::MissingSection {
                path: self.path.to_path_buf(),
                section: S,
            });
        }
        let server = self
            .get(S, "Server")
            .ok_or_else(|| self.missing(S, "Server"))?;
        let security = match self.get(S, "Security") {
            None => Security::StartTls,
            Some(value) => Security::parse(value).ok_or_else(|| {
                self.invalid(S, "Security", value, "expected starttls, tls or none")
            })?,
        };
        let (host, port_in_server) =
            split_host_port(server).map_err(|why| self.invalid(S, "Server", server, why))?;
        let port = match self.get(S, "Port") {
            Some(value) => {
                let port = parse_port(value).ok_or_else(|| {
                    self.invalid(S, "Port", value, "expected a port number from 1 to 65535")
                })?;
                if port_in_server.is_some_and(|p| p != port) {
                    return Err(self.invalid(
                        S,
                        "Port",
                        value,
                        format!("Server names port {} already", port_in_server.unwrap_or(0)),
                    ));
                }
                port
            }
            None => port_in_server.unwrap_or(security.default_port()),
        };
        let user = self.get(S, "User").map(str::to_string);
        let password = self.get(S, "Password").map(Secret::new);
        if security == Security::None && (user.is_some() || password.is_some()) {
            let value = self.get(S, "Security").unwrap_or("none");
            return Err(self.invalid(S, "Security", value, "credentials are never sent without TLS: use starttls or tls, or remove User and Password"));
        }
        let domain = self
            .get(S, "Domain")
            .map(|d| d.trim_end_matches('.').to_string());
        let from = match self.get(S, "From") {
            Some(from) => {
                check_address(from).map_err(|why| self.invalid(S, "From", from, why))?;
                from.to_string()
            }
            None => match &domain {
                Some(domain) => format!("crashmail@{domain}"),
                None => return Err(self.missing(S, "From")),
            },
        };
        let to_value = self.get(S, "To").ok_or_else(|| self.missing(S, "To"))?;
        let to: Vec<String> = to_value
            .split([',', ';'])
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        for address in &to {
            check_address(address).map_err(|why| self.invalid(S, "To", to_value, why))?;
        }
        if to.is_empty() {
            return Err(self.missing(S, "To"));
        }
        let timeout = match self.get(S, "Timeout") {
            Some(value) => parse_seconds(value)
                .ok_or_else(|| self.invalid(S, "Timeout", value, "expected a number of seconds"))?,
            None => DEFAULT_TIMEOUT,
        };
        Ok(SmtpConfig {
            host,
            port,
            security,
            user,
            password,
            helo_name: self
                .get(S, "HeloName")
                .map(|h| h.trim_end_matches('.').to_string()),
            domain,
            from,
            to,
            timeout,
        })
    }

    fn report(&self) -> Result<ReportConfig, ConfigError> {
        const R: &str = "report";
        let log_files = self
            .get(R, "LogFiles")
            .map(|value| {
                value
                    .split(';')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        let log_tail_bytes = match self.get(R, "LogTailBytes") {
            Some(value) => value
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    self.invalid(
                        R,
                        "LogTailBytes",
                        value,
                        "expected a positive number of bytes",
                    )
                })?,
            None => DEFAULT_LOG_TAIL_BYTES,
        };
        Ok(ReportConfig {
            log_files,
            log_tail_bytes,
            outbox: self.get(R, "Outbox").map(PathBuf::from),
        })
    }
}

fn parse_port(value: &str) -> Option<u16> {
    value.trim().parse::<u16>().ok().filter(|p| *p != 0)
}

fn parse_seconds(value: &str) -> Option<Duration> {
    let value = value.trim();
    let number = value.strip_suffix('s').unwrap_or(value).trim();
    number
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
        .map(Duration::from_secs_f64)
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_host_port(server: &str) -> Result<(String, Option<u16>), String> {
    let server = server.trim();
    if let Some(rest) = server.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("unclosed [ in an IPv6 address")?;
        return match after.strip_prefix(':') {
            Some(port) => Ok((
                host.to_string(),
                Some(parse_port(port).ok_or("the port is not a number from 1 to 65535")?),
            )),
            None if after.is_empty() => Ok((host.to_string(), None)),
            None => Err("unexpected text after ]".into()),
        };
    }
    match server.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            let port = parse_port(port).ok_or("the port is not a number from 1 to 65535")?;
            check_host(host)?;
            Ok((host.to_string(), Some(port)))
        }
        Some(_) => Ok((server.to_string(), None)),
        None => {
            check_host(server)?;
            Ok((server.to_string(), None))
        }
    }
}

fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("the host name is empty".into());
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || c == '/' || c == '@')
    {
        return Err("a host name has no spaces, slashes or @".into());
    }
    Ok(())
}

/// A plain check that catches typos; the SMTP library checks the rest.
fn check_address(address: &str) -> Result<(), String> {
    let bare = address
        .rsplit_once('<')
        .map(|(_, rest)| rest.trim_end_matches('>'))
        .unwrap_or(address)
        .trim();
    match bare.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !bare.contains(char::is_whitespace) =>
        {
            Ok(())
        }
        _ => Err(format!("{bare:?} is not an email address")),
    }
}

/// The 1-based line of `key` in `[section]`, for messages.
fn line_of(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut current: Option<String> = None;
    let mut found = None;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(name) = line
            .strip_prefix('[')
            .and_then(|l| l.split_once(']'))
            .map(|(n, _)| n)
        {
            current = Some(name.trim().to_ascii_lowercase());
            continue;
        }
        if current.as_deref() != Some(&section.to_ascii_lowercase()) {
            continue;
        }
        if let Some((name, _)) = line.split_once(['=', ':']) {
            if name.trim().eq_ignore_ascii_case(key) {
                // rust-ini keeps the last of repeated keys; so do the messages.
                found = Some(index + 1);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Config, ConfigError> {
        parse(Path::new("AXIS.INI"), text.as_bytes())
    }

    #[test]
    fn notepad_file_with_bom_crlf_and_punctuated_password() {
        let text = "\u{feff}[smtp]\r\nServer = mail.example.com\r\nPort = 587\r\nPassword = p@ss;word#1\r\nUser = ops\r\nTo = support@example.com\r\nDomain = example.com\r\n";
        let config = parse_text(text).expect("valid");
        assert_eq!(config.smtp.host, "mail.example.com");
        assert_eq!(config.smtp.port, 587);
        assert_eq!(
            config.smtp.password.as_ref().map(Secret::expose),
            Some("p@ss;word#1")
        );
        assert_eq!(config.smtp.from, "crashmail@example.com");
        assert_eq!(config.smtp.security, Security::StartTls);
    }

    #[test]
    fn invalid_port_names_file_line_and_key() {
        let err = parse_text(
            "[smtp]\nServer = a.example\nPort = abc\nTo = s@example.com\nDomain = example.com\n",
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("AXIS.INI:3:"), "{message}");
        assert!(message.contains("Port"), "{message}");
        assert_eq!(err.name(), "invalid-value");
    }

    #[test]
    fn invalid_security_is_an_error_not_a_default() {
        let err = parse_text("[SMTP]\nserver = a.example\nsecurity = maybe\nto = s@example.com\ndomain = example.com\n").unwrap_err();
        assert!(err.to_string().contains(":3:"), "{err}");
        assert!(err.to_string().contains("Security"), "{err}");
    }

    #[test]
    fn port_follows_security_and_server_may_carry_it() {
        let tls = parse_text("[smtp]\nServer = a.example\nSecurity = tls\nTo = s@example.com\nDomain = example.com\n").unwrap();
        assert_eq!(tls.smtp.port, 465);
        let inline = parse_text("[smtp]\nServer = 127.0.0.1:2525\nSecurity = none\nTo = s@example.com\nDomain = example.com\n").unwrap();
        assert_eq!(
            (inline.smtp.host.as_str(), inline.smtp.port),
            ("127.0.0.1", 2525)
        );
    }

    #[test]
    fn credentials_without_tls_are_refused() {
        let err = parse_text("[smtp]\nServer = a.example\nSecurity = none\nUser = u\nPassword = p\nTo = s@example.com\nDomain = example.com\n").unwrap_err();
        assert!(err.to_string().contains("never sent without TLS"), "{err}");
    }

    #[test]
    fn secrets_do_not_print() {
        let config = parse_text("[smtp]\nServer = a.example\nUser = u\nPassword = hunter2\nTo = s@example.com\nDomain = example.com\n").unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn windows_paths_keep_backslashes() {
        let config = parse_text("[smtp]\nServer = a.example\nTo = s@example.com\nDomain = example.com\n[report]\nLogFiles = C:\\App\\log\\app.log; \\\\server\\share\\x.log\n").unwrap();
        assert_eq!(
            config.report.log_files,
            vec![
                PathBuf::from("C:\\App\\log\\app.log"),
                PathBuf::from("\\\\server\\share\\x.log")
            ]
        );
    }

    #[test]
    fn missing_recipient_is_named() {
        let err = parse_text("[smtp]\nServer = a.example\nDomain = example.com\n").unwrap_err();
        assert!(err.to_string().contains("To is required"), "{err}");
    }
}
