//! The secret store's encryption: AES-256-GCM with a key kept in the data dir
//! (`secrets.key`, 32 random bytes, mode 0600), a fresh random nonce for every write,
//! and the secret's name as associated data, so a ciphertext moved to another name does
//! not decrypt. The database holds only ciphertexts; the API never returns a value.

use std::path::{Path, PathBuf};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// The key file's name in the data dir.
pub const KEY_FILE: &str = "secrets.key";

/// Errors of the secret store.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The key file could not be read or written.
    #[error("secret key {path}: {message}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What went wrong and what to do.
        message: String,
    },
    /// A stored value does not decrypt with this key.
    #[error(
        "secret {0} cannot be decrypted with this controller's {KEY_FILE}: was the key file \
         replaced? Set the secret again with `sluice secret set {0}`"
    )]
    Decrypt(String),
    /// No randomness could be had.
    #[error("cannot draw random bytes for a nonce")]
    Random,
}

/// Seals and opens secret values.
pub struct SecretBox {
    key: LessSafeKey,
    random: SystemRandom,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox")
    }
}

impl SecretBox {
    /// Loads `<data_dir>/secrets.key`, creating it on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<SecretBox, SecretError> {
        let path = data_dir.join(KEY_FILE);
        let bad = |message: String| SecretError::Key {
            path: path.clone(),
            message,
        };
        let random = SystemRandom::new();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut fresh = [0u8; 32];
                random.fill(&mut fresh).map_err(|_| SecretError::Random)?;
                write_private(&path, &fresh).map_err(|e| bad(e.to_string()))?;
                fresh.to_vec()
            }
            Err(e) => return Err(bad(e.to_string())),
        };
        if bytes.len() != 32 {
            return Err(bad(format!(
                "holds {} bytes, not 32; restore it from a backup (or remove it and set every secret again)",
                bytes.len()
            )));
        }
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| bad("is not a valid AES-256 key".to_string()))?;
        Ok(SecretBox {
            key: LessSafeKey::new(key),
            random,
        })
    }

    /// Encrypts `value` for the secret `name`: (nonce, ciphertext with tag).
    pub fn seal(&self, name: &str, value: &str) -> Result<(Vec<u8>, Vec<u8>), SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| SecretError::Random)?;
        let mut data = value.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut data,
            )
            .map_err(|_| SecretError::Decrypt(name.to_string()))?;
        Ok((nonce.to_vec(), data))
    }

    /// Decrypts the secret `name`.
    pub fn open(&self, name: &str, nonce: &[u8], ciphertext: &[u8]) -> Result<String, SecretError> {
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| SecretError::Decrypt(name.to_string()))?;
        let mut data = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut data,
            )
            .map_err(|_| SecretError::Decrypt(name.to_string()))?;
        String::from_utf8(plain.to_vec()).map_err(|_| SecretError::Decrypt(name.to_string()))
    }
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_are_bound_to_their_name_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = SecretBox::load_or_create(dir.path()).unwrap();
        let (nonce, sealed) = secrets.seal("DEPLOY_TOKEN", "hunter2").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            secrets.open("DEPLOY_TOKEN", &nonce, &sealed).unwrap(),
            "hunter2"
        );
        // Another name, or the same ciphertext under a new key, does not decrypt.
        assert!(secrets.open("OTHER", &nonce, &sealed).is_err());
        let again = SecretBox::load_or_create(dir.path()).unwrap();
        assert_eq!(
            again.open("DEPLOY_TOKEN", &nonce, &sealed).unwrap(),
            "hunter2"
        );
        let other_dir = tempfile::tempdir().unwrap();
        let other = SecretBox::load_or_create(other_dir.path()).unwrap();
        let err = other.open("DEPLOY_TOKEN", &nonce, &sealed).unwrap_err();
        assert!(
            err.to_string().contains("sluice secret set DEPLOY_TOKEN"),
            "{err}"
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
