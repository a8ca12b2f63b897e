//! Action logs as plain files under `<data-dir>/logs/<execution>/<attempt>.log`.
//!
//! Logs never go into SQLite (it holds only an index row per attempt). Chunks arrive
//! with their byte offset and are written at that offset, so a chunk sent twice after a
//! reconnect lands on itself instead of duplicating, and a missing chunk leaves a hole
//! that the final length + sha256 check reports as an incomplete log.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The largest log kept for one attempt; bytes past it are dropped (and the log is then
/// marked incomplete by the final length check).
pub const MAX_LOG_BYTES: u64 = 1 << 30;
/// How far past the stored end a chunk may start (a chunk lost in transit leaves a gap).
const MAX_GAP: u64 = 16 << 20;

/// The log file area of the data dir.
#[derive(Clone)]
pub struct LogFiles {
    data_dir: PathBuf,
}

impl LogFiles {
    /// Log files under `<data_dir>/logs`.
    pub fn new(data_dir: &Path) -> LogFiles {
        LogFiles {
            data_dir: data_dir.to_owned(),
        }
    }

    /// The log's path relative to the data dir (what the log index stores).
    pub fn relative_path(&self, execution_id: &str, attempt_id: i64) -> String {
        format!("logs/{execution_id}/{attempt_id}.log")
    }

    /// The log's absolute path.
    pub fn path(&self, execution_id: &str, attempt_id: i64) -> PathBuf {
        self.data_dir
            .join(self.relative_path(execution_id, attempt_id))
    }

    /// Writes `data` at `offset`; returns the file's length afterwards.
    pub fn write_at(
        &self,
        execution_id: &str,
        attempt_id: i64,
        offset: u64,
        data: &[u8],
    ) -> std::io::Result<u64> {
        let path = self.path(execution_id, attempt_id);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        let stored = file.metadata()?.len();
        let end = offset.saturating_add(data.len() as u64);
        if offset > stored.saturating_add(MAX_GAP) || end > MAX_LOG_BYTES {
            tracing::warn!(
                attempt = attempt_id,
                offset,
                stored,
                "Dropping a log chunk outside the allowed range."
            );
            return Ok(stored);
        }
        file.write_all_at(data, offset)?;
        Ok(stored.max(end))
    }

    /// Length and hex sha256 of what is stored (0 and the empty hash if nothing is).
    pub fn digest(&self, execution_id: &str, attempt_id: i64) -> std::io::Result<(u64, String)> {
        let mut hasher = Sha256::new();
        let mut length = 0u64;
        match std::fs::File::open(self.path(execution_id, attempt_id)) {
            Ok(mut file) => {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = file.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    length += n as u64;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok((length, hex::encode(hasher.finalize())))
    }

    /// Reads up to `limit` bytes from `offset`.
    pub fn read(
        &self,
        execution_id: &str,
        attempt_id: i64,
        offset: u64,
        limit: usize,
    ) -> std::io::Result<Vec<u8>> {
        let mut file = match std::fs::File::open(self.path(execution_id, attempt_id)) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(offset))?;
        let mut out = Vec::new();
        file.take(limit as u64).read_to_end(&mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_land_at_their_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogFiles::new(dir.path());
        assert_eq!(logs.write_at("e", 1, 0, b"hello ").unwrap(), 6);
        assert_eq!(logs.write_at("e", 1, 6, b"world").unwrap(), 11);
        // A resent chunk overwrites itself.
        assert_eq!(logs.write_at("e", 1, 6, b"world").unwrap(), 11);
        assert_eq!(logs.read("e", 1, 0, 100).unwrap(), b"hello world");
        // A chunk far past the end is dropped rather than making a huge sparse file.
        assert_eq!(logs.write_at("e", 1, 1 << 40, b"x").unwrap(), 11);
        let (len, sha) = logs.digest("e", 1).unwrap();
        assert_eq!(len, 11);
        assert_eq!(sha, hex::encode(Sha256::digest(b"hello world")));
    }
}
