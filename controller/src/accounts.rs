//! People who sign in to the web UI: users with an Argon2id password hash and a role,
//! and browser sessions (an HttpOnly cookie holding a random token, of which only the
//! SHA-256 is stored, and a CSRF token that every state change must carry).
//!
//! Scripts and the CLI keep using API tokens. On first start the controller creates
//! the `admin` user, with the password the operator gave or a generated one that is
//! printed once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::api::{hash_secret, new_secret};
use crate::store::{Store, StoreError, UserRow, WebSessionRow, now_ms};

/// The first user's name.
pub const ADMIN_USER: &str = "admin";
/// The name of the browser session cookie.
pub const SESSION_COOKIE: &str = "sluice_session";
/// How long a session lives without being used.
pub const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);
/// Failed sign-ins of one user in a row before it must wait.
const MAX_FAILURES: u32 = 5;
/// How long it waits.
const LOCKOUT: Duration = Duration::from_secs(30);
const MIN_PASSWORD: usize = 8;

/// What a role may do. The UI hides what a user may not do, and the API refuses it.
/// Only `admin` exists today; its list holds every permission.
pub fn permissions(role: &str) -> &'static [&'static str] {
    match role {
        "admin" => &[
            "pipeline:write",
            "execution:start",
            "execution:stop",
            "execution:retry",
            "execution:approve",
            "execution:override",
            "transition:write",
            "agent:write",
            "plugin:write",
            "secret:write",
        ],
        _ => &[],
    }
}

/// Errors signing in or managing accounts.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// Wrong name or password (which one is not said).
    #[error("wrong user name or password")]
    BadCredentials,
    /// Too many failures in a row.
    #[error("too many failed sign-ins for {0}; wait {1} seconds and try again")]
    LockedOut(String, u64),
    /// A password that is too weak to set.
    #[error("{0}")]
    WeakPassword(String),
    /// Hashing failed.
    #[error("cannot hash the password: {0}")]
    Hash(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A session that was just started: the cookie's token and the CSRF token.
pub struct NewSession {
    /// Goes in the cookie; only its hash is stored.
    pub token: String,
    /// Goes in the `X-CSRF-Token` header of every state change.
    pub csrf_token: String,
    /// The user.
    pub user: UserRow,
}

/// Users and sessions.
pub struct Accounts {
    store: Arc<Store>,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Accounts {
    /// Accounts kept in `store`.
    pub fn new(store: Arc<Store>) -> Accounts {
        Accounts {
            store,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Creates the `admin` user if there are no users yet, with `password` or a
    /// generated one. Returns the generated password, to be shown once.
    pub fn ensure_admin(&self, password: Option<&str>) -> Result<Option<String>, AccountError> {
        if self.store.user_count()? > 0 {
            return Ok(None);
        }
        let (password, generated) = match password {
            Some(p) => (p.to_string(), false),
            None => (new_secret("pw").replace("pw_", "")[..20].to_string(), true),
        };
        check_strength(&password)?;
        self.store
            .insert_user(ADMIN_USER, &hash_password(&password)?, "admin")?;
        tracing::info!(user = ADMIN_USER, "Admin account created.");
        Ok(generated.then_some(password))
    }

    /// Sets a user's password and ends their sessions; false if there is no such user.
    pub fn set_password(&self, user: &str, password: &str) -> Result<bool, AccountError> {
        check_strength(password)?;
        let changed = self
            .store
            .set_user_password(user, &hash_password(password)?)?;
        if changed {
            self.store.delete_user_sessions(user)?;
        }
        Ok(changed)
    }

    /// Checks a name and password and starts a session.
    pub fn sign_in(&self, name: &str, password: &str) -> Result<NewSession, AccountError> {
        if let Some((count, since)) = self.lock_failures().get(name).copied()
            && count >= MAX_FAILURES
        {
            let elapsed = since.elapsed();
            if elapsed < LOCKOUT {
                return Err(AccountError::LockedOut(
                    name.to_string(),
                    (LOCKOUT - elapsed).as_secs().max(1),
                ));
            }
        }
        let user = self.store.user(name)?;
        let verified = match &user {
            Some(user) => verify_password(password, &user.password_hash),
            // Hash anyway, so a wrong name takes as long as a wrong password.
            None => {
                let _ = hash_password(password);
                false
            }
        };
        let Some(user) = user.filter(|_| verified) else {
            let mut failures = self.lock_failures();
            let entry = failures
                .entry(name.to_string())
                .or_insert((0, Instant::now()));
            entry.0 += 1;
            entry.1 = Instant::now();
            tracing::warn!(user = name, failures = entry.0, "Sign-in refused.");
            return Err(AccountError::BadCredentials);
        };
        self.lock_failures().remove(name);
        let token = new_secret("sws");
        let csrf_token = new_secret("csrf");
        let expires = now_ms() + SESSION_IDLE.as_millis() as i64;
        self.store
            .insert_web_session(&hash_secret(&token), &user.name, &csrf_token, expires)?;
        tracing::info!(user = %user.name, "Signed in.");
        Ok(NewSession {
            token,
            csrf_token,
            user,
        })
    }

    /// The live session a cookie token belongs to, with its user; renews it when a
    /// good part of its idle time has passed.
    pub fn session(&self, token: &str) -> Result<Option<(WebSessionRow, UserRow)>, AccountError> {
        let hash = hash_secret(token);
        let Some(session) = self.store.web_session(&hash)? else {
            return Ok(None);
        };
        let Some(user) = self.store.user(&session.user_name)? else {
            return Ok(None);
        };
        let fresh = now_ms() + SESSION_IDLE.as_millis() as i64;
        if fresh - session.expires_at_ms > 60_000 {
            self.store.renew_web_session(&hash, fresh)?;
        }
        Ok(Some((session, user)))
    }

    /// Ends the session of a cookie token.
    pub fn sign_out(&self, token: &str) -> Result<(), AccountError> {
        Ok(self.store.delete_web_session(&hash_secret(token))?)
    }

    fn lock_failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u32, Instant)>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn check_strength(password: &str) -> Result<(), AccountError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(AccountError::WeakPassword(format!(
            "the password must have at least {MIN_PASSWORD} characters"
        )));
    }
    Ok(())
}

fn hash_password(password: &str) -> Result<String, AccountError> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt =
        SaltString::encode_b64(&salt_bytes).map_err(|e| AccountError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn accounts() -> Accounts {
        Accounts::new(Arc::new(Store::open_in_memory().unwrap()))
    }

    #[test]
    fn the_first_start_makes_an_admin_once_and_sessions_follow_the_password() {
        let a = accounts();
        let generated = a.ensure_admin(None).unwrap().unwrap();
        assert_eq!(generated.len(), 20);
        assert!(a.ensure_admin(Some("another-one")).unwrap().is_none());
        assert!(matches!(
            a.sign_in(ADMIN_USER, "wrong password"),
            Err(AccountError::BadCredentials)
        ));
        let session = a.sign_in(ADMIN_USER, &generated).unwrap();
        let (row, user) = a.session(&session.token).unwrap().unwrap();
        assert_eq!(user.role, "admin");
        assert_eq!(row.csrf_token, session.csrf_token);
        assert!(a.session("sws_forged").unwrap().is_none());
        // A new password ends every session.
        assert!(a.set_password(ADMIN_USER, "correct horse").unwrap());
        assert!(a.session(&session.token).unwrap().is_none());
        assert!(matches!(
            a.set_password(ADMIN_USER, "short"),
            Err(AccountError::WeakPassword(_))
        ));
        let again = a.sign_in(ADMIN_USER, "correct horse").unwrap();
        a.sign_out(&again.token).unwrap();
        assert!(a.session(&again.token).unwrap().is_none());
    }

    #[test]
    fn repeated_failures_lock_a_user_out_for_a_while() {
        let a = accounts();
        a.ensure_admin(Some("a good password")).unwrap();
        for _ in 0..MAX_FAILURES {
            assert!(matches!(
                a.sign_in(ADMIN_USER, "nope nope"),
                Err(AccountError::BadCredentials)
            ));
        }
        assert!(matches!(
            a.sign_in(ADMIN_USER, "a good password"),
            Err(AccountError::LockedOut(_, _))
        ));
    }
}
