//! Files that hold secrets: written 0600 atomically, and refused when others may read
//! them. Key files are this crate's business; `bunq-store`'s master key file and the
//! xtask's config and context files use the same two functions.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::KeyError;

/// Why a key file could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// Reading or writing the file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file may be read by users other than its owner, so the key may have leaked
    /// and must not be trusted silently.
    #[error(
        "key file {path} has mode {mode:o}: readable by group or others; run `chmod 600` on it (and consider the key leaked)"
    )]
    TooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file's contents are not a valid key.
    #[error("key file {path}: {source}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong with the key.
        source: KeyError,
    },
}

/// Reads at most `max_len` bytes of a file only its owner may read.
///
/// Refuses (with [`KeyFileError::TooOpen`]) a file that group or others may read: a
/// secret that others could have copied is not one to keep using without a word. A file
/// longer than `max_len` is refused too, unread: it is not the secret file asked for.
/// The bytes come back in a buffer that is zeroed when dropped.
pub fn read_private_file(
    path: impl AsRef<Path>,
    max_len: u64,
) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
    let path = path.as_ref();
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = file.metadata().map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::TooOpen {
                path: path.to_owned(),
                mode,
            });
        }
    }
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(max_len.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > max_len {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("longer than {max_len} bytes: not the secret file expected"),
        )));
    }
    Ok(bytes)
}

/// Writes `bytes` to `path` with mode 0600, atomically: a temporary file in the same
/// directory is written, synced and renamed over `path` (and the directory synced), so a
/// crash leaves either the old file or the new one, never half a secret, and the secret
/// is never readable by others, not even for a moment.
pub fn write_private_file(path: impl AsRef<Path>, bytes: &[u8]) -> Result<(), KeyFileError> {
    let path = path.as_ref();
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().ok_or_else(|| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a file path",
        ))
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_file_longer_than_asked_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        write_private_file(&path, &[7u8; 100]).unwrap();
        assert_eq!(read_private_file(&path, 100).unwrap().len(), 100);
        assert!(matches!(
            read_private_file(&path, 99),
            Err(KeyFileError::Io { .. })
        ));
    }
}
