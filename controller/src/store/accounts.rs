//! Web UI accounts: users with a password hash and a role, and their browser sessions.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Result, Store, now_ms};

/// A user who signs in to the web UI.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRow {
    /// Sign-in name.
    pub name: String,
    /// Argon2id PHC string.
    #[serde(skip)]
    pub password_hash: String,
    /// What the user may do.
    pub role: String,
    /// Created, ms since epoch.
    pub created_at_ms: i64,
    /// Last successful sign-in.
    pub last_sign_in_ms: Option<i64>,
}

/// A browser session.
#[derive(Debug, Clone)]
pub struct WebSessionRow {
    /// Whose.
    pub user_name: String,
    /// The token every state change must carry.
    pub csrf_token: String,
    /// When it ends unless used.
    pub expires_at_ms: i64,
}

impl Store {
    /// How many users there are.
    pub fn user_count(&self) -> Result<i64> {
        Ok(self
            .conn()
            .query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?)
    }

    /// Adds a user (the name must be new).
    pub fn insert_user(&self, name: &str, password_hash: &str, role: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO users (name, password_hash, role, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![name, password_hash, role, now_ms()],
        )?;
        Ok(())
    }

    /// Replaces a user's password hash; false if there is no such user.
    pub fn set_user_password(&self, name: &str, password_hash: &str) -> Result<bool> {
        Ok(self.conn().execute(
            "UPDATE users SET password_hash = ?2 WHERE name = ?1",
            params![name, password_hash],
        )? == 1)
    }

    /// One user.
    pub fn user(&self, name: &str) -> Result<Option<UserRow>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT name, password_hash, role, created_at_ms, last_sign_in_ms
                 FROM users WHERE name = ?1",
                [name],
                |r| {
                    Ok(UserRow {
                        name: r.get(0)?,
                        password_hash: r.get(1)?,
                        role: r.get(2)?,
                        created_at_ms: r.get(3)?,
                        last_sign_in_ms: r.get(4)?,
                    })
                },
            )
            .optional()?)
    }

    /// Starts a session for a user who just signed in.
    pub fn insert_web_session(
        &self,
        token_sha256: &str,
        user: &str,
        csrf_token: &str,
        expires_at_ms: i64,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let now = now_ms();
        // Expired sessions are removed as new ones start.
        tx.execute("DELETE FROM web_sessions WHERE expires_at_ms < ?1", [now])?;
        tx.execute(
            "INSERT INTO web_sessions (token_sha256, user_name, csrf_token, created_at_ms, expires_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![token_sha256, user, csrf_token, now, expires_at_ms],
        )?;
        tx.execute(
            "UPDATE users SET last_sign_in_ms = ?2 WHERE name = ?1",
            params![user, now],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The session with this token hash, if it has not expired.
    pub fn web_session(&self, token_sha256: &str) -> Result<Option<WebSessionRow>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT user_name, csrf_token, expires_at_ms FROM web_sessions
                 WHERE token_sha256 = ?1 AND expires_at_ms >= ?2",
                params![token_sha256, now_ms()],
                |r| {
                    Ok(WebSessionRow {
                        user_name: r.get(0)?,
                        csrf_token: r.get(1)?,
                        expires_at_ms: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Moves a session's end (it is renewed as it is used).
    pub fn renew_web_session(&self, token_sha256: &str, expires_at_ms: i64) -> Result<()> {
        self.conn().execute(
            "UPDATE web_sessions SET expires_at_ms = ?2 WHERE token_sha256 = ?1",
            params![token_sha256, expires_at_ms],
        )?;
        Ok(())
    }

    /// Ends a session.
    pub fn delete_web_session(&self, token_sha256: &str) -> Result<()> {
        self.conn().execute(
            "DELETE FROM web_sessions WHERE token_sha256 = ?1",
            [token_sha256],
        )?;
        Ok(())
    }

    /// Ends every session of a user (after a password change).
    pub fn delete_user_sessions(&self, user: &str) -> Result<()> {
        self.conn()
            .execute("DELETE FROM web_sessions WHERE user_name = ?1", [user])?;
        Ok(())
    }
}
