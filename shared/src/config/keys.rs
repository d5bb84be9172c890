//! The keys that seal tokens and sign cookies, and the key file `avatar-local` generates
//! beside the database when none are configured.
//!
//! Parsing only decides where the keys come from ([`KeySource`]); reading or creating the
//! local key file is a separate step ([`KeySource::load`]) taken when the app is built.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::{ConfigError, ConfigErrors, Deployment, Reader};
use crate::secret::{Secret, random_bytes};
use crate::secrets::SecretPurpose;

/// An AES-256 key.
pub type Key32 = Secret<[u8; 32]>;

#[derive(Debug, Clone)]
pub struct KeyConfig {
    /// `None` only in a function not given it (see [`crate::secrets::needed_by`]).
    pub token_encryption_key: Option<Key32>,
    pub token_encryption_old_keys: Vec<Key32>,
    /// `None` only in a function not given it.
    pub session_secret: Option<Key32>,
    /// Set when the keys came from the generated local key file.
    pub generated_key_file: Option<PathBuf>,
}

/// Where the keys come from, as parsing decides it without touching any file.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// Both keys are set (in the environment or the `SECRETS_ARN` secrets), or, in AWS, the
    /// ones the function is given.
    Configured(KeyConfig),
    /// A local run with a key unset: the unset keys come from the key file beside the
    /// database, generated the first time [`KeySource::load`] runs.
    LocalFile {
        path: PathBuf,
        token_encryption_key: Option<Key32>,
        token_encryption_old_keys: Vec<Key32>,
        session_secret: Option<Key32>,
    },
}

impl KeySource {
    /// The keys. For [`KeySource::LocalFile`] this reads the key file, creating it (mode
    /// 0600) when it does not exist yet: the one configuration step that writes a file.
    pub fn load(&self) -> Result<KeyConfig, ConfigErrors> {
        match self {
            Self::Configured(keys) => Ok(keys.clone()),
            Self::LocalFile {
                path,
                token_encryption_key,
                token_encryption_old_keys,
                session_secret,
            } => match LocalKeyFile::load_or_create(path) {
                Ok(generated) => Ok(KeyConfig {
                    token_encryption_key: Some(
                        token_encryption_key
                            .clone()
                            .unwrap_or(generated.token_encryption_key),
                    ),
                    token_encryption_old_keys: token_encryption_old_keys.clone(),
                    session_secret: Some(
                        session_secret.clone().unwrap_or(generated.session_secret),
                    ),
                    generated_key_file: Some(path.clone()),
                }),
                Err(problem) => Err(ConfigErrors(vec![ConfigError {
                    variable: "TOKEN_ENCRYPTION_KEY",
                    problem: format!("unset, and {problem}"),
                }])),
            },
        }
    }
}

/// Name of the key file generated beside the database when no keys are configured locally.
pub fn local_key_file_for(sqlite_path: &Path) -> PathBuf {
    let mut name = sqlite_path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "data.sqlite".into());
    name.push(".keys");
    sqlite_path.with_file_name(name)
}

impl Reader<'_> {
    fn key(&mut self, name: &'static str, raw: &str) -> Option<Key32> {
        match decode_key(raw) {
            Ok(key) => Some(key),
            Err(problem) => {
                self.fail(name, problem);
                None
            }
        }
    }

    pub(super) fn keys(&mut self, deployment: Deployment, sqlite_path: &Path) -> Option<KeySource> {
        let token_raw = self.string("TOKEN_ENCRYPTION_KEY");
        let session_raw = self.string("SESSION_SECRET");
        let mut old = Vec::new();
        if let Some(raw) = self.string("TOKEN_ENCRYPTION_OLD_KEYS") {
            for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                if let Some(key) = self.key("TOKEN_ENCRYPTION_OLD_KEYS", part) {
                    old.push(key);
                }
            }
        }
        let token = token_raw
            .as_deref()
            .map(|raw| self.key("TOKEN_ENCRYPTION_KEY", raw));
        let session = session_raw
            .as_deref()
            .map(|raw| self.key("SESSION_SECRET", raw));
        if let (Some(token), Some(session)) = (&token, &session) {
            return Some(KeySource::Configured(KeyConfig {
                token_encryption_key: Some(token.clone()?),
                token_encryption_old_keys: old,
                session_secret: Some(session.clone()?),
                generated_key_file: None,
            }));
        }
        if deployment == Deployment::Aws {
            // A function requires the keys it is given, and goes without the others.
            let mut missing = false;
            for (name, value, purpose) in [
                ("TOKEN_ENCRYPTION_KEY", &token, SecretPurpose::TokenKeys),
                ("SESSION_SECRET", &session, SecretPurpose::SessionKey),
            ] {
                if value.is_none() && self.is_given(purpose) {
                    self.fail(name, "is required in AWS (a base64-encoded 32-byte key)");
                    missing = true;
                }
            }
            if missing {
                return None;
            }
            return Some(KeySource::Configured(KeyConfig {
                token_encryption_key: token.flatten(),
                token_encryption_old_keys: old,
                session_secret: session.flatten(),
                generated_key_file: None,
            }));
        }
        Some(KeySource::LocalFile {
            path: local_key_file_for(sqlite_path),
            token_encryption_key: token.flatten(),
            token_encryption_old_keys: old,
            session_secret: session.flatten(),
        })
    }
}

/// Decodes a base64 (standard or URL-safe, padded or not) 32-byte key.
pub fn decode_key(raw: &str) -> Result<Key32, String> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let raw = raw.trim();
    let bytes = [BASE64, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(raw).ok())
        .ok_or_else(|| "is not valid base64".to_string())?;
    let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        format!(
            "must decode to exactly 32 bytes (got {}); generate one with: openssl rand -base64 32",
            bytes.len()
        )
    })?;
    Ok(Secret::new(key))
}
/// The key file `avatar-local` writes beside the database the first time it runs without keys,
/// so encrypted tokens and sessions survive restarts. Mode 0600.
struct LocalKeyFile {
    token_encryption_key: Key32,
    session_secret: Key32,
}

impl LocalKeyFile {
    fn load_or_create(path: &Path) -> Result<Self, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map_err(|problem| {
                format!("the key file {} is damaged: {problem}", path.display())
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(path),
            Err(e) => Err(format!(
                "the key file {} cannot be read: {e}",
                path.display()
            )),
        }
    }

    fn parse(text: &str) -> Result<Self, String> {
        let mut token = None;
        let mut session = None;
        for line in text.lines() {
            match line.split_once('=') {
                Some(("TOKEN_ENCRYPTION_KEY", v)) => token = Some(decode_key(v)?),
                Some(("SESSION_SECRET", v)) => session = Some(decode_key(v)?),
                _ => {}
            }
        }
        Ok(Self {
            token_encryption_key: token.ok_or("TOKEN_ENCRYPTION_KEY is missing")?,
            session_secret: session.ok_or("SESSION_SECRET is missing")?,
        })
    }

    fn create(path: &Path) -> Result<Self, String> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let token = random_bytes(32);
        let session = random_bytes(32);
        let text = format!(
            "# Generated by avatar-local: keep it private and keep it with the database.\n\
             TOKEN_ENCRYPTION_KEY={}\nSESSION_SECRET={}\n",
            BASE64.encode(&token),
            BASE64.encode(&session)
        );
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("the directory {} cannot be created: {e}", dir.display()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("the key file {} cannot be created: {e}", path.display()))?;
        file.write_all(text.as_bytes())
            .and_then(|_| file.sync_all())
            .map_err(|e| format!("the key file {} cannot be written: {e}", path.display()))?;
        Self::parse(&text)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::Config;
    use super::super::tests::{vars, with_keys};
    use super::{KeySource, local_key_file_for};

    #[test]
    fn lambda_requires_keys_and_defaults_to_the_efs_path() {
        let errors =
            Config::from_vars(&vars(&[("AWS_LAMBDA_FUNCTION_NAME", "health")])).unwrap_err();
        assert!(errors.names("TOKEN_ENCRYPTION_KEY"));
        assert!(errors.names("SESSION_SECRET"));
        let config =
            Config::from_vars(&with_keys(&[("AWS_LAMBDA_FUNCTION_NAME", "health")])).unwrap();
        assert_eq!(config.sqlite.path, PathBuf::from("/mnt/data/data.sqlite"));
    }

    #[test]
    fn a_function_requires_only_the_keys_it_is_given() {
        use crate::bundle::Function;
        use crate::secrets::needed_by;
        let lambda = |name: &str| vars(&[("AWS_LAMBDA_FUNCTION_NAME", name)]);

        // health is given neither key, auth-start only the session key...
        let health = Config::from_vars_given(&lambda("health"), needed_by(Function::Health))
            .expect("health starts without keys");
        assert!(
            matches!(health.keys, KeySource::Configured(_)),
            "no key file in AWS"
        );
        let keys = health.keys.load().unwrap();
        assert!(keys.token_encryption_key.is_none() && keys.session_secret.is_none());
        let errors = Config::from_vars_given(&lambda("auth-start"), needed_by(Function::AuthStart))
            .unwrap_err();
        assert!(errors.names("SESSION_SECRET"), "{errors}");
        assert!(!errors.names("TOKEN_ENCRYPTION_KEY"), "{errors}");

        // ...and chat-token the token keys only.
        let errors = Config::from_vars_given(&lambda("chat-token"), needed_by(Function::ChatToken))
            .unwrap_err();
        assert!(errors.names("TOKEN_ENCRYPTION_KEY"), "{errors}");
        assert!(!errors.names("SESSION_SECRET"), "{errors}");
    }

    #[test]
    fn parsing_a_local_configuration_without_keys_names_the_key_file_but_writes_nothing() {
        // Arrange
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("data.sqlite");
        let map = vars(&[("SQLITE_PATH", db.to_str().unwrap())]);

        // Act
        let config = Config::from_vars(&map).unwrap();

        // Assert
        let KeySource::LocalFile { path, .. } = &config.keys else {
            panic!("expected the local key file, got {:?}", config.keys);
        };
        assert_eq!(path, &dir.path().join("data.sqlite.keys"));
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn local_keys_are_generated_once_with_mode_0600_and_reused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("data.sqlite");
        let map = vars(&[("SQLITE_PATH", db.to_str().unwrap())]);
        let first = Config::from_vars(&map).unwrap().keys.load().unwrap();
        let file = first.generated_key_file.clone().unwrap();
        assert_eq!(file, dir.path().join("data.sqlite.keys"));
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = Config::from_vars(&map).unwrap().keys.load().unwrap();
        let key = |key: &Option<super::Key32>| *key.as_ref().expect("a key").expose();
        assert_eq!(
            key(&first.token_encryption_key),
            key(&second.token_encryption_key)
        );
        assert_ne!(key(&first.token_encryption_key), key(&first.session_secret));
    }

    #[test]
    fn a_damaged_key_file_is_refused_naming_token_encryption_key() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("data.sqlite");
        std::fs::write(local_key_file_for(&db), "TOKEN_ENCRYPTION_KEY=c2hvcnQ=\n").unwrap();
        let config = Config::from_vars(&vars(&[("SQLITE_PATH", db.to_str().unwrap())])).unwrap();

        let errors = config.keys.load().unwrap_err();

        assert!(errors.names("TOKEN_ENCRYPTION_KEY"), "{errors}");
        assert!(errors.to_string().contains("damaged"), "{errors}");
        assert!(
            !errors.to_string().contains("c2hvcnQ"),
            "the value leaked: {errors}"
        );
    }

    #[test]
    fn an_invalid_configuration_creates_no_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("data.sqlite");
        let map = vars(&[("SQLITE_PATH", db.to_str().unwrap()), ("PORT", "x")]);
        assert!(Config::from_vars(&map).is_err());
        assert!(!local_key_file_for(&db).exists());
    }
}
