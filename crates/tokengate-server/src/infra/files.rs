//! Private files on disk: files created with their final mode (0600 for
//! secrets) rather than tightened afterwards, directories created 0700, and
//! existing files made private when others could read them. Infrastructure
//! for storage (the SQLite file), the key store (the master key) and the
//! CLI (key files); it knows none of them.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A file operation that failed; each names the path it failed on.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// [`create_new`] found a file at the path, and never overwrites.
    #[error("{} already exists; refusing to overwrite it", .path.display())]
    AlreadyExists {
        /// The file that exists.
        path: PathBuf,
    },
    /// The file could not be created.
    #[error("cannot create {}: {source}", .path.display())]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file was created but its contents could not be written out.
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The directory could not be created.
    #[error("cannot create directory {}: {source}", .path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file's permissions could not be read or narrowed.
    #[error("cannot make {} private: {source}", .path.display())]
    MakePrivate {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Reads a whole file.
pub fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    fs::read(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Creates `path` with `contents`, refusing to overwrite, with mode 0600
/// when `private` (set at creation, so the file is never world-readable).
pub fn create_new(path: &Path, contents: &[u8], private: bool) -> Result<(), FileError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            FileError::AlreadyExists {
                path: path.to_owned(),
            }
        } else {
            FileError::Create {
                path: path.to_owned(),
                source,
            }
        }
    })?;
    // Synced before success is reported: a key file is often the only copy.
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|source| FileError::Write {
            path: path.to_owned(),
            source,
        })
}

/// Creates `path` empty with mode 0600 if it does not exist (an existing
/// file is left as it is, never truncated). For files another library
/// would otherwise create with the umask's mode.
pub fn create_private_file(path: &Path) -> Result<(), FileError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(FileError::Create {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Takes group and other permissions off `path` (mode 0600) if it has
/// any, logging a warning that names the file. A missing file is fine.
pub fn make_private(path: &Path) -> Result<(), FileError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let failed = |source| FileError::MakePrivate {
            path: path.to_owned(),
            source,
        };
        let mode = match fs::metadata(path) {
            Ok(metadata) => metadata.permissions().mode(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(failed(e)),
        };
        if mode & 0o077 != 0 {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(failed)?;
            tracing::warn!(
                file = %path.display(),
                was = format!("{:o}", mode & 0o777),
                "file was readable by others: made private (mode 600)"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Creates `dir` (and parents) readable by the owner only, for directories
/// that hold a database or keys. The mode is given at creation, so the
/// umask can only narrow it.
pub fn create_private_dir(dir: &Path) -> Result<(), FileError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| FileError::CreateDir {
        path: dir.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_new_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        create_new(&path, b"first", true).unwrap();
        let refused = create_new(&path, b"second", true).unwrap_err();
        assert!(matches!(refused, FileError::AlreadyExists { .. }));
        assert_eq!(
            refused.to_string(),
            format!(
                "{} already exists; refusing to overwrite it",
                path.display()
            )
        );
        assert_eq!(read(&path).unwrap(), b"first");
    }

    #[cfg(unix)]
    #[test]
    fn private_files_and_dirs_get_owner_only_modes() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let secret = dir.join("secret");
        create_new(&secret, b"s", true).unwrap();
        assert_eq!(mode(&secret), 0o600);
        let db = dir.join("db");
        create_private_file(&db).unwrap();
        create_private_file(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        let shared = dir.join("shared");
        fs::write(&shared, b"x").unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o644)).unwrap();
        make_private(&shared).unwrap();
        assert_eq!(mode(&shared), 0o600);
        make_private(&dir.join("missing")).unwrap();
    }
}
