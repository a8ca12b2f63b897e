//! The artifact store: archives addressed by their sha256, as files
//! `<data-dir>/blobs/<sha256>`. An upload is written to a temporary file, hashed on
//! the way in, and renamed into place only if the digest matches the one claimed, so a
//! blob on disk is always whole and correct. Identical artifacts are stored once.

use std::path::{Path, PathBuf};

use bytes::Buf;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// Errors of the artifact store.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The digest is not 64 lowercase hex characters.
    #[error("\"{0}\" is not a sha256 digest (64 lowercase hex characters)")]
    BadDigest(String),
    /// The bytes received do not hash to the digest claimed.
    #[error(
        "upload does not match its digest: expected sha256 {expected}, received {actual} ({size} bytes)"
    )]
    Mismatch {
        /// Claimed.
        expected: String,
        /// Computed.
        actual: String,
        /// Bytes received.
        size: u64,
    },
    /// The upload stream broke.
    #[error("upload interrupted: {0}")]
    Transfer(String),
    /// The disk failed (full, read-only, ...).
    #[error("artifact store I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The content-addressed artifact store.
#[derive(Clone)]
pub struct BlobStore {
    root: PathBuf,
    tmp: PathBuf,
}

/// Whether a string is a sha256 digest in our canonical form.
pub fn is_digest(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl BlobStore {
    /// A store in `root`, with uploads in progress in `tmp` (both created if needed;
    /// keep them on one file system so that finishing an upload is a rename).
    pub fn new(root: PathBuf, tmp: PathBuf) -> Result<BlobStore, BlobError> {
        // Uploads cut short by a restart left partial files; nothing refers to them.
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|source| BlobError::Io {
                path: tmp.clone(),
                source,
            })?;
        }
        for dir in [&root, &tmp] {
            std::fs::create_dir_all(dir).map_err(|source| BlobError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(BlobStore { root, tmp })
    }

    /// The directory holding the blobs.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with this digest lives (it may not exist).
    pub fn path(&self, digest: &str) -> Result<PathBuf, BlobError> {
        if !is_digest(digest) {
            return Err(BlobError::BadDigest(digest.to_string()));
        }
        Ok(self.root.join(digest))
    }

    /// The size of a stored blob, if it exists.
    pub fn size(&self, digest: &str) -> Result<Option<u64>, BlobError> {
        let path = self.path(digest)?;
        match std::fs::metadata(&path) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(BlobError::Io { path, source }),
        }
    }

    /// Stores a blob from a stream of chunks, verifying its digest. Returns its size.
    pub async fn put<S, B, E>(&self, digest: &str, mut body: S) -> Result<u64, BlobError>
    where
        S: Stream<Item = Result<B, E>> + Unpin,
        B: Buf,
        E: std::fmt::Display,
    {
        let final_path = self.path(digest)?;
        if let Some(size) = self.size(digest)? {
            // Already stored: drain the body so the client sees a clean response.
            while let Some(chunk) = body.next().await {
                chunk.map_err(|e| BlobError::Transfer(e.to_string()))?;
            }
            return Ok(size);
        }
        let tmp_path = self.tmp.join(format!("{digest}.{}", uuid::Uuid::new_v4()));
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| BlobError::Io { path, source }
        };
        let mut file = tokio::fs::File::create(&tmp_path)
            .await
            .map_err(io(&tmp_path))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let result: Result<(), BlobError> = async {
            while let Some(chunk) = body.next().await {
                let mut chunk = chunk.map_err(|e| BlobError::Transfer(e.to_string()))?;
                while chunk.has_remaining() {
                    let bytes = chunk.chunk();
                    hasher.update(bytes);
                    size += bytes.len() as u64;
                    file.write_all(bytes).await.map_err(io(&tmp_path))?;
                    let n = bytes.len();
                    chunk.advance(n);
                }
            }
            file.sync_all().await.map_err(io(&tmp_path))?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&tmp_path).await;
            return Err(e);
        }
        let actual = hex::encode(hasher.finalize());
        if actual != digest {
            let _ = tokio::fs::remove_file(&tmp_path).await;
            return Err(BlobError::Mismatch {
                expected: digest.to_string(),
                actual,
                size,
            });
        }
        tokio::fs::rename(&tmp_path, &final_path)
            .await
            .map_err(io(&final_path))?;
        Ok(size)
    }

    /// Stores bytes already in memory (a plugin component); returns their digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<String, BlobError> {
        let digest = hex::encode(Sha256::digest(bytes));
        if self.size(&digest)?.is_some() {
            return Ok(digest);
        }
        let tmp_path = self.tmp.join(format!("{digest}.{}", uuid::Uuid::new_v4()));
        let final_path = self.path(&digest)?;
        let written = std::fs::write(&tmp_path, bytes)
            .and_then(|()| std::fs::File::open(&tmp_path)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp_path, &final_path));
        if let Err(source) = written {
            let _ = std::fs::remove_file(&tmp_path);
            return Err(BlobError::Io {
                path: final_path,
                source,
            });
        }
        Ok(digest)
    }
}
