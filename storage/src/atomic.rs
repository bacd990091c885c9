//! Crash-safe file replacement: a reader sees the old file or the new one,
//! never half of either.
//!
//! Internal: no fsync here on purpose. The redb index is the durable copy
//! (its commits are fsynced); the mirror only has to survive a crash of
//! cacheow, which rename already gives. An fsync per file made the writer
//! fall seconds behind under load and widened the loss window tenfold.

use std::fs;
use std::io::{self, Write as _};
use std::path::Path;

/// Creates `dir` and its missing parents readable by the owner alone: the
/// store holds recorded traffic.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Opens a new file for writing, readable by the owner alone.
fn create_private_file(path: &Path) -> io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Writes `bytes` to `path` through a temp file in the same dir and a rename.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    create_private_dir(dir)?;
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(".{}.tmp", file_name.to_string_lossy()));
    let result = (|| {
        let mut file = create_private_file(&tmp)?;
        file.write_all(bytes)?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        // Internal: best effort; the temp name starts with a dot so
        // rebuild-index never reads a leftover one.
        let _ = fs::remove_file(&tmp);
    }
    result
}
