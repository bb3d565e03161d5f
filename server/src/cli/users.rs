//! `strongroom users …`: end users, created by an operator.
//!
//! The password never comes from the command line, where it would sit in the process list and
//! the shell history: it is read from `--password-file`, or from standard input (without echo,
//! and twice, when that is a terminal). It is kept in zeroizing memory and never printed.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::config::Config;
use crate::store::StoreError;

/// Password length bounds, in characters: NIST SP 800-63B's minimum, and a maximum that keeps
/// hashing cheap enough.
const MIN_PASSWORD_CHARS: usize = 8;
const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// Create a user; prints its user_id and username as JSON. The password is read from
    /// --password-file, or else from standard input (one line).
    Create {
        #[arg(long)]
        username: String,
        /// A file whose content (one trailing newline ignored) is the password.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// A JSON object of OpenID Connect claims (name, email, …) the server may release.
        #[arg(long)]
        claims_file: Option<PathBuf>,
    },
    /// Every user (id, username, claims, creation time), as JSON.
    List,
}

pub fn run(config: &Config, command: UsersCommand) -> Result<(), String> {
    // Read the inputs before touching the database, so a refusal changes nothing.
    let create = match command {
        UsersCommand::Create {
            username,
            password_file,
            claims_file,
        } => {
            check_username(&username)?;
            let claims = match &claims_file {
                Some(path) => read_claims(path)?,
                None => json!({}),
            };
            let password = match &password_file {
                Some(path) => password_from_file(path)?,
                None => password_from_stdin(&username)?,
            };
            check_password(&password)?;
            Some((username, password, claims))
        }
        UsersCommand::List => None,
    };
    super::with_store(config, |store| async move {
        let output = match create {
            Some((username, password, claims)) => {
                let now = strongroom_keystore::Clock::now(&strongroom_keystore::SystemClock);
                let user = store
                    .create_user(&username, password, claims, now)
                    .await
                    .map_err(|e| match e {
                        StoreError::Conflict(_) => format!("user {username:?} already exists"),
                        other => other.to_string(),
                    })?;
                json!({"user_id": user.user_id, "username": user.username})
            }
            None => {
                let users = store.list_users().await.map_err(|e| e.to_string())?;
                Value::Array(
                    users
                        .into_iter()
                        .map(|u| {
                            json!({
                                "user_id": u.user_id,
                                "username": u.username,
                                "claims": u.claims,
                                "created_at": super::when(u.created_at),
                            })
                        })
                        .collect(),
                )
            }
        };
        super::print_json(&output)
    })
}

/// 1 to 255 characters, no control characters, no surrounding whitespace (a username is typed
/// at a login form: what is stored must be what can be typed).
fn check_username(username: &str) -> Result<(), String> {
    let n = username.chars().count();
    if n == 0 || n > 255 {
        return Err("the username must be 1 to 255 characters".into());
    }
    if username.chars().any(char::is_control) || username.trim() != username {
        return Err(
            "the username must not contain control characters or surrounding spaces".into(),
        );
    }
    Ok(())
}

fn check_password(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "the password must be at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "the password must be at most {MAX_PASSWORD_BYTES} bytes"
        ));
    }
    if password.contains(['\n', '\r']) {
        return Err("the password must be one line".into());
    }
    Ok(())
}

/// The claims file: a JSON object without `sub` (the server sets `sub` to the user_id).
fn read_claims(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let claims: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let Some(map) = claims.as_object() else {
        return Err(format!(
            "{}: the claims must be a JSON object",
            path.display()
        ));
    };
    if map.contains_key("sub") {
        return Err(format!(
            "{}: \"sub\" is the server's to set (the user_id)",
            path.display()
        ));
    }
    Ok(claims)
}

fn password_from_file(path: &Path) -> Result<Zeroizing<String>, String> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
    );
    Ok(without_newline(&text))
}

/// One line from standard input; on a terminal, asked twice without echo.
fn password_from_stdin(username: &str) -> Result<Zeroizing<String>, String> {
    if std::io::stdin().is_terminal() {
        let ask = |prompt: &str| {
            rpassword::prompt_password(prompt)
                .map(Zeroizing::new)
                .map_err(|e| format!("cannot read the password: {e}"))
        };
        let first = ask(&format!("Password for {username}: "))?;
        let second = ask("Again: ")?;
        if first != second {
            return Err("the two passwords differ".into());
        }
        return Ok(first);
    }
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    Ok(without_newline(&line))
}

/// `text` without one trailing `\n` or `\r\n`.
fn without_newline(text: &str) -> Zeroizing<String> {
    let t = text.strip_suffix('\n').unwrap_or(text);
    Zeroizing::new(t.strip_suffix('\r').unwrap_or(t).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_checked() {
        assert!(check_username("alice").is_ok());
        assert!(check_username("Alice Liddell").is_ok());
        for bad in ["", " alice", "alice\n", "a\u{7}b"] {
            assert!(check_username(bad).is_err(), "{bad:?}");
        }
        assert!(check_username(&"x".repeat(256)).is_err());
        assert!(check_password("correct horse").is_ok());
        assert!(check_password("short").is_err());
        assert!(check_password("two\nlines!").is_err());
        assert!(check_password(&"x".repeat(1025)).is_err());
        assert_eq!(without_newline("pw\r\n").as_str(), "pw");
        assert_eq!(without_newline("pw\n\n").as_str(), "pw\n");
        assert_eq!(without_newline("pw").as_str(), "pw");
    }

    #[test]
    fn claims_must_be_an_object_without_sub() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.json");
        std::fs::write(&f, r#"{"name": "Alice", "email": "a@example.com"}"#).unwrap();
        assert_eq!(read_claims(&f).unwrap().get("name"), Some(&json!("Alice")));
        std::fs::write(&f, r#"["name"]"#).unwrap();
        assert!(read_claims(&f).is_err());
        std::fs::write(&f, r#"{"sub": "admin"}"#).unwrap();
        assert!(read_claims(&f).is_err());
        std::fs::write(&f, "{").unwrap();
        assert!(read_claims(&f).is_err());
    }
}
