//! Keeping secrets out of reports.
//!
//! A report travels by email to people outside the machine, so nothing
//! secret may be in it: not the SMTP password, not a token from the
//! environment, not the password inside a proxy URL. Known secret values are
//! replaced wherever they appear — in the text crashmail writes, in the log
//! tails, and in the minidump's bytes (its environment and command-line
//! streams, and any memory that held them) — by asterisks of the same
//! length, so that offsets inside binary data stay valid. The user's home
//! folder is written `~` in the text crashmail writes.

/// Parts of environment variable names that mark a secret.
pub const SECRET_NAME_PARTS: &[&str] = &[
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "KEY",
    "AUTH",
    "CREDENTIAL",
    "COOKIE",
    "SESSION",
];

/// Values shorter than this are not treated as secrets: replacing `1` or
/// `no` everywhere would wreck the report and hide nothing.
const MIN_SECRET_LENGTH: usize = 4;

/// The secret values to keep out of one report, and the home folder.
#[derive(Clone, Debug, Default)]
pub struct Secrets {
    values: Vec<String>,
    home: Option<String>,
}

impl Secrets {
    /// Secrets of an environment (`NAME=value` pairs) and of the SMTP settings.
    pub fn gather(
        environment: impl IntoIterator<Item = (String, String)>,
        smtp_password: Option<&str>,
    ) -> Secrets {
        let mut secrets = Secrets::default();
        for (name, value) in environment {
            let upper = name.to_ascii_uppercase();
            if upper == "HOME" && value.len() > 1 {
                secrets.home = Some(value.trim_end_matches('/').to_string());
            }
            if SECRET_NAME_PARTS.iter().any(|part| upper.contains(part)) {
                secrets.add(&value);
            }
            for credential in url_credentials(&value) {
                secrets.add(&credential);
            }
        }
        if let Some(password) = smtp_password {
            secrets.add(password);
        }
        secrets.ordered()
    }

    /// These secrets and those of a command line: the value of an option
    /// whose name marks a secret (`--password=x`, `--api-token x`,
    /// `DB_PASSWORD=x`) and credentials inside URLs.
    pub fn with_command_line<'a>(mut self, args: impl IntoIterator<Item = &'a str>) -> Secrets {
        let names_secret = |name: &str| {
            let upper = name.trim_start_matches('-').to_ascii_uppercase();
            SECRET_NAME_PARTS.iter().any(|part| upper.contains(part))
        };
        let mut value_follows = false;
        for arg in args {
            if value_follows && !arg.starts_with('-') {
                self.add(arg);
            }
            value_follows = false;
            match arg.split_once('=') {
                Some((name, value)) if names_secret(name) => self.add(value),
                Some(_) => {}
                None => value_follows = arg.starts_with('-') && names_secret(arg),
            }
            for credential in url_credentials(arg) {
                self.add(&credential);
            }
        }
        self.ordered()
    }

    /// These secrets and those that `texts` write out: the value of a
    /// `NAME=value` whose name marks a secret (`API_TOKEN=…`,
    /// `?access_token=…&`) and credentials inside URLs. A log line that
    /// prints a secret's name beside it is masked even when the process
    /// that wrote it is gone with its environment.
    pub fn with_secrets_written_in<'a>(
        mut self,
        texts: impl IntoIterator<Item = &'a str>,
    ) -> Secrets {
        let separators = |c: char| {
            c.is_whitespace()
                || matches!(
                    c,
                    '"' | '\''
                        | '`'
                        | ','
                        | ';'
                        | '&'
                        | '?'
                        | '('
                        | ')'
                        | '['
                        | ']'
                        | '{'
                        | '}'
                        | '<'
                        | '>'
                )
        };
        for text in texts {
            for piece in text.split(separators).filter(|p| !p.is_empty()) {
                if let Some((name, value)) = piece.split_once('=') {
                    let upper = name.to_ascii_uppercase();
                    let value = value.trim_end_matches(['.', ':']);
                    if SECRET_NAME_PARTS.iter().any(|part| upper.contains(part))
                        && looks_like_a_written_secret(value)
                    {
                        self.add(value);
                    }
                }
                if piece.contains('@') {
                    for credential in url_credentials(piece) {
                        self.add(&credential);
                    }
                }
            }
        }
        self.ordered()
    }

    /// The command line of a running process, read from `/proc`.
    pub fn command_line_of(pid: u32) -> Option<Vec<String>> {
        let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        Some(
            bytes
                .split(|b| *b == 0)
                .filter(|part| !part.is_empty())
                .map(|part| String::from_utf8_lossy(part).into_owned())
                .collect(),
        )
    }

    fn ordered(mut self) -> Secrets {
        // Longest first: a secret that contains another is replaced whole.
        self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        self.values.dedup();
        self
    }

    /// The environment of a running process, read from `/proc`.
    pub fn environment_of(pid: u32) -> Vec<(String, String)> {
        std::fs::read(format!("/proc/{pid}/environ"))
            .map(|bytes| parse_environ(&bytes))
            .unwrap_or_default()
    }

    fn add(&mut self, value: &str) {
        if value.chars().count() >= MIN_SECRET_LENGTH {
            self.values.push(value.to_string());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty() && self.home.is_none()
    }

    /// Text crashmail writes: secrets masked, the home folder as `~`.
    pub fn scrub_text(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in &self.values {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), &"*".repeat(secret.chars().count()));
            }
        }
        match &self.home {
            Some(home) => replace_home(&text, home),
            None => text,
        }
    }

    /// Bytes kept as they are otherwise (logs, the minidump): each secret
    /// becomes as many asterisks, so that lengths and offsets do not move.
    pub fn scrub_bytes(&self, bytes: &mut [u8]) {
        for secret in &self.values {
            let needle = secret.as_bytes();
            if needle.is_empty() || needle.len() > bytes.len() {
                continue;
            }
            let mut start = 0;
            while let Some(found) = find(&bytes[start..], needle) {
                let at = start + found;
                bytes[at..at + needle.len()].fill(b'*');
                start = at + needle.len();
            }
        }
    }
}

/// A value a text writes beside a secret-marking name that is taken for a
/// secret. Masked wherever it appears, so a short or purely numeric value
/// (`SESSION_TIMEOUT=3600`) is not: it would blot out line numbers and
/// counts all over the report.
fn looks_like_a_written_secret(value: &str) -> bool {
    value.chars().count() >= 6 && !value.chars().all(|c| c.is_ascii_digit())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut offset = 0;
    while let Some(position) = haystack[offset..].iter().position(|b| *b == first) {
        let at = offset + position;
        if haystack[at..].starts_with(needle) {
            return Some(at);
        }
        offset = at + 1;
    }
    None
}

/// `/home/a/x` → `~/x`, only at a path boundary (so `/home/ab` stays).
fn replace_home(text: &str, home: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(index) = rest.find(home) {
        let after = &rest[index + home.len()..];
        let at_boundary =
            after.is_empty() || after.starts_with('/') || after.starts_with(char::is_whitespace);
        out.push_str(&rest[..index]);
        out.push_str(if at_boundary { "~" } else { home });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The credentials inside URLs: `http://bob:pw123@proxy` gives `pw123`
/// and `bob:pw123`.
pub fn url_credentials(value: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = value;
    while let Some(index) = rest.find("://") {
        let after = &rest[index + 3..];
        let authority_end = after.find(['/', '?', '#', ' ']).unwrap_or(after.len());
        let authority = &after[..authority_end];
        if let Some((userinfo, _host)) = authority.rsplit_once('@') {
            found.push(userinfo.to_string());
            if let Some((_user, password)) = userinfo.split_once(':') {
                found.push(password.to_string());
            }
        }
        rest = after;
    }
    found
}

/// `NAME=value\0NAME=value\0` → pairs.
pub fn parse_environ(bytes: &[u8]) -> Vec<(String, String)> {
    bytes
        .split(|b| *b == 0)
        .filter_map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            let (name, value) = entry.split_once('=')?;
            Some((name.to_string(), value.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Secrets {
        Secrets::gather(
            [
                ("HOME".to_string(), "/home/a".to_string()),
                ("USER".to_string(), "a".to_string()),
                ("API_TOKEN".to_string(), "tok_example123".to_string()),
                (
                    "HTTPS_PROXY".to_string(),
                    "http://bob:pw123@proxy.example.com:8080".to_string(),
                ),
                ("SESSION_ID".to_string(), "no".to_string()),
            ],
            Some("s3cret"),
        )
    }

    #[test]
    fn text_loses_every_secret_and_shows_home_as_tilde() {
        let text = "user a at /home/a/app with tok_example123 via http://bob:pw123@proxy and s3cret; /home/ab stays";
        let scrubbed = secrets().scrub_text(text);
        for secret in ["tok_example123", "pw123", "s3cret"] {
            assert!(!scrubbed.contains(secret), "{scrubbed}");
        }
        assert!(scrubbed.contains("user a at ~/app"), "{scrubbed}");
        assert!(scrubbed.contains("/home/ab stays"), "{scrubbed}");
    }

    #[test]
    fn bytes_keep_their_length() {
        let mut bytes = b"API_TOKEN=tok_example123\0HOME=/home/a\0".to_vec();
        let before = bytes.len();
        secrets().scrub_bytes(&mut bytes);
        assert_eq!(bytes.len(), before);
        assert_eq!(&bytes[..24], b"API_TOKEN=**************");
    }

    #[test]
    fn options_naming_a_secret_lose_their_values() {
        let secrets = Secrets::default().with_command_line([
            "myapp",
            "--password=cmdlinepw55",
            "--api-token",
            "tok_from_argv",
            "DB_PASSWORD=envstyle99",
            "--proxy=http://bob:argvpw77@proxy.example.com",
            "--verbose",
            "orders.csv",
        ]);
        let text = "myapp --password=cmdlinepw55 --api-token tok_from_argv DB_PASSWORD=envstyle99 --proxy=http://bob:argvpw77@proxy.example.com --verbose orders.csv";
        let scrubbed = secrets.scrub_text(text);
        for secret in ["cmdlinepw55", "tok_from_argv", "envstyle99", "argvpw77"] {
            assert!(!scrubbed.contains(secret), "{scrubbed}");
        }
        assert!(
            scrubbed.contains("--verbose orders.csv"),
            "ordinary arguments stay: {scrubbed}"
        );
    }

    #[test]
    fn every_name_that_marks_a_secret_hides_its_value() {
        // The names the README lists, in variables as applications name them.
        let marked = [
            ("GITHUB_TOKEN", "value-token"),
            ("AWS_SECRET_ACCESS_KEY", "value-secret"),
            ("DB_PASSWORD", "value-password"),
            ("MYSQL_PASSWD", "value-passwd"),
            ("STRIPE_KEY", "value-key"),
            ("PROXY_AUTH", "value-auth"),
            ("GOOGLE_APPLICATION_CREDENTIALS", "value-credential"),
            ("COOKIE_JAR", "value-cookie"),
            ("session_store", "value-session"),
        ];
        let environment = marked
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .chain([("EDITOR".to_string(), "value-editor".to_string())]);
        let secrets = Secrets::gather(environment, None);
        let text: Vec<&str> = marked.iter().map(|(_, value)| *value).collect();
        let scrubbed = secrets.scrub_text(&format!("{} value-editor", text.join(" ")));
        for (name, value) in marked {
            assert!(!scrubbed.contains(value), "{name}: {scrubbed}");
        }
        assert!(scrubbed.ends_with(" value-editor"), "{scrubbed}");
    }

    #[test]
    fn secrets_a_text_writes_out_are_masked_without_the_environment() {
        let log = "start API_TOKEN=tok_example123 here\n\
                   GET /x?access_token=abcd1234&page=2\n\
                   proxy http://bob:pw123@proxy.example.com:8080 up\n\
                   monkey business; PORT=8080 user=a SESSION_TIMEOUT=3600 KEY=abc\n\
                   at src/main.rs:3600\n";
        let secrets = Secrets::default().with_secrets_written_in([log]);
        let scrubbed = secrets.scrub_text(log);
        for secret in ["tok_example123", "abcd1234", "pw123"] {
            assert!(!scrubbed.contains(secret), "{secret} in {scrubbed}");
        }
        assert!(scrubbed.contains("API_TOKEN=**************"), "{scrubbed}");
        // Names that mark no secret keep their values.
        assert!(scrubbed.contains("PORT=8080 user=a"), "{scrubbed}");
        assert!(scrubbed.contains("page=2"), "{scrubbed}");
        // Numbers and short values beside such names are not taken for
        // secrets: they would be masked all over the report.
        assert!(
            scrubbed.contains("SESSION_TIMEOUT=3600 KEY=abc"),
            "{scrubbed}"
        );
        assert!(scrubbed.contains("src/main.rs:3600"), "{scrubbed}");
    }

    #[test]
    fn short_values_are_not_taken_for_secrets() {
        let mut bytes = b"no".to_vec();
        secrets().scrub_bytes(&mut bytes);
        assert_eq!(bytes, b"no");
    }
}
