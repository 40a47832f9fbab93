//! `AXIS.INI`: where it is found and what its `[smtp]` and `[report]`
//! sections mean.
//!
//! Every value is validated here, once. An invalid one is an error that
//! names the file, the line and the key: never a silent default. Remarks
//! that do not stop crashmail (a repeated key, an unknown key, a password
//! readable by others) are warnings carried with the configuration, shown by
//! `crashmail config` and `crashmail check` and logged by the watcher.

pub mod ini;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The environment variable naming `AXIS.INI` directly.
pub const AXIS_INI_ENV: &str = "AXIS_INI";
/// The environment variable naming the application's home folder.
pub const AXIS_HOME_ENV: &str = "AXIS_HOME";

/// The section with the mail settings.
pub const SMTP: &str = "smtp";
/// The section with the report settings.
pub const REPORT: &str = "report";

/// The keys of `[smtp]`, as documented.
pub const SMTP_KEYS: &[&str] = &[
    "Server",
    "Port",
    "Security",
    "User",
    "Password",
    "PasswordFile",
    "From",
    "FromName",
    "To",
    "Cc",
    "Domain",
    "HeloName",
    "TlsVerify",
    "CaFile",
    "TlsServerName",
    "ConnectTimeout",
    "Timeout",
    "MaxMessageSize",
];

/// The keys of `[report]`, as documented.
pub const REPORT_KEYS: &[&str] = &[
    "Enabled",
    "LogFiles",
    "LogTailBytes",
    "Outbox",
    "RetryFirst",
    "RetryMax",
    "GiveUpAfter",
    "RepeatWindow",
    "MailsPerHour",
    "MaxReports",
    "MaxMegabytes",
    "ReportExitCodes",
];

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

    pub fn parse(value: &str) -> Option<Security> {
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
    /// From `Password`, or read from `PasswordFile`.
    pub password: Option<Secret>,
    /// Where the password was read from, if from a file.
    pub password_file: Option<PathBuf>,
    /// The sender address.
    pub from: String,
    /// The sender's display name.
    pub from_name: Option<String>,
    /// The support address(es).
    pub to: Vec<String>,
    pub cc: Vec<String>,
    /// The domain mail is sent from: default sender and EHLO name.
    pub domain: Option<String>,
    /// The EHLO name.
    pub helo_name: Option<String>,
    /// Whether the server's certificate is verified. Only `TlsVerify = no`
    /// turns it off, and every use of such a configuration warns.
    pub tls_verify: bool,
    /// Extra trusted root certificates (PEM).
    pub ca_file: Option<PathBuf>,
    /// The name the certificate is checked against, when `Server` is an
    /// address or an alias.
    pub tls_server_name: Option<String>,
    /// Deadline for establishing the connection.
    pub connect_timeout: Duration,
    /// Deadline for each SMTP step.
    pub timeout: Duration,
    /// Largest message to send, in bytes (encoding included).
    pub max_message_size: Option<u64>,
}

impl SmtpConfig {
    /// The name the TLS certificate must carry.
    pub fn tls_name(&self) -> &str {
        self.tls_server_name.as_deref().unwrap_or(&self.host)
    }

    /// The domain mail is sent from, for Message-IDs: `Domain`, else the
    /// domain of `From`, else `crashmail.invalid`.
    pub fn sender_domain(&self) -> String {
        self.domain
            .clone()
            .or_else(|| {
                self.from
                    .rsplit_once('@')
                    .map(|(_, d)| d.trim_end_matches('>').to_string())
            })
            .unwrap_or_else(|| "crashmail.invalid".to_string())
    }

    /// The EHLO name: `HeloName`, else `Domain`, else this machine's host
    /// name when it is fully qualified; never with a trailing dot. `None`
    /// means the sender uses the address literal of its end (`[192.0.2.7]`).
    pub fn ehlo_name(&self) -> Option<String> {
        self.helo_name
            .as_deref()
            .or(self.domain.as_deref())
            .map(|name| name.trim_end_matches('.').to_string())
            .or_else(|| {
                let host = sysinfo::System::host_name().ok()?;
                let host = host.trim_end_matches('.');
                host.contains('.').then(|| host.to_string())
            })
    }
}

/// The `[report]` section: what goes into reports and where they wait.
#[derive(Clone, Debug)]
pub struct ReportConfig {
    /// Reports are made at all.
    pub enabled: bool,
    /// Log files attached to every report, beside those the application names.
    pub log_files: Vec<PathBuf>,
    /// Bytes kept from the end of each log file.
    pub log_tail_bytes: u64,
    /// The outbox, when not the default.
    pub outbox: Option<PathBuf>,
    /// Retries, digests and caps.
    pub policy: DeliveryPolicy,
    /// An orderly exit with a non-zero status is reported too.
    pub report_exit_codes: bool,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            enabled: true,
            log_files: Vec::new(),
            log_tail_bytes: DEFAULT_LOG_TAIL_BYTES,
            outbox: None,
            policy: DeliveryPolicy::default(),
            report_exit_codes: false,
        }
    }
}

/// How the outbox retries, coalesces and limits mail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// The wait after the first failed attempt; it doubles after each.
    pub retry_first: Duration,
    /// The longest wait between attempts.
    pub retry_max: Duration,
    /// After this long since the first attempt, a report goes to `failed/`.
    pub give_up_after: Duration,
    /// Repeats of one crash signature within this window after a mail are
    /// held and mailed together as one digest when it ends.
    pub repeat_window: Duration,
    /// At most this many mails in any hour.
    pub mails_per_hour: u32,
    /// The outbox keeps at most this many unsent reports…
    pub max_reports: u32,
    /// …and this many megabytes of them.
    pub max_megabytes: u64,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            retry_first: Duration::from_secs(60),
            retry_max: Duration::from_secs(6 * 3600),
            give_up_after: Duration::from_secs(5 * 24 * 3600),
            repeat_window: Duration::from_secs(3600),
            mails_per_hour: 20,
            max_reports: 1000,
            max_megabytes: 200,
        }
    }
}

/// A remark about the configuration that does not stop crashmail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigWarning {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// One effective setting, for `crashmail config`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub section: &'static str,
    pub key: &'static str,
    /// The value in force, secrets masked.
    pub value: String,
    /// `line N` when written in the file, `default` otherwise.
    pub origin: String,
}

/// A loaded `AXIS.INI`.
#[derive(Clone, Debug)]
pub struct Config {
    /// Changes whenever the file (or its PasswordFile) changes; the outbox
    /// retries a configuration problem at once when it does. Holds no secret.
    pub fingerprint: String,
    pub path: PathBuf,
    pub encoding: ini::Encoding,
    pub smtp: SmtpConfig,
    pub report: ReportConfig,
    pub warnings: Vec<ConfigWarning>,
    /// Every key's value in force and where it came from.
    pub settings: Vec<Setting>,
}

/// Default bytes kept from the end of each log file.
pub const DEFAULT_LOG_TAIL_BYTES: u64 = 256 * 1024;
/// Default deadline for each SMTP step.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default deadline for connecting.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no AXIS.INI found: $AXIS_INI is not set, and there is none in {} (set $AXIS_INI or, for the crashmail command, --ini to name one; or run `crashmail setup`)", .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" or "))]
    NotFound { searched: Vec<PathBuf> },
    // The cause is said in the message, not chained as a source, so that a
    // binary printing the whole chain says it once.
    #[error("{}: cannot read: {cause}", .path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
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
    #[error("{}: [{section}] {key} is required{near_miss}", .path.display())]
    MissingKey {
        path: PathBuf,
        section: &'static str,
        key: &'static str,
        /// A key of the section that is most likely this one misspelt:
        /// `" (line 3 has Servr: did you mean Server?)"`, or empty.
        near_miss: String,
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
    let bytes = std::fs::read(path).map_err(|cause| ConfigError::Read {
        path: path.to_path_buf(),
        cause,
    })?;
    let mut config = parse(path, &bytes)?;
    config.fingerprint = fingerprint(path, config.smtp.password_file.as_deref());
    // Only a password written in the file itself; a PasswordFile is checked
    // where it is read.
    if config.smtp.password.is_some() && config.smtp.password_file.is_none() {
        if let Some(warning) = readable_by_others(
            path,
            "run `chmod 600` on it, or move the password to a PasswordFile only you can read",
        ) {
            config.warnings.push(warning);
        }
    }
    Ok(config)
}

/// Path, size and modification time of the file and its PasswordFile.
fn fingerprint(path: &Path, password_file: Option<&Path>) -> String {
    let stamp = |p: &Path| -> String {
        match std::fs::metadata(p) {
            Ok(m) => format!(
                "{}:{}:{}",
                p.display(),
                m.len(),
                m.modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            ),
            Err(_) => format!("{}:missing", p.display()),
        }
    };
    match password_file {
        Some(file) => format!("{} {}", stamp(path), stamp(file)),
        None => stamp(path),
    }
}

/// A warning when `path`, which holds a password, can be read by users
/// other than its owner.
fn readable_by_others(path: &Path, advice: &str) -> Option<ConfigWarning> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o044 != 0).then(|| ConfigWarning {
        path: path.to_path_buf(),
        line: None,
        message: format!(
            "this file holds a password and can be read by other users (mode {:o}); {advice}",
            mode & 0o777
        ),
    })
}

/// Validates the bytes of an `AXIS.INI`; `path` names the file in messages
/// and anchors relative paths (`PasswordFile`, `CaFile`).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Config, ConfigError> {
    let (text, encoding) = ini::decode(bytes);
    let document = ini::parse(&text).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        line: e.line,
        message: e.message,
    })?;
    let mut reader = Reader {
        path,
        document: &document,
        warnings: document
            .warnings
            .iter()
            .map(|w| ConfigWarning {
                path: path.to_path_buf(),
                line: Some(w.line),
                message: w.message.clone(),
            })
            .collect(),
        settings: Vec::new(),
    };
    reader.warn_unknown_keys();
    let smtp = reader.smtp()?;
    let report = reader.report()?;
    Ok(Config {
        fingerprint: String::new(),
        path: path.to_path_buf(),
        encoding,
        smtp,
        report,
        warnings: reader.warnings,
        settings: reader.settings,
    })
}

struct Reader<'a> {
    path: &'a Path,
    document: &'a ini::Document,
    warnings: Vec<ConfigWarning>,
    settings: Vec<Setting>,
}

impl Reader<'_> {
    fn entry(&self, section: &str, key: &str) -> Option<&ini::Entry> {
        self.document
            .get(section, key)
            .filter(|e| !e.value.is_empty())
    }

    fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.entry(section, key).map(|e| e.value.as_str())
    }

    /// Records the value in force for `crashmail config`.
    fn note(&mut self, section: &'static str, key: &'static str, value: impl Into<String>) {
        let origin = match self.entry(section, key) {
            Some(entry) => format!("line {}", entry.line),
            None => "default".to_string(),
        };
        self.settings.push(Setting {
            section,
            key,
            value: value.into(),
            origin,
        });
    }

    fn invalid(
        &self,
        section: &'static str,
        key: &'static str,
        why: impl Into<String>,
    ) -> ConfigError {
        let entry = self.entry(section, key);
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: entry.map(|e| e.line),
            section,
            key,
            value: entry.map(|e| e.value.clone()).unwrap_or_default(),
            why: why.into(),
        }
    }

    fn missing(&self, section: &'static str, key: &'static str) -> ConfigError {
        let known = if section == SMTP {
            SMTP_KEYS
        } else {
            REPORT_KEYS
        };
        let near_miss = self
            .document
            .entries
            .iter()
            .filter(|e| e.is_in(section) && !known.iter().any(|k| k.eq_ignore_ascii_case(&e.key)))
            .find(|e| {
                ini::nearest(&e.key, known).is_some_and(|near| near.eq_ignore_ascii_case(key))
            })
            .map(|e| format!(" (line {} has {}: did you mean {key}?)", e.line, e.key))
            .or_else(|| {
                let empty = self.document.get(section, key)?;
                Some(format!(" (line {} gives it no value)", empty.line))
            })
            .unwrap_or_default();
        ConfigError::MissingKey {
            path: self.path.to_path_buf(),
            section,
            key,
            near_miss,
        }
    }

    fn warn_unknown_keys(&mut self) {
        // Other sections belong to the application, but one that is nearly
        // [smtp] or [report] is most likely a typo.
        for (section, line) in &self.document.sections {
            if section.eq_ignore_ascii_case(SMTP) || section.eq_ignore_ascii_case(REPORT) {
                continue;
            }
            if let Some(near) = ini::nearest(section, &[SMTP, REPORT]).filter(|_| section.len() > 2)
            {
                self.warnings.push(ConfigWarning {
                    path: self.path.to_path_buf(),
                    line: Some(*line),
                    message: format!(
                        "section [{section}] is not crashmail's; did you mean [{near}]?"
                    ),
                });
            }
        }
        for entry in &self.document.entries {
            let known = if entry.is_in(SMTP) {
                SMTP_KEYS
            } else if entry.is_in(REPORT) {
                REPORT_KEYS
            } else {
                // Other sections belong to the application; but one of
                // crashmail's keys before any section is most likely meant
                // for it, and is read by nobody.
                if entry.section.is_empty() {
                    if let Some(owner) = [(SMTP, SMTP_KEYS), (REPORT, REPORT_KEYS)]
                        .iter()
                        .find(|(_, keys)| keys.iter().any(|k| k.eq_ignore_ascii_case(&entry.key)))
                        .map(|(section, _)| section)
                    {
                        self.warnings.push(ConfigWarning {
                            path: self.path.to_path_buf(),
                            line: Some(entry.line),
                            message: format!(
                                "{} comes before any [section] and is ignored; put it under [{owner}]",
                                entry.key
                            ),
                        });
                    }
                }
                continue;
            };
            if known.iter().any(|k| k.eq_ignore_ascii_case(&entry.key)) {
                continue;
            }
            let hint = match ini::nearest(&entry.key, known) {
                Some(near) => format!("; did you mean {near}?"),
                None => format!("; known keys: {}", known.join(", ")),
            };
            self.warnings.push(ConfigWarning {
                path: self.path.to_path_buf(),
                line: Some(entry.line),
                message: format!("unknown key {} in [{}]{hint}", entry.key, entry.section),
            });
        }
    }

    fn seconds(
        &mut self,
        section: &'static str,
        key: &'static str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let value = match self.get(section, key) {
            Some(value) => parse_seconds(value).ok_or_else(|| {
                self.invalid(
                    section,
                    key,
                    "expected a number of seconds from 0.1 to 86400",
                )
            })?,
            None => default,
        };
        self.note(section, key, format!("{} s", value.as_secs_f64()));
        Ok(value)
    }

    /// `90`, `90s`, `15m`, `6h`, `5d`.
    fn duration(
        &mut self,
        section: &'static str,
        key: &'static str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let value = match self.get(section, key) {
            Some(value) => parse_duration(value).ok_or_else(|| {
                self.invalid(
                    section,
                    key,
                    "expected a duration such as 90s, 15m, 6h or 5d",
                )
            })?,
            None => default,
        };
        self.note(section, key, format_duration(value));
        Ok(value)
    }

    /// `[report] RepeatWindow`: a duration, or 0 to mail every repeat.
    fn repeat_window(&mut self, default: Duration) -> Result<Duration, ConfigError> {
        let off = self
            .get(REPORT, "RepeatWindow")
            .is_some_and(|value| parse_duration_or_zero(value) == Some(Duration::ZERO));
        if !off {
            return self.duration(REPORT, "RepeatWindow", default);
        }
        self.note(REPORT, "RepeatWindow", "0 (every repeat is mailed)");
        Ok(Duration::ZERO)
    }

    fn count(
        &mut self,
        section: &'static str,
        key: &'static str,
        default: u32,
    ) -> Result<u32, ConfigError> {
        let value = match self.get(section, key) {
            Some(value) => value
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| self.invalid(section, key, "expected a whole number above 0"))?,
            None => default,
        };
        self.note(section, key, value.to_string());
        Ok(value)
    }

    fn boolean(
        &mut self,
        section: &'static str,
        key: &'static str,
        default: bool,
    ) -> Result<bool, ConfigError> {
        let value = match self.get(section, key) {
            Some(value) => {
                parse_bool(value).ok_or_else(|| self.invalid(section, key, "expected yes or no"))?
            }
            None => default,
        };
        self.note(section, key, if value { "yes" } else { "no" });
        Ok(value)
    }

    /// A path from the file: `~/…` in the user's home folder, a relative
    /// one beside the file.
    fn relative_path(&self, value: &str) -> PathBuf {
        let home = std::env::var_os("HOME").filter(|h| !h.is_empty());
        if let (Some(rest), Some(home)) = (value.strip_prefix("~/"), &home) {
            return Path::new(home).join(rest);
        }
        if let (true, Some(home)) = (value == "~", &home) {
            return PathBuf::from(home);
        }
        let path = PathBuf::from(value);
        if path.is_absolute() {
            path
        } else {
            self.path.parent().unwrap_or(Path::new(".")).join(path)
        }
    }

    fn addresses(&mut self, key: &'static str) -> Result<Vec<String>, ConfigError> {
        let Some(value) = self.get(SMTP, key) else {
            self.note(SMTP, key, "");
            return Ok(Vec::new());
        };
        let list: Vec<String> = split_addresses(value);
        for address in &list {
            check_address(address).map_err(|why| self.invalid(SMTP, key, why))?;
        }
        self.note(SMTP, key, list.join(", "));
        Ok(list)
    }

    fn smtp(&mut self) -> Result<SmtpConfig, ConfigError> {
        if !self.document.has_section(SMTP) {
            return Err(ConfigError::MissingSection {
                path: self.path.to_path_buf(),
                section: SMTP,
            });
        }
        let server = self
            .get(SMTP, "Server")
            .ok_or_else(|| self.missing(SMTP, "Server"))?
            .to_string();
        let (host, port_in_server) =
            split_host_port(&server).map_err(|why| self.invalid(SMTP, "Server", why))?;
        self.note(SMTP, "Server", server.clone());

        let security = match self.get(SMTP, "Security") {
            None => Security::StartTls,
            Some(value) => Security::parse(value)
                .ok_or_else(|| self.invalid(SMTP, "Security", "expected starttls, tls or none"))?,
        };
        self.note(SMTP, "Security", security.to_string());

        let port = match self.get(SMTP, "Port") {
            Some(value) => {
                let port = parse_port(value).ok_or_else(|| {
                    self.invalid(SMTP, "Port", "expected a port number from 1 to 65535")
                })?;
                if let Some(in_server) = port_in_server.filter(|p| *p != port) {
                    return Err(self.invalid(
                        SMTP,
                        "Port",
                        format!("Server already names port {in_server}"),
                    ));
                }
                port
            }
            None => port_in_server.unwrap_or(security.default_port()),
        };
        self.note(SMTP, "Port", port.to_string());
        if self.entry(SMTP, "Port").is_none() {
            if let (Some(_), Some(server)) = (port_in_server, self.entry(SMTP, "Server")) {
                let line = server.line;
                if let Some(setting) = self.settings.last_mut() {
                    setting.origin = format!("from Server, line {line}");
                }
            }
        }

        let user = self.get(SMTP, "User").map(str::to_string);
        self.note(SMTP, "User", user.clone().unwrap_or_default());
        let password_path = self
            .get(SMTP, "PasswordFile")
            .map(|f| self.relative_path(f));
        let password = match (self.get(SMTP, "Password"), self.get(SMTP, "PasswordFile")) {
            (Some(_), Some(_)) => {
                return Err(self.invalid(
                    SMTP,
                    "PasswordFile",
                    "give either Password or PasswordFile, not both",
                ))
            }
            (Some(password), None) => Some(Secret::new(password)),
            (None, Some(file)) => {
                let file = self.relative_path(file);
                let text = std::fs::read_to_string(&file).map_err(|e| {
                    self.invalid(
                        SMTP,
                        "PasswordFile",
                        format!("cannot read {}: {e}", file.display()),
                    )
                })?;
                if let Some(warning) = readable_by_others(&file, "run `chmod 600` on it") {
                    self.warnings.push(warning);
                }
                Some(Secret::new(text.trim_end_matches(['\r', '\n'])))
            }
            (None, None) => None,
        };
        self.note(
            SMTP,
            "Password",
            if password.is_some() { "********" } else { "" },
        );
        if let (Some(_), Some(entry)) = (&password, self.entry(SMTP, "PasswordFile")) {
            let line = entry.line;
            if let Some(setting) = self.settings.last_mut() {
                setting.origin = format!("from PasswordFile, line {line}");
            }
        }
        let password_file = self
            .get(SMTP, "PasswordFile")
            .map(str::to_string)
            .unwrap_or_default();
        self.note(SMTP, "PasswordFile", password_file);
        if password.is_some() && user.is_none() {
            return Err(self.missing(SMTP, "User"));
        }
        if security == Security::None && (user.is_some() || password.is_some()) {
            return Err(self.invalid(SMTP, "Security", "credentials are never sent without TLS: use starttls or tls, or remove User and Password"));
        }

        let domain = self
            .get(SMTP, "Domain")
            .map(|d| d.trim_end_matches('.').to_string());
        if let Some(domain) = &domain {
            check_host(domain).map_err(|why| self.invalid(SMTP, "Domain", why))?;
        }
        self.note(SMTP, "Domain", domain.clone().unwrap_or_default());
        let helo_name = self
            .get(SMTP, "HeloName")
            .map(|h| h.trim_end_matches('.').to_string());
        if let Some(helo) = &helo_name {
            check_host(helo).map_err(|why| self.invalid(SMTP, "HeloName", why))?;
        }
        self.note(
            SMTP,
            "HeloName",
            helo_name
                .clone()
                .or_else(|| domain.clone())
                .unwrap_or_else(|| "(an address literal)".into()),
        );

        let from = match self.get(SMTP, "From") {
            Some(from) => {
                check_address(from).map_err(|why| self.invalid(SMTP, "From", why))?;
                from.to_string()
            }
            None => match &domain {
                Some(domain) => format!("crashmail@{domain}"),
                None => {
                    return Err(
                        self.missing(SMTP, "From (or Domain, which gives crashmail@<Domain>)")
                    )
                }
            },
        };
        self.note(SMTP, "From", from.clone());
        let from_name = self.get(SMTP, "FromName").map(str::to_string);
        self.note(SMTP, "FromName", from_name.clone().unwrap_or_default());

        let to = self.addresses("To")?;
        if to.is_empty() {
            return Err(self.missing(SMTP, "To"));
        }
        let cc = self.addresses("Cc")?;

        let tls_verify = self.boolean(SMTP, "TlsVerify", true)?;
        if !tls_verify && security != Security::None {
            let line = self.entry(SMTP, "TlsVerify").map(|e| e.line);
            self.warnings.push(ConfigWarning {
                path: self.path.to_path_buf(),
                line,
                message: "TlsVerify = no: the server's certificate is not checked, so anyone on the way can read the mail and the password".into(),
            });
        }
        let ca_file = self.get(SMTP, "CaFile").map(|f| self.relative_path(f));
        if let Some(ca) = &ca_file {
            if !ca.is_file() {
                return Err(self.invalid(
                    SMTP,
                    "CaFile",
                    format!("{} is not a readable file", ca.display()),
                ));
            }
        }
        self.note(
            SMTP,
            "CaFile",
            ca_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        );
        let tls_server_name = self.get(SMTP, "TlsServerName").map(str::to_string);
        if let Some(name) = &tls_server_name {
            check_host(name).map_err(|why| self.invalid(SMTP, "TlsServerName", why))?;
        }
        self.note(
            SMTP,
            "TlsServerName",
            tls_server_name.clone().unwrap_or_else(|| host.clone()),
        );

        let connect_timeout = self.seconds(SMTP, "ConnectTimeout", DEFAULT_CONNECT_TIMEOUT)?;
        let timeout = self.seconds(SMTP, "Timeout", DEFAULT_TIMEOUT)?;
        let max_message_size = match self.get(SMTP, "MaxMessageSize") {
            Some(value) => Some(parse_size(value).ok_or_else(|| {
                self.invalid(
                    SMTP,
                    "MaxMessageSize",
                    "expected a size in bytes, such as 10485760 or 10M",
                )
            })?),
            None => None,
        };
        self.note(
            SMTP,
            "MaxMessageSize",
            max_message_size
                .map(|n| n.to_string())
                .unwrap_or_else(|| "the server's limit".into()),
        );

        Ok(SmtpConfig {
            host,
            port,
            security,
            user,
            password,
            password_file: password_path,
            from,
            from_name,
            to,
            cc,
            domain,
            helo_name,
            tls_verify,
            ca_file,
            tls_server_name,
            connect_timeout,
            timeout,
            max_message_size,
        })
    }

    fn report(&mut self) -> Result<ReportConfig, ConfigError> {
        let enabled = self.boolean(REPORT, "Enabled", true)?;
        let log_files: Vec<PathBuf> = self
            .get(REPORT, "LogFiles")
            .map(|value| {
                value
                    .split(';')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        self.note(
            REPORT,
            "LogFiles",
            log_files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join("; "),
        );
        let log_tail_bytes = match self.get(REPORT, "LogTailBytes") {
            Some(value) => parse_size(value).filter(|n| *n > 0).ok_or_else(|| {
                self.invalid(
                    REPORT,
                    "LogTailBytes",
                    "expected a positive size in bytes, such as 262144 or 256K",
                )
            })?,
            None => DEFAULT_LOG_TAIL_BYTES,
        };
        self.note(REPORT, "LogTailBytes", log_tail_bytes.to_string());
        let outbox = self.get(REPORT, "Outbox").map(|o| self.relative_path(o));
        // What `crashmail config` shows is the folder actually used: the
        // environment variable wins over the file (see the README's order).
        let from_env = std::env::var_os(crashmail_handler::OUTBOX_ENV).filter(|v| !v.is_empty());
        match (&from_env, &outbox) {
            (Some(path), _) => self.settings.push(Setting {
                section: REPORT,
                key: "Outbox",
                value: PathBuf::from(path).display().to_string(),
                origin: match self.entry(REPORT, "Outbox") {
                    Some(entry) => format!(
                        "${} (wins over line {})",
                        crashmail_handler::OUTBOX_ENV,
                        entry.line
                    ),
                    None => format!("${}", crashmail_handler::OUTBOX_ENV),
                },
            }),
            (None, Some(path)) => self.note(REPORT, "Outbox", path.display().to_string()),
            (None, None) => self.note(REPORT, "Outbox", "the user's state folder"),
        }
        let defaults = DeliveryPolicy::default();
        let policy = DeliveryPolicy {
            retry_first: self.duration(REPORT, "RetryFirst", defaults.retry_first)?,
            retry_max: self.duration(REPORT, "RetryMax", defaults.retry_max)?,
            give_up_after: self.duration(REPORT, "GiveUpAfter", defaults.give_up_after)?,
            repeat_window: self.repeat_window(defaults.repeat_window)?,
            mails_per_hour: self.count(REPORT, "MailsPerHour", defaults.mails_per_hour)?,
            max_reports: self.count(REPORT, "MaxReports", defaults.max_reports)?,
            max_megabytes: u64::from(self.count(
                REPORT,
                "MaxMegabytes",
                defaults.max_megabytes as u32,
            )?),
        };
        if policy.retry_first > policy.retry_max {
            return Err(self.invalid(
                REPORT,
                "RetryFirst",
                format!(
                    "the first retry cannot wait longer than RetryMax ({})",
                    format_duration(policy.retry_max)
                ),
            ));
        }
        let report_exit_codes = self.boolean(REPORT, "ReportExitCodes", false)?;
        Ok(ReportConfig {
            enabled,
            log_files,
            log_tail_bytes,
            outbox,
            policy,
            report_exit_codes,
        })
    }
}

/// Checks one `[smtp]` value as the reader would, for prompts that want to
/// re-ask at once rather than fail at the end.
pub fn validate_smtp_value(key: &str, value: &str) -> Result<(), String> {
    match key.to_ascii_lowercase().as_str() {
        "server" => split_host_port(value).map(|_| ()),
        "security" => Security::parse(value)
            .map(|_| ())
            .ok_or_else(|| "expected starttls, tls or none".to_string()),
        "port" => parse_port(value)
            .map(|_| ())
            .ok_or_else(|| "expected a port number from 1 to 65535".to_string()),
        "domain" | "heloname" => check_host(value.trim_end_matches('.')),
        "from" => check_address(value),
        "to" | "cc" => {
            let list = split_addresses(value);
            if list.is_empty() {
                return Err("at least one address is needed".into());
            }
            list.iter().try_for_each(|address| check_address(address))
        }
        _ => Ok(()),
    }
}

/// `Support <support@example.com>` → `support@example.com`: the address an
/// SMTP envelope takes.
pub fn bare_address(address: &str) -> &str {
    address
        .rsplit_once('<')
        .map(|(_, rest)| rest.trim_end_matches('>'))
        .unwrap_or(address)
        .trim()
}

/// `a@x, b@y; c@z` → three addresses.
pub fn split_addresses(value: &str) -> Vec<String> {
    value
        .split([',', ';'])
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect()
}

/// A positive duration (`90s`, `15m`, `6h`, `5d`; seconds when bare).
fn parse_duration(value: &str) -> Option<Duration> {
    parse_duration_or_zero(value).filter(|d| !d.is_zero())
}

fn parse_duration_or_zero(value: &str) -> Option<Duration> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: u64 = number.parse().ok()?;
    let seconds = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "s" => number,
        "m" | "min" => number.checked_mul(60)?,
        "h" => number.checked_mul(3600)?,
        "d" => number.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(seconds))
}

fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" => Some(true),
        "no" | "false" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// `10485760`, `10M`, `256K`, `1G`.
fn parse_size(value: &str) -> Option<u64> {
    let value = value.trim();
    let (number, unit) = match value.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((index, _)) => value.split_at(index),
        None => (value, ""),
    };
    let number: u64 = number.parse().ok()?;
    let multiplier = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1024,
        "M" | "MB" | "MIB" => 1024 * 1024,
        "G" | "GB" | "GIB" => 1024 * 1024 * 1024,
        _ => return None,
    };
    number.checked_mul(multiplier)
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
    let bare = bare_address(address);
    match bare.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !bare.contains(char::is_whitespace) =>
        {
            Ok(())
        }
        _ => Err(format!("{bare:?} is not an email address")),
    }
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
    fn a_required_key_misspelt_is_named_in_the_error() {
        let err = parse_text("[smtp]\nServr = 127.0.0.1\nTo = a@b.example\nDomain = example.com\n")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "AXIS.INI: [smtp] Server is required (line 2 has Servr: did you mean Server?)"
        );
    }

    #[test]
    fn a_first_retry_longer_than_the_longest_is_refused() {
        let err = parse_text("[smtp]\nServer = a.example\nTo = s@example.com\nDomain = example.com\n[report]\nRetryFirst = 1d\nRetryMax = 1m\n").unwrap_err();
        assert!(
            err.to_string().contains(":6: [report] RetryFirst = \"1d\""),
            "{err}"
        );
        assert!(err.to_string().contains("longer than RetryMax"), "{err}");
    }

    #[test]
    fn a_key_before_any_section_is_warned_about() {
        let config = parse_text(
            "Timeout = 5\n[smtp]\nServer = a.example\nTo = s@example.com\nDomain = example.com\n",
        )
        .unwrap();
        assert!(
            config.warnings.iter().any(|w| w.line == Some(1)
                && w.message.contains(
                    "Timeout comes before any [section] and is ignored; put it under [smtp]"
                )),
            "{:?}",
            config.warnings
        );
    }

    #[test]
    fn an_unreadable_file_says_why_once() {
        let err = load(Path::new("/nonexistent/AXIS.INI")).unwrap_err();
        let chain = format!("{:#}", anyhow::Error::from(err));
        assert_eq!(chain.matches("No such file").count(), 1, "{chain}");
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
    fn an_empty_value_names_its_line() {
        let err =
            parse_text("[smtp]\nServer =\nTo = s@example.com\nDomain = example.com\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("Server is required (line 2 gives it no value)"),
            "{err}"
        );
    }

    #[test]
    fn a_home_folder_path_is_expanded() {
        let config = parse_text("[smtp]\nServer = a.example\nTo = s@example.com\nDomain = example.com\n[report]\nOutbox = ~/reports\n").unwrap();
        let home = std::env::var("HOME").unwrap();
        assert_eq!(config.report.outbox, Some(Path::new(&home).join("reports")));
    }

    #[test]
    fn missing_recipient_is_named() {
        let err = parse_text("[smtp]\nServer = a.example\nDomain = example.com\n").unwrap_err();
        assert!(err.to_string().contains("To is required"), "{err}");
    }
}
