//! Artifacts on the agent: packing a directory into a tar archive, unpacking one, and
//! moving archives to and from the controller by sha256 (verified on both ends).
//!
//! Archives are deterministic: entries sorted by path, owner 0, mtime 0. The same tree
//! always has the same digest, so the controller stores it once. Permissions and
//! symlinks are kept.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// Errors moving artifacts.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The file system failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The transfer failed.
    #[error("{0}")]
    Transfer(String),
    /// A download did not match its digest.
    #[error("artifact \"{name}\" arrived corrupted: expected sha256 {expected}, got {actual}")]
    Corrupt {
        /// Artifact name.
        name: String,
        /// Expected digest.
        expected: String,
        /// Computed digest.
        actual: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Packs `dir` into the tar file `archive`; returns (sha256, size).
pub fn pack(dir: &Path, archive: &Path) -> Result<(String, u64), ArtifactError> {
    let file = std::fs::File::create(archive).map_err(io(archive))?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    builder.follow_symlinks(false);
    let mut entries = Vec::new();
    collect(dir, dir, &mut entries)?;
    entries.sort();
    for relative in entries {
        let path = dir.join(&relative);
        let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Deterministic);
        header.set_mtime(0);
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).map_err(io(&path))?;
            header.set_size(0);
            builder
                .append_link(&mut header, &relative, &target)
                .map_err(io(&path))?;
        } else if meta.is_dir() {
            header.set_size(0);
            builder
                .append_data(&mut header, &relative, std::io::empty())
                .map_err(io(&path))?;
        } else {
            let file = std::fs::File::open(&path).map_err(io(&path))?;
            builder
                .append_data(&mut header, &relative, file)
                .map_err(io(&path))?;
        }
    }
    let writer = builder.into_inner().map_err(io(archive))?;
    drop(writer);
    digest_file(archive)
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ArtifactError> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let relative = path
            .strip_prefix(root)
            .map(Path::to_owned)
            .unwrap_or_else(|_| path.clone());
        let kind = entry.file_type().map_err(io(&path))?;
        out.push(relative);
        if kind.is_dir() {
            collect(root, &path, out)?;
        }
    }
    Ok(())
}

/// sha256 and size of a file.
pub fn digest_file(path: &Path) -> Result<(String, u64), ArtifactError> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// Unpacks the tar file `archive` into `dir`, keeping permissions and symlinks and
/// refusing entries that would land outside `dir`.
pub fn unpack(archive: &Path, dir: &Path) -> Result<(), ArtifactError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let file = std::fs::File::open(archive).map_err(io(archive))?;
    let mut tar = tar::Archive::new(std::io::BufReader::new(file));
    tar.set_preserve_permissions(true);
    tar.set_overwrite(true);
    tar.unpack(dir).map_err(io(dir))
}

/// Downloads the archive with `sha256` into `dest`, verifying size and digest.
pub async fn download(
    client: &reqwest::Client,
    controller_url: &str,
    artifact: &sluice_proto::ArtifactRef,
    dest: &Path,
) -> Result<(), ArtifactError> {
    let url = format!("{controller_url}/api/v1/blobs/{}", artifact.sha256);
    let response = client.get(&url).send().await.map_err(|e| {
        ArtifactError::Transfer(format!("downloading artifact \"{}\": {e}", artifact.name))
    })?;
    if !response.status().is_success() {
        let message = crate::client::error_message(response).await;
        return Err(ArtifactError::Transfer(format!(
            "downloading artifact \"{}\": {message}",
            artifact.name
        )));
    }
    let mut file = tokio::fs::File::create(dest).await.map_err(io(dest))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            ArtifactError::Transfer(format!("downloading artifact \"{}\": {e}", artifact.name))
        })?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
        file.write_all(&chunk).await.map_err(io(dest))?;
    }
    file.flush().await.map_err(io(dest))?;
    let actual = hex::encode(hasher.finalize());
    if actual != artifact.sha256 || size != artifact.size {
        return Err(ArtifactError::Corrupt {
            name: artifact.name.clone(),
            expected: artifact.sha256.clone(),
            actual,
        });
    }
    Ok(())
}

/// Uploads an archive by its digest.
pub async fn upload(
    client: &reqwest::Client,
    controller_url: &str,
    name: &str,
    archive: &Path,
    sha256: &str,
    size: u64,
) -> Result<(), ArtifactError> {
    let file = tokio::fs::File::open(archive).await.map_err(io(archive))?;
    let stream = futures_util::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 256 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(buf), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    let response = client
        .put(format!("{controller_url}/api/v1/blobs/{sha256}"))
        .header("content-length", size)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .map_err(|e| ArtifactError::Transfer(format!("uploading artifact \"{name}\": {e}")))?;
    if !response.status().is_success() {
        let message = crate::client::error_message(response).await;
        return Err(ArtifactError::Transfer(format!(
            "uploading artifact \"{name}\": {message}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn packing_is_deterministic_and_round_trips() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("bin")).unwrap();
        std::fs::write(src.path().join("bin/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(
            src.path().join("bin/run.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("bin/run.sh", src.path().join("run")).unwrap();
        let out = tempfile::tempdir().unwrap();
        let (a, _) = pack(src.path(), &out.path().join("a.tar")).unwrap();
        let (b, _) = pack(src.path(), &out.path().join("b.tar")).unwrap();
        assert_eq!(a, b);
        let dest = out.path().join("unpacked");
        unpack(&out.path().join("a.tar"), &dest).unwrap();
        let mode = std::fs::metadata(dest.join("bin/run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            std::fs::read_link(dest.join("run")).unwrap(),
            Path::new("bin/run.sh")
        );
    }
}
