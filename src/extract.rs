//! `crashmail extract`: a report's files into a folder, safely.
//!
//! A report may come from anywhere (an email anyone could have sent), so
//! its zip is untrusted: no entry may write outside the folder, no symbolic
//! link is created or followed, and size and compression-ratio limits stop
//! zip bombs before they fill the disk.

use crate::inspect::inert;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// Bounds on what one extraction may write.
#[derive(Clone, Copy, Debug)]
pub struct ExtractLimits {
    pub max_entries: usize,
    pub max_entry_bytes: u64,
    pub max_total_bytes: u64,
    /// Uncompressed size over compressed size, for entries over 1 MiB.
    pub max_ratio: u64,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        ExtractLimits {
            max_entries: 10_000,
            max_entry_bytes: 512 * 1024 * 1024,
            max_total_bytes: 1024 * 1024 * 1024,
            max_ratio: 200,
        }
    }
}

/// Why an extraction stopped. Each names what it is about once: causes are
/// part of the message, not chained as sources. Entry names, and the paths
/// made of them, are shown [`inert`]: they come from the zip.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("not a readable zip: {0}")]
    Zip(zip::result::ZipError),
    #[error("{}: {cause}", inert(&.path.to_string_lossy()))]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}: exists and is not a folder", inert(&.0.to_string_lossy()))]
    NotAFolder(PathBuf),
    #[error("entry {}: {why} (a zip bomb?); nothing more was written", inert(.name))]
    Limit { name: String, why: String },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ExtractError + '_ {
    move |cause| ExtractError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// What was written, and what was refused or changed.
#[derive(Clone, Debug, Default)]
pub struct Extracted {
    pub written: Vec<PathBuf>,
    /// One line each, ready to print: the entry names in them are [`inert`].
    pub warnings: Vec<String>,
}

/// The path an entry may take inside the folder, or why it may not.
fn safe_relative_path(name: &str) -> Result<PathBuf, String> {
    // Backslashes are separators to the Windows tools that make such zips.
    let name = name.replace('\\', "/");
    if name.starts_with('/') || name.as_bytes().get(1) == Some(&b':') {
        return Err("an absolute path".into());
    }
    let mut path = PathBuf::new();
    for part in name.split('/') {
        if part.is_empty() {
            continue;
        }
        if part.chars().all(|c| c == '.') {
            return Err(format!(
                "a path part {part:?} made of dots, which could climb out of the folder"
            ));
        }
        if part.chars().any(char::is_control) {
            return Err("control characters in the name".into());
        }
        path.push(part);
    }
    if path.as_os_str().is_empty() {
        return Err("an empty name".into());
    }
    debug_assert!(path.components().all(|c| matches!(c, Component::Normal(_))));
    Ok(path)
}

/// Makes `relative`'s parent folders inside `root`, refusing any existing
/// part that is not a plain folder (a symbolic link above all).
fn make_parents(root: &Path, relative: &Path) -> Result<PathBuf, ExtractError> {
    let mut current = root.to_path_buf();
    if let Some(parent) = relative.parent() {
        for part in parent.components() {
            current.push(part);
            match std::fs::symlink_metadata(&current) {
                Ok(meta) if meta.file_type().is_dir() => {}
                Ok(_) => return Err(ExtractError::NotAFolder(current)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&current)
                        .map_err(io_error(&current))?;
                }
                Err(e) => return Err(io_error(&current)(e)),
            }
        }
    }
    Ok(root.join(relative))
}

/// Makes the folder extracted into, which may exist already.
fn make_root(dir: &Path) -> Result<(), ExtractError> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(ExtractError::NotAFolder(dir.to_path_buf())),
        Err(_) => std::fs::create_dir_all(dir).map_err(io_error(dir)),
    }
}

/// Extracts `zip` into `dir` (created if needed). A zip cut short gives the
/// entries before the cut, with a warning saying so.
pub fn extract(zip: &[u8], dir: &Path, limits: ExtractLimits) -> Result<Extracted, ExtractError> {
    if std::fs::metadata(dir).is_ok_and(|meta| !meta.is_dir()) {
        return Err(ExtractError::NotAFolder(dir.to_path_buf()));
    }
    let mut result = Extracted::default();
    let mut total = 0u64;
    let mut root_made = false;
    let walked = crate::bundle::walk_zip(
        zip,
        limits.max_entries,
        crate::bundle::Recover::Yes,
        |item| {
            if !root_made {
                make_root(dir)?;
                root_made = true;
            }
            let mut entry = match item {
                crate::bundle::ZipItem::Entry(entry) => entry,
                crate::bundle::ZipItem::Unreadable { name, error } => {
                    result
                        .warnings
                        .push(format!("{}: not written: {error}", inert(&name)));
                    return Ok(());
                }
            };
            let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
            // The name as the warnings show it: anyone may have made the
            // zip, and a name printed raw could drive the terminal (escape
            // sequences) or fake a line of its own.
            let shown = inert(&name);
            if entry.is_symlink() {
                result.warnings.push(format!(
                    "{shown}: a symbolic link, refused (links are never created or followed)"
                ));
                return Ok(());
            }
            let relative = match safe_relative_path(&name) {
                Ok(relative) => relative,
                Err(why) => {
                    result
                        .warnings
                        .push(format!("{shown}: refused: {}", inert(&why)));
                    return Ok(());
                }
            };
            if entry.is_dir() {
                make_parents(dir, &relative.join("x"))?;
                return Ok(());
            }
            let declared = entry.size();
            let compressed = entry.compressed_size().max(1);
            if declared > limits.max_entry_bytes {
                return Err(ExtractError::Limit {
                    name,
                    why: format!(
                        "{declared} bytes, more than the limit of {}",
                        limits.max_entry_bytes
                    ),
                });
            }
            if declared > 1024 * 1024 && declared / compressed > limits.max_ratio {
                return Err(ExtractError::Limit {
                    name,
                    why: format!(
                        "a compression ratio of {} to 1, more than {} to 1",
                        declared / compressed,
                        limits.max_ratio
                    ),
                });
            }
            let target = make_parents(dir, &relative)?;
            let mut file = match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&target)
            {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    result.warnings.push(format!(
                        "{shown}: {} already exists, not overwritten",
                        inert(&target.to_string_lossy())
                    ));
                    return Ok(());
                }
                Err(e) => return Err(io_error(&target)(e)),
            };
            // Declared sizes can lie: the bytes themselves are counted.
            let budget = limits
                .max_entry_bytes
                .min(limits.max_total_bytes.saturating_sub(total));
            let mut copied = 0u64;
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                let read = match entry.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(read) => read,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    // The entry's bytes are corrupt: it is left out, the
                    // others are still written.
                    Err(e) => {
                        drop(file);
                        let _ = std::fs::remove_file(&target);
                        result.warnings.push(format!("{shown}: not written: {e}"));
                        return Ok(());
                    }
                };
                copied += read as u64;
                if copied > budget {
                    drop(file);
                    let _ = std::fs::remove_file(&target);
                    return Err(ExtractError::Limit {
                        name,
                        why: "more bytes than the size limits allow".into(),
                    });
                }
                file.write_all(&buffer[..read]).map_err(io_error(&target))?;
            }
            file.flush().map_err(io_error(&target))?;
            total += copied;
            if relative != Path::new(&name) {
                result.warnings.push(format!(
                    "{shown}: written as {}",
                    inert(&relative.to_string_lossy())
                ));
            }
            result.written.push(target);
            Ok(())
        },
    );
    match walked {
        Ok(damage) => {
            if !root_made {
                make_root(dir)?;
            }
            if let Some(damage) = damage {
                result.warnings.insert(0, inert(&damage).to_string());
            }
            Ok(result)
        }
        Err(crate::bundle::WalkError::Zip(e)) => Err(ExtractError::Zip(e)),
        Err(crate::bundle::WalkError::TooManyEntries(count)) => Err(ExtractError::Limit {
            name: format!("{count} entries"),
            why: format!("more than {} entries", limits.max_entries),
        }),
        Err(crate::bundle::WalkError::Visit(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::{safe_relative_path, ExtractError};
    use std::path::PathBuf;

    #[test]
    fn errors_show_entry_names_inert() {
        let error = ExtractError::Limit {
            name: "a\u{1b}[31m\nb\u{1}".into(),
            why: "too big".into(),
        };
        assert_eq!(
            error.to_string(),
            "entry a\u{fffd}[31m b\u{fffd}: too big (a zip bomb?); nothing more was written"
        );
        let error = ExtractError::NotAFolder(PathBuf::from("out/\u{202e}txt.exe"));
        assert_eq!(
            error.to_string(),
            "out/\u{fffd}txt.exe: exists and is not a folder"
        );
    }

    #[test]
    fn names_that_climb_or_are_absolute_are_refused() {
        for name in [
            "../../evil.txt",
            "/tmp/abs.txt",
            "..\\..\\win.txt",
            "..././x.txt",
            "a/../../b",
            "C:\\x",
            "./.",
        ] {
            assert!(safe_relative_path(name).is_err(), "{name}");
        }
        assert_eq!(
            safe_relative_path("logs/app.log").unwrap(),
            PathBuf::from("logs/app.log")
        );
        assert_eq!(
            safe_relative_path("logs\\win.log").unwrap(),
            PathBuf::from("logs/win.log")
        );
        assert_eq!(safe_relative_path("a//b").unwrap(), PathBuf::from("a/b"));
    }
}
