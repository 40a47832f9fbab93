//! `crashmail compose`: an operator emails a report by hand.
//!
//! With a desktop mail client (`xdg-email` and a graphical session) the
//! draft opens there with the recipient, subject and attachment filled in,
//! as the old product did through MAPI. Otherwise the terminal asks for the
//! recipient, subject and text, shows a preview, and sends through the
//! outbox after confirmation.

use crate::outgoing::{Email, Mailer, SendOutcome};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

/// Whether to hand the draft to the desktop mail client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientChoice {
    /// The client when one is available, else the terminal.
    Auto,
    /// The client, or an error.
    Required,
    /// Never the client.
    Refused,
}

/// `xdg-email` on `PATH`, when a graphical session is there to show it.
pub fn desktop_client() -> Option<PathBuf> {
    let graphical = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|value| !value.is_empty()));
    if !graphical {
        return None;
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("xdg-email"))
        .find(|candidate| candidate.is_file())
}

/// The subject a report suggests: its own email subject.
pub fn subject_from_attachments(attachments: &[PathBuf]) -> Option<String> {
    attachments.iter().find_map(|path| {
        let report = crate::inspect::open(path).ok()?;
        report.meta.map(|meta| meta.subject())
    })
}

/// The arguments `xdg-email` gets: the draft with everything filled in.
pub fn xdg_email_arguments(
    to: &str,
    subject: &str,
    body: &str,
    attachments: &[PathBuf],
) -> Vec<String> {
    let mut arguments = vec![
        "--utf8".to_string(),
        "--subject".to_string(),
        subject.to_string(),
    ];
    if !body.is_empty() {
        arguments.push("--body".into());
        arguments.push(body.to_string());
    }
    for attachment in attachments {
        arguments.push("--attach".into());
        arguments.push(
            std::path::absolute(attachment)
                .unwrap_or_else(|_| attachment.clone())
                .display()
                .to_string(),
        );
    }
    arguments.push(to.to_string());
    arguments
}

/// Hands the draft to the desktop client; its exit status says whether it
/// took it.
pub fn open_in_client(
    client: &Path,
    to: &str,
    subject: &str,
    body: &str,
    attachments: &[PathBuf],
) -> std::io::Result<bool> {
    let status = std::process::Command::new(client)
        .args(xdg_email_arguments(to, subject, body, attachments))
        .status()?;
    Ok(status.success())
}

/// The terminal conversation. `input` and `output` are the terminal.
pub fn in_terminal(
    mailer: &Mailer,
    attachments: &[PathBuf],
    input: &mut dyn BufRead,
    output: &mut dyn Write,
) -> anyhow::Result<Option<SendOutcome>> {
    let support = mailer.config().smtp.to.join(", ");
    let to = ask(input, output, "To", Some(&support))?;
    let subject_default = subject_from_attachments(attachments).unwrap_or_else(|| "Report".into());
    let subject = ask(input, output, "Subject", Some(&subject_default))?;
    let text = match std::env::var_os("EDITOR").filter(|e| !e.is_empty()) {
        Some(editor) => edit_text(&editor)?,
        None => {
            writeln!(output, "Message (end with Ctrl-D on an empty line):")?;
            output.flush()?;
            let mut text = String::new();
            input.read_to_string(&mut text)?;
            text
        }
    };

    let mut email = Email::new(subject, text);
    for address in crate::config::split_addresses(&to) {
        email = email.to(address);
    }
    for path in attachments {
        email = email.attach_file(path)?;
    }
    writeln!(output, "\n--- preview ---")?;
    writeln!(output, "To:      {}", email.to.join(", "))?;
    writeln!(
        output,
        "Subject: {}",
        crate::outgoing::header_safe(&email.subject)
    )?;
    for attachment in &email.attachments {
        writeln!(
            output,
            "Attached: {} ({} bytes)",
            attachment.name,
            attachment.bytes.len()
        )?;
    }
    writeln!(output)?;
    write!(output, "{}", email.text)?;
    if !email.text.ends_with('\n') {
        writeln!(output)?;
    }
    writeln!(output, "--- end of preview ---")?;
    let answer = ask(input, output, "Send it? (yes/no)", Some("no"))?;
    if !answer.eq_ignore_ascii_case("yes") && !answer.eq_ignore_ascii_case("y") {
        writeln!(output, "Not sent.")?;
        return Ok(None);
    }
    Ok(Some(mailer.send_now(&email)?))
}

fn ask(
    input: &mut dyn BufRead,
    output: &mut dyn Write,
    question: &str,
    default: Option<&str>,
) -> anyhow::Result<String> {
    match default {
        Some(value) => write!(output, "{question} [{value}]: ")?,
        None => write!(output, "{question}: ")?,
    }
    output.flush()?;
    let mut line = String::new();
    if input.read_line(&mut line)? == 0 {
        anyhow::bail!("no answer (end of input)");
    }
    let answer = line.trim();
    Ok(if answer.is_empty() {
        default.unwrap_or_default().to_string()
    } else {
        answer.to_string()
    })
}

/// Runs `$EDITOR` on a private temporary file and returns what was written.
fn edit_text(editor: &std::ffi::OsStr) -> anyhow::Result<String> {
    let file = tempfile::Builder::new()
        .prefix("crashmail-message-")
        .suffix(".txt")
        .tempfile()?;
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg("exec $CRASHMAIL_EDITOR \"$1\"")
        .arg("sh")
        .arg(file.path())
        .env("CRASHMAIL_EDITOR", editor)
        .status()?;
    if !status.success() {
        anyhow::bail!("the editor ended with {status}; nothing was sent");
    }
    Ok(std::fs::read_to_string(file.path())?)
}
