//! The person's sign-in, kept in their config folder (`$XDG_CONFIG_HOME/sts-bridge/`, else
//! `~/.config/sts-bridge/`): folder mode 0700, one file per profile, mode 0600.

use super::ClientError;
use crate::secret::Token;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where and how to sign in: what `login` was given, remembered for the next time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Profile {
    /// The issuer URL (Auth0: `https://TENANT.auth0.com/`).
    pub issuer: String,
    /// The OAuth client (a native application in Auth0).
    pub client_id: String,
    /// The API identifier asked for (Auth0's `audience`), the one sts-bridge accepts.
    pub audience: Option<String>,
}

/// A stored sign-in: the profile, the refresh token and the last access token.
#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    /// How it was obtained.
    pub profile: Profile,
    /// The access token (a JWT for `audience`).
    #[serde(with = "token_text")]
    pub access_token: Token,
    /// When `access_token` expires, in seconds since the epoch.
    pub expires_at: i64,
    /// Renews the access token; rotated at each use when the issuer rotates.
    #[serde(with = "optional_token_text", default)]
    pub refresh_token: Option<Token>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("profile", &self.profile)
            .field("access_token", &self.access_token)
            .field("expires_at", &self.expires_at)
            .field("refresh_token", &self.refresh_token)
            .finish()
    }
}

mod token_text {
    use crate::secret::Token;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(t: &Token, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(t.expose())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Token, D::Error> {
        String::deserialize(d).map(Token::new)
    }
}

mod optional_token_text {
    use crate::secret::Token;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(t: &Option<Token>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(t.expose()),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Token>, D::Error> {
        Option::<String>::deserialize(d).map(|t| t.map(Token::new))
    }
}

/// The folder of stored sign-ins.
pub fn config_dir() -> Result<PathBuf, ClientError> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })
        .ok_or_else(|| {
            ClientError::Usage("neither XDG_CONFIG_HOME nor HOME is set: no config folder".into())
        })?;
    Ok(base.join("sts-bridge"))
}

/// Checks a profile name: it becomes a file name.
pub fn check_profile_name(name: &str) -> Result<(), ClientError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ClientError::Usage(format!(
            "profile name `{name}`: use 1 to 64 letters, digits, `-` or `_`"
        )))
    }
}

/// The file of profile `name`.
pub fn session_path(name: &str) -> Result<PathBuf, ClientError> {
    check_profile_name(name)?;
    Ok(config_dir()?.join(format!("{name}.json")))
}

fn store_error(path: &Path, e: impl std::fmt::Display) -> ClientError {
    ClientError::Store {
        path: path.to_owned(),
        cause: e.to_string(),
    }
}

/// The stored sign-in of profile `name`, if any.
pub fn load(name: &str) -> Result<Option<Session>, ClientError> {
    let path = session_path(name)?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(store_error(&path, e)),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        store_error(
            &path,
            format!("not a stored sign-in ({e}); run `sts-bridge logout` and log in again"),
        )
    })
}

/// Stores `session` as profile `name`: written to a private temporary file, then renamed
/// over the old one, so a reader never sees half a file.
pub fn save(name: &str, session: &Session) -> Result<PathBuf, ClientError> {
    let path = session_path(name)?;
    let dir = path.parent().expect("a profile file has a folder");
    create_private_dir(dir)?;
    let text = serde_json::to_string_pretty(session).map_err(|e| store_error(&path, e))?;
    let tmp = dir.join(format!(".{name}.json.{}", std::process::id()));
    write_private(&tmp, text.as_bytes()).map_err(|e| store_error(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        store_error(&path, e)
    })?;
    Ok(path)
}

/// Removes the stored sign-in of profile `name`; returns it, if there was one.
pub fn remove(name: &str) -> Result<Option<Session>, ClientError> {
    let session = load(name).unwrap_or(None);
    let path = session_path(name)?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(session),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(store_error(&path, e)),
    }
}

/// Held while one process renews a sign-in: with rotating refresh tokens, two renewals at
/// once would leave one of them holding a refresh token the issuer has already retired.
pub struct RenewalLock(PathBuf);

impl Drop for RenewalLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A lock older than this was left by a process that died while renewing.
const STALE_LOCK: std::time::Duration = std::time::Duration::from_secs(60);
/// How long to wait for another process's renewal.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Waits until no other process is renewing profile `name`, then holds its renewal lock.
pub async fn lock_renewal(name: &str) -> Result<RenewalLock, ClientError> {
    let path = session_path(name)?.with_extension("lock");
    let started = std::time::Instant::now();
    loop {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&path) {
            Ok(_) => return Ok(RenewalLock(path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let age = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok());
                if age.is_some_and(|a| a > STALE_LOCK) {
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                if started.elapsed() > LOCK_WAIT {
                    return Err(store_error(
                        &path,
                        "another sts-bridge process has been renewing this sign-in for too \
                         long; remove this file if no such process is running",
                    ));
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => return Err(store_error(&path, e)),
        }
    }
}

/// Creates `dir` (and its parents) and makes it the owner's alone.
pub fn create_private_dir(dir: &Path) -> Result<(), ClientError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| store_error(dir, e))?;
    // A folder made earlier, by hand or by an older version, is tightened too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| store_error(dir, e))?;
    }
    Ok(())
}

/// Writes `bytes` to a new or truncated file readable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)?;
    file.sync_all()
}
