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

/// Writes `bytes` to `path` through a temp file in the same dir and a rename.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    fs::create_dir_all(dir)?;
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(".{}.tmp", file_name.to_string_lossy()));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
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
