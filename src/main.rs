//! The `crashmail` command.

use clap::{Parser, Subcommand};
use crashmail::{config, delivery, demo, inspect, outbox::Outbox, watcher};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Crash reports captured, bundled and emailed over SMTP.
#[derive(Parser)]
#[command(name = "crashmail", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a sample application that crashes twice and show the reports that
    /// reach a loopback SMTP server.
    Demo {
        /// Where to keep the received emails (default: a new temporary folder).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Send through the server of this AXIS.INI instead of a loopback one.
        #[arg(long)]
        ini: Option<PathBuf>,
    },
    /// Show which AXIS.INI is used and every value in force (secrets masked).
    Config {
        /// AXIS.INI to read (default: searched as described in the README).
        #[arg(long)]
        ini: Option<PathBuf>,
    },
    /// Write the [smtp] settings into AXIS.INI, then check the server.
    ///
    /// On a terminal and without flags it asks for each value, suggesting
    /// servers configured for other mail programs on this machine. With flags
    /// (or without a terminal) it changes only what the flags name.
    Setup(SetupArgs),
    /// Check the SMTP server step by step and name the likely cause of a failure.
    Check {
        /// AXIS.INI to read (default: searched as described in the README).
        #[arg(long)]
        ini: Option<PathBuf>,
        /// Also send a test message to this address.
        #[arg(long, value_name = "ADDRESS")]
        send_test: Option<String>,
    },
    /// Send an email through AXIS.INI's server and the outbox (for scripts).
    Send(SendArgs),
    /// Email a report by hand: in the desktop mail client, or from the terminal.
    Compose {
        /// Files to attach (a report zip or .eml suggests the subject).
        #[arg(long)]
        attach: Vec<PathBuf>,
        /// Insist on the desktop mail client (xdg-email).
        #[arg(long, conflicts_with = "no_client")]
        client: bool,
        /// Never use the desktop mail client.
        #[arg(long)]
        no_client: bool,
        #[arg(long)]
        ini: Option<PathBuf>,
    },
    /// Show a report: a report zip, an .eml carrying one, or an extracted folder.
    Inspect {
        report: PathBuf,
        /// Show every thread of the minidump.
        #[arg(long)]
        threads: bool,
        /// Print the same as JSON.
        #[arg(long)]
        json: bool,
        /// A folder of Breakpad .sym files or debug files to name the
        /// minidump's frames with (repeatable).
        #[arg(long, value_name = "PATH")]
        symbols: Vec<PathBuf>,
    },
    /// Group many reports by crash signature: Maildir folders, mbox files,
    /// folders of .eml or .zip files.
    Triage {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Only reports from this date (2026-12-01) or time (RFC 3339) on.
        #[arg(long)]
        since: Option<String>,
        /// Print the groups as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a report's files into a folder, safely (untrusted zips welcome).
    Extract {
        /// A report zip or an .eml carrying one.
        report: PathBuf,
        /// The folder to write into.
        #[arg(long)]
        to: PathBuf,
    },
    /// Work with the outbox.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
        /// The outbox (default: $CRASHMAIL_OUTBOX, else AXIS.INI's [report]
        /// Outbox, else the user's state folder).
        #[arg(long, global = true)]
        outbox: Option<PathBuf>,
        /// AXIS.INI to send with (default: searched as described in the README).
        #[arg(long, global = true)]
        ini: Option<PathBuf>,
    },
    /// The watcher an application starts; not for interactive use.
    #[command(hide = true)]
    Watch {
        #[arg(long)]
        socket: String,
        #[arg(long)]
        app_pid: Option<u32>,
        #[arg(long)]
        ini: Option<PathBuf>,
    },
    /// The demo's sample application.
    #[command(hide = true)]
    SampleApp {
        kind: String,
        #[arg(long)]
        log: Option<PathBuf>,
        /// Ignored: options as a real application's command line has them
        /// (the privacy tests plant secrets here).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ignored: Vec<String>,
    },
}

#[derive(clap::Args)]
struct SetupArgs {
    /// The file to write (default: the AXIS.INI that would be read, else
    /// AXIS.INI in $AXIS_HOME or the current folder).
    #[arg(long)]
    ini: Option<PathBuf>,
    /// The SMTP server: host or host:port.
    #[arg(long)]
    server: Option<String>,
    #[arg(long)]
    port: Option<u16>,
    /// starttls, tls or none.
    #[arg(long)]
    security: Option<String>,
    /// The domain mail is sent from.
    #[arg(long)]
    domain: Option<String>,
    /// The support address(es), comma-separated.
    #[arg(long)]
    to: Option<String>,
    #[arg(long)]
    from: Option<String>,
    #[arg(long)]
    user: Option<String>,
    /// A file holding the password (written as PasswordFile).
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// Write the settings without checking the server.
    #[arg(long)]
    no_check: bool,
}

#[derive(clap::Args)]
struct SendArgs {
    /// Recipient(s); repeat or separate with commas.
    #[arg(long, required = true)]
    to: Vec<String>,
    #[arg(long)]
    cc: Vec<String>,
    #[arg(long)]
    subject: String,
    /// The text of the message.
    #[arg(long, conflicts_with = "body_file")]
    body: Option<String>,
    /// A file holding the text (without --body or --body-file: standard input).
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// An HTML alternative to the text.
    #[arg(long)]
    html_file: Option<PathBuf>,
    #[arg(long)]
    attach: Vec<PathBuf>,
    /// Deliver now and wait for the server's answer.
    #[arg(long)]
    now: bool,
    #[arg(long)]
    ini: Option<PathBuf>,
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// Package records left by applications and send every pending report.
    Flush {
        /// Only reports whose retry delay has passed (for timers and cron).
        #[arg(long)]
        due: bool,
    },
    /// List the reports in each state.
    List,
    /// Make failed or waiting reports pending and due now.
    Retry {
        /// Report ids (as `outbox list` shows them).
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Delete the reports the server refused for good.
    Purge {
        /// Required: only `failed/` is ever purged.
        #[arg(long, required = true)]
        failed: bool,
    },
}

/// `crashmail outbox flush`: reports wait in `pending/` for a retry (held
/// ones, waiting for a digest or the hourly limit, do not count).
const EXIT_WAITING_FOR_RETRY: u8 = 3;
/// `crashmail outbox flush`: the server refused reports for good (`failed/`).
const EXIT_REFUSED: u8 = 4;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("crashmail: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if matches!(
        cli.command,
        Command::Inspect { .. }
            | Command::Config { .. }
            | Command::Triage { .. }
            | Command::Outbox {
                command: OutboxCommand::List,
                ..
            }
    ) {
        quiet_on_closed_pipe();
    }
    match cli.command {
        Command::Demo { out, ini } => match demo::run(demo::DemoOptions { out, ini }) {
            Ok(true) => Ok(ExitCode::SUCCESS),
            Ok(false) => Ok(ExitCode::from(1)),
            // Said before anything runs: a bad --out, an AXIS.INI that
            // cannot be used.
            Err(e) => match e.downcast_ref::<demo::BadOption>() {
                Some(bad) => {
                    eprintln!("crashmail: {bad}");
                    Ok(ExitCode::from(match bad {
                        demo::BadOption::Ini(_) | demo::BadOption::ReportsOff(_) => {
                            EXIT_CONFIGURATION
                        }
                        demo::BadOption::Out { .. } => EXIT_BAD_COMMAND_LINE,
                    }))
                }
                None => Err(e),
            },
        },
        Command::Config { ini } => {
            let config = match config_or_exit_code(ini.as_deref()) {
                Ok(config) => config,
                Err(code) => return Ok(code),
            };
            println!(
                "Configuration: {} ({})",
                config.path.display(),
                config.encoding
            );
            let mut section = "";
            for setting in &config.settings {
                if setting.section != section {
                    section = setting.section;
                    println!("\n[{section}]");
                }
                println!(
                    "{:<15} = {:<40} ; {}",
                    setting.key, setting.value, setting.origin
                );
            }
            print_warnings(&config);
            Ok(ExitCode::SUCCESS)
        }
        Command::Setup(args) => setup(args),
        Command::Send(args) => send(args),
        Command::Compose {
            attach,
            client,
            no_client,
            ini,
        } => compose(attach, client, no_client, ini),
        Command::Check { ini, send_test } => Ok(check(ini.as_deref(), send_test.as_deref())),
        Command::Inspect {
            report,
            threads,
            json,
            symbols,
        } => {
            if let Some(code) = refuse_missing_inputs(std::slice::from_ref(&report)) {
                return Ok(code);
            }
            let opened = inspect::open(&report)?;
            // A folder that is not there names nothing: said, and the
            // report shown without it.
            let symbols = symbols
                .into_iter()
                .filter(|path| match std::fs::metadata(path) {
                    Ok(meta) if meta.is_dir() => true,
                    Ok(_) => {
                        eprintln!(
                            "warning: --symbols {}: not a folder (give a folder of Breakpad .sym files, or of binaries and their .debug files); frames are named without it",
                            path.display()
                        );
                        false
                    }
                    Err(e) => {
                        eprintln!(
                            "warning: --symbols {}: {e}; frames are named without it",
                            path.display()
                        );
                        false
                    }
                })
                .collect();
            let options = inspect::ShowOptions {
                all_threads: threads,
                log_lines: 10,
                symbols,
            };
            let view = inspect::view(&opened, &options);
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print!("{}", inspect::render_view(&view, &options));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Triage { paths, since, json } => {
            if let Some(code) = refuse_missing_inputs(&paths) {
                return Ok(code);
            }
            let since = match since {
                Some(text) => match crashmail::triage::parse_since(&text) {
                    Some(since) => Some(since),
                    None => {
                        eprintln!(
                            "crashmail: --since {text:?}: expected a date (2026-12-01) or an RFC 3339 time (2026-12-01T10:00:00Z)"
                        );
                        return Ok(ExitCode::from(EXIT_BAD_COMMAND_LINE));
                    }
                },
                None => None,
            };
            let bar = indicatif::ProgressBar::new(0).with_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} reports  {per_sec}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let triage = crashmail::triage::triage(&paths, since, &|done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            })?;
            bar.finish_and_clear();
            if json {
                println!("{}", serde_json::to_string_pretty(&triage)?);
            } else {
                print!("{}", crashmail::triage::render(&triage));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Extract { report, to } => {
            if let Some(code) = refuse_missing_inputs(std::slice::from_ref(&report)) {
                return Ok(code);
            }
            if report.is_dir() {
                eprintln!(
                    "crashmail: {} is a folder: extract takes a report's zip or an email carrying one (a folder of a report's files is extracted already; inspect reads it)",
                    report.display()
                );
                return Ok(ExitCode::from(EXIT_BAD_COMMAND_LINE));
            }
            if std::fs::metadata(&to).is_ok_and(|meta| !meta.is_dir()) {
                eprintln!(
                    "crashmail: --to {}: exists and is not a folder",
                    to.display()
                );
                return Ok(ExitCode::from(EXIT_BAD_COMMAND_LINE));
            }
            let bytes =
                std::fs::read(&report).map_err(|e| anyhow::anyhow!("{}: {e}", report.display()))?;
            let zip = if bytes.starts_with(b"PK") {
                bytes
            } else {
                inspect::zip_from_email(&bytes).ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}: neither a zip nor an email with a zip attachment",
                        report.display()
                    )
                })?
            };
            use crashmail::extract::ExtractError;
            let extracted = crashmail::extract::extract(
                &zip,
                &to,
                crashmail::extract::ExtractLimits::default(),
            )
            .map_err(|e| match e {
                // What is wrong with the report: named by its file. (The
                // others name the file written.)
                ExtractError::Zip(_) | ExtractError::Limit { .. } => {
                    anyhow::anyhow!("{}: {e}", report.display())
                }
                _ => e.into(),
            })?;
            for warning in &extracted.warnings {
                eprintln!("warning: {warning}");
            }
            println!(
                "{} file(s) written to {}",
                extracted.written.len(),
                to.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Outbox {
            command,
            outbox,
            ini,
        } => {
            // --outbox, then $CRASHMAIL_OUTBOX, then AXIS.INI's [report]
            // Outbox, then the user's state folder.
            let configured = load_config(ini.as_deref())
                .ok()
                .and_then(|c| c.report.outbox);
            let from_env = std::env::var_os(crashmail_handler::OUTBOX_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from);
            let root = outbox
                .or(from_env)
                .or(configured)
                .or_else(crashmail_handler::default_outbox_dir)
                .ok_or_else(|| {
                    anyhow::anyhow!("no outbox: pass --outbox or set CRASHMAIL_OUTBOX")
                })?;
            // Listing looks and does not touch: an outbox that was never
            // made is said to be so, not created.
            if matches!(command, OutboxCommand::List) && !root.exists() {
                // A file where a folder should be: the outbox can never be.
                if let Some(blocker) = root.ancestors().skip(1).find(|a| a.exists() && !a.is_dir())
                {
                    eprintln!(
                        "crashmail: the outbox {} cannot be made: {} is not a folder",
                        root.display(),
                        blocker.display()
                    );
                    return Ok(ExitCode::FAILURE);
                }
                println!(
                    "The outbox {} does not exist yet: nothing has been reported there.",
                    root.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            match command {
                OutboxCommand::List => {
                    let outbox = Outbox::open(&root)?;
                    print!("{}", crashmail::outbox::listing(&outbox)?);
                    Ok(ExitCode::SUCCESS)
                }
                OutboxCommand::Flush { due } => {
                    // Without a usable AXIS.INI, the outbox is not touched.
                    let config = match config_or_exit_code(ini.as_deref()) {
                        Ok(config) => config,
                        Err(code) => return Ok(code),
                    };
                    let outbox = Outbox::open(&root)?;
                    print_warnings(&config);
                    let flushed = flush(&outbox, &config, due);
                    outbox.forget_this_sender();
                    flushed
                }
                OutboxCommand::Retry { ids } => {
                    let outbox = Outbox::open(&root)?;
                    for id in &ids {
                        outbox.retry(id)?;
                        println!("{id} is pending again and due now");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                OutboxCommand::Purge { failed } => {
                    if !failed {
                        anyhow::bail!(
                            "purge removes only reports the server refused for good: pass --failed"
                        );
                    }
                    let removed = Outbox::open(&root)?.purge_failed()?;
                    println!("removed {removed} refused report(s) from failed/");
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        Command::Watch {
            socket,
            app_pid,
            ini,
        } => {
            crashmail::watcher_log::install();
            watcher::run(watcher::WatchOptions {
                socket,
                app_pid,
                ini,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::SampleApp { kind, log, .. } => {
            let code = crashmail::sample_app::run(&kind, log);
            Ok(ExitCode::from(code.clamp(0, 255) as u8))
        }
    }
}

/// `crashmail outbox list | head` ends quietly, as command-line tools do,
/// instead of panicking on the closed pipe. Only for commands that print and
/// hold no connection: a watcher must see EPIPE on a broken SMTP socket.
#[allow(unsafe_code)]
fn quiet_on_closed_pipe() {
    // SAFETY: restoring the default disposition of one signal.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Finds and loads AXIS.INI the way the watcher does: `--ini`, `$AXIS_INI`,
/// `$AXIS_HOME`, the folder of this executable, the current folder.
fn load_config(ini: Option<&std::path::Path>) -> anyhow::Result<config::Config> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(std::path::Path::to_path_buf));
    let cwd = std::env::current_dir().ok();
    let path = config::find(ini, exe_dir.as_deref(), cwd.as_deref())?;
    Ok(config::load(&path)?)
}

/// AXIS.INI, or the exit code for one that is missing or invalid (10),
/// with why said on stderr.
fn config_or_exit_code(ini: Option<&std::path::Path>) -> Result<config::Config, ExitCode> {
    load_config(ini).map_err(|e| {
        eprintln!("crashmail: {e:#}");
        ExitCode::from(EXIT_CONFIGURATION)
    })
}

fn print_warnings(config: &config::Config) {
    for warning in &config.warnings {
        eprintln!("warning: {warning}");
    }
}

/// `crashmail outbox flush`: a progress bar, one line per report, a summary,
/// and an exit code that says what is still waiting.
fn flush(outbox: &Outbox, config: &config::Config, due: bool) -> anyhow::Result<ExitCode> {
    let packaged = delivery::package_incoming(outbox, Some(config))?;
    if !packaged.is_empty() {
        println!("bundled {} record(s) left by applications", packaged.len());
    }
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} reports  {elapsed_precise}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let delivery = delivery::Delivery { config, outbox };
    let outcomes = delivery.flush(
        if due {
            delivery::Due::Only
        } else {
            delivery::Due::All
        },
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    bar.finish_and_clear();
    let (mut emails, mut refused) = (0, 0);
    for (id, outcome) in &outcomes {
        match outcome {
            delivery::Outcome::Sent => {
                emails += 1;
                println!("sent     {id}");
            }
            delivery::Outcome::SentInDigest { mailed, repeats } => {
                emails += 1;
                if mailed == id {
                    println!("sent     {id} (a digest with {repeats} held repeat(s))");
                } else {
                    println!(
                        "sent     {id} in the digest of {mailed} (the newest, with {repeats} held repeat(s))"
                    );
                }
            }
            delivery::Outcome::Kept(why) | delivery::Outcome::NotTried(why) => {
                println!("pending  {id}: {why}")
            }
            delivery::Outcome::Held(why) => println!("held     {id}: {why}"),
            delivery::Outcome::Failed(why) => {
                refused += 1;
                println!("failed   {id}: {why}");
            }
        }
    }
    // Whatever this run did or skipped (`--due`), the summary and the exit
    // code say what is left: held reports wait by design (a digest, the
    // hourly limit) and go by themselves; the others wait for a retry.
    let held = outbox.held()?.len();
    let waiting = outbox.pending()?.len().saturating_sub(held);
    let reports_sent: usize = outcomes
        .iter()
        .map(|(_, o)| match o {
            delivery::Outcome::Sent => 1,
            delivery::Outcome::SentInDigest { repeats, .. } => 1 + repeats,
            _ => 0,
        })
        .sum();
    let sent = if reports_sent == emails {
        format!("{emails} sent")
    } else {
        format!("{emails} sent (carrying {reports_sent} reports)")
    };
    println!("{sent}, {refused} refused; {held} held for a digest or the hourly limit, {waiting} waiting for a retry");
    Ok(if waiting > 0 {
        ExitCode::from(EXIT_WAITING_FOR_RETRY)
    } else if refused > 0 {
        ExitCode::from(EXIT_REFUSED)
    } else {
        ExitCode::SUCCESS
    })
}

/// A bad command line (clap's own code for its errors).
const EXIT_BAD_COMMAND_LINE: u8 = 2;

/// A report path that is not there is a mistyped command line (exit 2),
/// said for each before anything is read.
fn refuse_missing_inputs(paths: &[PathBuf]) -> Option<ExitCode> {
    let mut missing = false;
    for path in paths {
        if let Err(e) = std::fs::symlink_metadata(path) {
            if e.kind() == std::io::ErrorKind::NotFound {
                eprintln!("crashmail: {}: no such file or folder", path.display());
                missing = true;
            }
        }
    }
    missing.then(|| ExitCode::from(EXIT_BAD_COMMAND_LINE))
}
/// `crashmail send` and `crashmail compose`: the message is queued in the outbox.
const EXIT_QUEUED: u8 = 3;
/// `crashmail check`, `setup`, `send`, `compose`: AXIS.INI is missing or invalid.
const EXIT_CONFIGURATION: u8 = 10;

/// Why `send` or `compose` cannot start: a missing or invalid AXIS.INI is
/// exit 10; an outbox that cannot be used (named in the message) is 1.
fn mailer_unavailable(error: &crashmail::outgoing::MailerError) -> ExitCode {
    eprintln!("crashmail: {error}");
    match error {
        crashmail::outgoing::MailerError::Configuration(_) => ExitCode::from(EXIT_CONFIGURATION),
        _ => ExitCode::FAILURE,
    }
}

/// `crashmail send`.
fn send(args: SendArgs) -> anyhow::Result<ExitCode> {
    use crashmail::outgoing::{Email, Mailer, MailerError, SendOutcome};
    use std::io::Read;
    // The files the command line names come first: one that cannot be read
    // is a bad command line (exit 2), said before AXIS.INI or standard
    // input is read.
    let bad_file = |flag: &str, path: &std::path::Path, e: std::io::Error| {
        eprintln!("crashmail: {flag} {}: {e}", path.display());
        ExitCode::from(EXIT_BAD_COMMAND_LINE)
    };
    let mut email = Email::new(args.subject.clone(), String::new());
    for path in &args.attach {
        email = match email.attach_file(path) {
            Ok(email) => email,
            Err(MailerError::Attachment(why)) => {
                eprintln!("crashmail: --attach {why}");
                return Ok(ExitCode::from(EXIT_BAD_COMMAND_LINE));
            }
            Err(e) => return Err(e.into()),
        };
    }
    if let Some(html) = &args.html_file {
        match std::fs::read_to_string(html) {
            Ok(text) => email = email.html(text),
            Err(e) => return Ok(bad_file("--html-file", html, e)),
        }
    }
    if let (None, Some(file)) = (&args.body, &args.body_file) {
        match std::fs::read_to_string(file) {
            Ok(text) => email.text = text,
            Err(e) => return Ok(bad_file("--body-file", file, e)),
        }
    }
    let mailer = match Mailer::from_axis_ini(args.ini.as_deref()) {
        Ok(mailer) => mailer,
        Err(e) => return Ok(mailer_unavailable(&e)),
    };
    print_warnings(mailer.config());
    match (&args.body, &args.body_file) {
        (Some(body), _) => email.text = body.clone(),
        (None, Some(_)) => {}
        (None, None) => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            email.text = text;
        }
    }
    for to in args
        .to
        .iter()
        .flat_map(|list| config::split_addresses(list))
    {
        email = email.to(to);
    }
    for cc in args
        .cc
        .iter()
        .flat_map(|list| config::split_addresses(list))
    {
        email = email.cc(cc);
    }
    let invalid =
        |e: &MailerError| matches!(e, MailerError::InvalidAddress(_) | MailerError::NoRecipient);
    if !args.now {
        return match mailer.queue(&email) {
            Ok(id) => {
                println!("queued {id}");
                start_background_flush(&args.ini);
                Ok(ExitCode::SUCCESS)
            }
            Err(e) if invalid(&e) => {
                eprintln!("crashmail: {e}");
                Ok(ExitCode::from(EXIT_BAD_COMMAND_LINE))
            }
            Err(e) => Err(e.into()),
        };
    }
    match mailer.send_now(&email) {
        Ok(SendOutcome::Delivered { id }) => {
            println!("delivered {id}");
            Ok(ExitCode::SUCCESS)
        }
        Ok(SendOutcome::Queued { id, reason }) => {
            println!("queued {id}: {reason}");
            Ok(ExitCode::from(EXIT_QUEUED))
        }
        Ok(SendOutcome::Refused { id, reason }) => {
            println!("refused {id}: {reason}");
            Ok(ExitCode::from(EXIT_REFUSED))
        }
        Err(e) if invalid(&e) => {
            eprintln!("crashmail: {e}");
            Ok(ExitCode::from(EXIT_BAD_COMMAND_LINE))
        }
        Err(e) => Err(e.into()),
    }
}

/// Delivery follows a queued message: a detached `crashmail outbox flush
/// --due`, so the caller does not wait for the server.
fn start_background_flush(ini: &Option<PathBuf>) {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut command = std::process::Command::new(exe);
    command
        .args(["outbox", "flush", "--due"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(ini) = ini {
        command.arg("--ini").arg(ini);
    }
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let _ = command.spawn();
}

/// `crashmail compose`.
fn compose(
    attach: Vec<PathBuf>,
    client: bool,
    no_client: bool,
    ini: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    use crashmail::compose;
    use crashmail::outgoing::{Mailer, SendOutcome};
    for path in &attach {
        if !path.is_file() {
            eprintln!("crashmail: --attach {}: no such file", path.display());
            return Ok(ExitCode::from(EXIT_BAD_COMMAND_LINE));
        }
    }
    let mailer = match Mailer::from_axis_ini(ini.as_deref()) {
        Ok(mailer) => mailer,
        Err(e) => return Ok(mailer_unavailable(&e)),
    };
    let desktop = if no_client {
        None
    } else {
        compose::desktop_client()
    };
    if client && desktop.is_none() {
        anyhow::bail!("--client: no desktop mail client (xdg-email on PATH and a graphical session) is available");
    }
    if let Some(desktop) = desktop {
        let subject = compose::subject_from_attachments(&attach).unwrap_or_else(|| "Report".into());
        let to = mailer.config().smtp.to.join(",");
        if compose::open_in_client(&desktop, &to, &subject, "", &attach)? {
            println!("The draft is open in your mail client.");
            return Ok(ExitCode::SUCCESS);
        }
        anyhow::bail!(
            "the desktop mail client ({}) did not take the draft",
            desktop.display()
        );
    }
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut output = std::io::stdout();
    match compose::in_terminal(&mailer, &attach, &mut input, &mut output)? {
        None => Ok(ExitCode::from(1)),
        Some(SendOutcome::Delivered { id }) => {
            println!("Sent ({id}).");
            Ok(ExitCode::SUCCESS)
        }
        Some(SendOutcome::Queued { id, reason }) => {
            println!("Queued ({id}); it will be sent later: {reason}");
            Ok(ExitCode::from(EXIT_QUEUED))
        }
        Some(SendOutcome::Refused { id, reason }) => {
            println!("Refused ({id}): {reason}");
            Ok(ExitCode::from(EXIT_REFUSED))
        }
    }
}

/// `crashmail setup`.
fn setup(args: SetupArgs) -> anyhow::Result<ExitCode> {
    use crashmail::config::ini;
    use std::io::IsTerminal;
    let cwd = std::env::current_dir()?;
    let path = args
        .ini
        .clone()
        .unwrap_or_else(|| crashmail::setup::default_path(&cwd));
    let original = match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => anyhow::bail!("{}: {e}", path.display()),
    };
    let current = original
        .as_deref()
        .map(|bytes| ini::parse(&ini::decode(bytes).0))
        .transpose()
        .map_err(|e| anyhow::anyhow!("{}:{}: {}", path.display(), e.line, e.message))?
        .unwrap_or_default();
    let existing = |key: &str| current.get(config::SMTP, key).map(|e| e.value.clone());

    let flagged: Vec<(&str, Option<String>)> = vec![
        ("Server", args.server.clone()),
        ("Port", args.port.map(|p| p.to_string())),
        ("Security", args.security.clone()),
        ("Domain", args.domain.clone()),
        ("To", args.to.clone()),
        ("From", args.from.clone()),
        ("User", args.user.clone()),
        (
            "PasswordFile",
            args.password_file.as_ref().map(|p| p.display().to_string()),
        ),
    ];
    let any_flag = flagged.iter().any(|(_, v)| v.is_some());
    let mut changes: Vec<(&str, String)> = Vec::new();
    if !any_flag && std::io::stdin().is_terminal() {
        println!("Setting up email for crash reports in {}", path.display());
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        let suggestions = crashmail::setup::suggestions(&home, std::path::Path::new("/etc"));
        for suggestion in &suggestions {
            println!(
                "  found {} in {}",
                suggestion.server_value(),
                suggestion.source
            );
        }
        let server_default =
            existing("Server").or_else(|| suggestions.first().map(|s| s.server_value()));
        changes.push((
            "Server",
            prompt("Server", "SMTP server (host or host:port)", server_default)?,
        ));
        let security = prompt(
            "Security",
            "Security (starttls, tls or none)",
            existing("Security").or(Some("starttls".into())),
        )?;
        changes.push(("Security", security));
        if let Some(port) = prompt_optional_valid(
            "Port",
            "Port (empty: the usual one for the security)",
            existing("Port"),
        )? {
            changes.push(("Port", port));
        }
        changes.push((
            "Domain",
            prompt("Domain", "Domain mail is sent from", existing("Domain"))?,
        ));
        changes.push((
            "To",
            prompt("To", "Support address(es), comma-separated", existing("To"))?,
        ));
        if let Some(user) =
            prompt_optional("User name (empty: no authentication)", existing("User"))?
        {
            changes.push(("User", user));
            let password = rpassword::prompt_password("Password (empty: keep the current one): ")?;
            if !password.is_empty() {
                changes.push(("Password", password));
            }
        }
    } else {
        for (key, value) in flagged {
            if let Some(value) = value {
                changes.push((key, value));
            }
        }
        if original.is_none() && (args.server.is_none() || args.to.is_none()) {
            eprintln!(
                "crashmail: {} does not exist yet: --server and --to are needed to create it",
                path.display()
            );
            return Ok(ExitCode::from(EXIT_BAD_COMMAND_LINE));
        }
    }

    let updated = crashmail::setup::apply(original.as_deref(), &changes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    // Refuse to write a file crashmail itself could not use.
    let config = match config::parse(&path, &updated) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("crashmail: not written: {e}");
            return Ok(ExitCode::from(EXIT_CONFIGURATION));
        }
    };
    if Some(&updated) != original.as_ref() {
        crashmail::setup::write(&path, &updated)?;
        println!("Wrote the [smtp] settings to {}", path.display());
    } else {
        println!("{} already holds these settings", path.display());
    }
    for warning in &config.warnings {
        eprintln!("warning: {warning}");
    }
    if args.no_check {
        return Ok(ExitCode::SUCCESS);
    }
    println!("\nChecking the server:");
    Ok(check(Some(&path), None))
}

/// Asks until the answer is a valid value for `key`.
fn prompt(key: &str, question: &str, default: Option<String>) -> anyhow::Result<String> {
    loop {
        match prompt_optional(question, default.clone())? {
            None => println!("  a value is needed"),
            Some(answer) => match config::validate_smtp_value(key, &answer) {
                Ok(()) => return Ok(answer),
                Err(why) => println!("  {answer:?}: {why}"),
            },
        }
    }
}

/// Asks for an optional value; an answer must be valid for `key`.
fn prompt_optional_valid(
    key: &str,
    question: &str,
    default: Option<String>,
) -> anyhow::Result<Option<String>> {
    loop {
        match prompt_optional(question, default.clone())? {
            None => return Ok(None),
            Some(answer) => match config::validate_smtp_value(key, &answer) {
                Ok(()) => return Ok(Some(answer)),
                Err(why) => println!("  {answer:?}: {why}"),
            },
        }
    }
}

fn prompt_optional(question: &str, default: Option<String>) -> anyhow::Result<Option<String>> {
    match &default {
        Some(value) => print!("{question} [{value}]: "),
        None => print!("{question}: "),
    }
    std::io::stdout().flush()?;
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line)? == 0 {
        anyhow::bail!("no answer (end of input)");
    }
    let answer = line.trim();
    Ok(if answer.is_empty() {
        default
    } else {
        Some(answer.to_string())
    })
}

/// `crashmail check`: prints each step as it ends; the exit code names the
/// failure class.
fn check(ini: Option<&std::path::Path>, send_test: Option<&str>) -> ExitCode {
    use crashmail::check::{CheckOutcome, Failure, FailureClass, Step};
    if let Some(address) = send_test {
        if address.parse::<lettre::Address>().is_err() {
            eprintln!("crashmail: --send-test {address:?} is not an email address");
            return ExitCode::from(EXIT_BAD_COMMAND_LINE);
        }
    }
    let started = std::time::Instant::now();
    let loaded = load_config(ini);
    let read_step = Step {
        name: "read the configuration".into(),
        ok: loaded.is_ok(),
        detail: match &loaded {
            Ok(config) => config.path.display().to_string(),
            Err(e) => format!("{e:#}"),
        },
        duration: started.elapsed(),
    };
    println!("{}", read_step.line());
    let outcome = match loaded {
        Err(e) => CheckOutcome {
            steps: vec![read_step],
            failure: Some(Failure {
                class: FailureClass::Configuration,
                detail: format!("{e:#}"),
            }),
        },
        Ok(config) => {
            print_warnings(&config);
            crashmail::check::run_with(&config.smtp, send_test, &mut |step| {
                println!("{}", step.line());
                let _ = std::io::stdout().flush();
            })
        }
    };
    print!("{}", outcome.conclusion());
    match outcome.failure {
        None => ExitCode::SUCCESS,
        Some(failure) => ExitCode::from(failure.class.exit_code()),
    }
}
