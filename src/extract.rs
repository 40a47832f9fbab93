//! `crashmail extract`: a report's files into a folder, safely.
//!
//! A report may come from anywhere (an email anyone could have sent), so
//! its zip is untrusted: no entry may write outside the folder, no symbolic
//! link is created or followed, and size and compression-ratio limits stop
//! zip bombs before they fill the disk.

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

/// Why an extraction stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("not a readable zip: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("entry {name}: {why} (a zip bomb?); nothing more was written")]
    Limit { name: String, why: String },
}

/// What was written, and what was refused or changed.
#[derive(Clone, Debug, Default)]
pub struct Extracted {
    pub written: Vec<PathBuf>,
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
fn make_parents(root: &Path, relative: &Path) -> std::io::Result<PathBuf> {
    let mut current = root.to_path_buf();
    if let Some(parent) = relative.parent() {
        for part in parent.components() {
            current.push(part);
            match std::fs::symlink_metadata(&current) {
                Ok(meta) if meta.file_type().is_dir() => {}
                Ok(_) => {
                    return Err(std::io::Error::other(format!(
                        "{} exists and is not a folder",
                        current.display()
                    )))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::DirBuilder::new().mode(0o700).create(&current)?;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(root.join(relative))
}

/// Extracts `zip` into `dir` (created if needed).
pub fn extract(zip: &[u8], dir: &Path, limits: ExtractLimits) -> Result<Extracted, ExtractError> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip))?;
    if archive.len() > limits.max_entries {
        return Err(ExtractError::Limit {
            name: format!("{} entries", archive.len()),
            why: format!("more than {} entries", limits.max_entries),
        });
    }
    std::fs::create_dir_all(dir)?;
    let mut result = Extracted::default();
    let mut total = 0u64;
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index)?;
        let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        if entry.is_symlink() {
            result.warnings.push(format!(
                "{name}: a symbolic link, refused (links are never created or followed)"
            ));
            continue;
        }
        let relative = match safe_relative_path(&name) {
            Ok(relative) => relative,
            Err(why) => {
                result.warnings.push(format!("{name}: refused: {why}"));
                continue;
            }
        };
        if entry.is_dir() {
            make_parents(dir, &relative.join("x"))?;
            continue;
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
                    "{name}: {} already exists, not overwritten",
                    target.display()
                ));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        // Declared sizes can lie: the bytes themselves are counted.
        let budget = limits
            .max_entry_bytes
            .min(limits.max_total_bytes.saturating_sub(total));
        let copied = std::io::copy(&mut (&mut entry).take(budget + 1), &mut file)?;
        if copied > budget {
            drop(file);
            let _ = std::fs::remove_file(&target);
            return Err(ExtractError::Limit {
                name,
                why: "more bytes than the size limits allow".into(),
            });
        }
        file.flush()?;
        total += copied;
        if relative != Path::new(&name) {
            result
                .warnings
                .push(format!("{name}: written as {}", relative.display()));
        }
        result.written.push(target);
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::safe_relative_path;
    use std::path::PathBuf;

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
