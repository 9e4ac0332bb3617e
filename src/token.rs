//! Bearer tokens and webhook secrets: drawn from the operating system's random source, stored
//! only as hashes (tokens) or inside the journal (webhook secrets, which a restart needs).

use std::io::Write;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use flotilla_actors::domain::webhook::Secret;
use sha2::{Digest, Sha256};

/// 32 random bytes.
pub fn random_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    // The OS random source failing is not something to serve through.
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    bytes
}

/// A new bearer token: `prefix` + 32 random bytes, base64url.
pub fn generate(prefix: &str) -> String {
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(random_bytes()))
}

/// A new webhook secret.
pub fn generate_secret() -> Secret {
    Secret::from_bytes(random_bytes())
}

/// sha256 of a token, lowercase hex: what is stored and compared.
pub fn hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().fold(String::with_capacity(64), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The operator token of `data_dir`: read from `operator.token`, or created there (mode 0600) on
/// first start. Returns the token and whether it was created now.
pub fn operator_token(data_dir: &Path) -> std::io::Result<(String, bool)> {
    let path = data_dir.join("operator.token");
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok((text.trim().to_owned(), false)),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let token = generate("flo_op_");
    write_operator_token(data_dir, &token)?;
    Ok((token, true))
}

/// Writes `token` to `data_dir`'s `operator.token` (mode 0600), replacing what was there: on a
/// shared database every node writes the cluster's token (SPEC 9).
pub fn write_operator_token(data_dir: &Path, token: &str) -> std::io::Result<()> {
    let path = data_dir.join("operator.token");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path)?;
    file.write_all(token.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_hash_to_64_hex_characters() {
        let (a, b) = (generate("t_"), generate("t_"));
        assert_ne!(a, b);
        assert!(a.starts_with("t_") && a.len() > 40);
        assert_eq!(hash(&a).len(), 64);
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
    }

    #[test]
    fn the_operator_token_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let (token, created) = operator_token(dir.path()).unwrap();
        assert!(created);
        let (again, created) = operator_token(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(token, again);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("operator.token"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
