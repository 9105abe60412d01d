//! Files that hold secrets (identity keys, sealing keys, operator keys, plaintext weights, test records):
//! written owner-only with exclusive create, and read only when nobody else can read or write them.
//!
//! Invariants:
//! - A secret file is first written in full to `PATH.tmp`, created with `O_CREAT | O_EXCL` (`create_new`)
//!   and mode 0600, synced, then renamed over `PATH`. Exclusive create never follows a symbolic link planted
//!   at `PATH.tmp`; a stale temporary file (left by a crash) is removed first, and removing a link removes
//!   the link, not its target.
//! - [`read_secret`] refuses a file whose mode grants any access to group or others (on Unix), and a file
//!   larger than the caller's bound, before reading its contents.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why a secret file could not be written or read.
#[derive(Debug, Error)]
pub enum SecretFileError {
    /// An operating-system call failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file grants access to group or others.
    #[error(
        "{path} has mode {mode:o}: a secret file must be readable by its owner only (chmod 600 {path})"
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is larger than any valid file of its kind.
    #[error("{path} is {len} bytes, more than the {limit} bytes a file of this kind may have")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The bound.
        limit: u64,
    },
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> SecretFileError + 'a {
    move |source| SecretFileError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Opens `path` for writing as a new owner-only file; fails if anything exists there.
pub fn create_new_private(path: &Path) -> Result<std::fs::File, SecretFileError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(io("creating", path))
}

/// Writes `bytes` as the secret file `path` (replacing an older one atomically); see the module invariants.
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), SecretFileError> {
    let tmp = temporary_path(path);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("removing stale", &tmp)(e)),
    }
    let mut file = create_new_private(&tmp)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io("writing", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io("storing", path))
}

/// Reads the secret file `path`, at most `limit` bytes long, refusing it if group or others have any access.
/// A missing file is an `Io` error of kind `NotFound` (see [`SecretFileError::is_not_found`]).
pub fn read_secret(path: &Path, limit: u64) -> Result<Vec<u8>, SecretFileError> {
    let file = std::fs::File::open(path).map_err(io("opening", path))?;
    let meta = file.metadata().map_err(io("inspecting", path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretFileError::TooOpen {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    if meta.len() > limit {
        return Err(SecretFileError::TooLarge {
            path: path.to_path_buf(),
            len: meta.len(),
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(io("reading", path))?;
    if bytes.len() as u64 > limit {
        return Err(SecretFileError::TooLarge {
            path: path.to_path_buf(),
            len: bytes.len() as u64,
            limit,
        });
    }
    Ok(bytes)
}

impl SecretFileError {
    /// Whether the file does not exist (so a caller may create it).
    pub fn is_not_found(&self) -> bool {
        matches!(self, SecretFileError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_owner_only_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        write_secret(&path, b"secret").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(read_secret(&path, 64).unwrap(), b"secret");
        write_secret(&path, b"newer").unwrap();
        assert_eq!(read_secret(&path, 64).unwrap(), b"newer");
    }

    #[cfg(unix)]
    #[test]
    fn group_or_world_access_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        write_secret(&path, b"secret").unwrap();
        for mode in [0o640, 0o604, 0o620, 0o644] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            match read_secret(&path, 64) {
                Err(SecretFileError::TooOpen { mode: m, .. }) => assert_eq!(m, mode),
                other => panic!("mode {mode:o}: {other:?}"),
            }
        }
    }

    #[test]
    fn oversized_and_missing_files_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        write_secret(&path, &[7u8; 65]).unwrap();
        assert!(matches!(
            read_secret(&path, 64),
            Err(SecretFileError::TooLarge {
                len: 65,
                limit: 64,
                ..
            })
        ));
        assert!(read_secret(&dir.path().join("absent"), 64)
            .unwrap_err()
            .is_not_found());
    }

    #[cfg(unix)]
    #[test]
    fn a_planted_link_at_the_temporary_path_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        std::fs::write(&target, b"untouched").unwrap();
        let path = dir.path().join("key");
        std::os::unix::fs::symlink(&target, temporary_path(&path)).unwrap();
        write_secret(&path, b"secret").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"untouched");
        assert_eq!(read_secret(&path, 64).unwrap(), b"secret");
    }

    #[test]
    fn create_new_refuses_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weights");
        std::fs::write(&path, b"x").unwrap();
        assert!(create_new_private(&path).is_err());
    }
}
