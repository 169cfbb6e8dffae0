//! Request signing and the credentials it needs.
//!
//! The vendor authenticates every call with `sign = sha256(appId + appSecret + timestamp)` in
//! lowercase hex. The secret lives in [`Secret`], whose `Debug` and `Display` print `***`, so it
//! cannot leak through a log line or an error message by accident.

use sha2::{Digest, Sha256};
use std::fmt;

/// The app secret. Printing it in any form shows `***`; only [`Secret::expose`] reveals it, and
/// only the signer calls that.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub(crate) fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself, for signing. Never log what this returns.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// An account: the public app id and its secret.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The account's app id, sent with every call.
    pub app_id: String,
    /// The account's secret, which signs every call and is never sent.
    pub app_secret: Secret,
}

impl Credentials {
    pub(crate) fn new(app_id: impl Into<String>, app_secret: Secret) -> Self {
        Credentials {
            app_id: app_id.into(),
            app_secret,
        }
    }

    /// The sign for a call made at `timestamp_ms`.
    pub fn sign(&self, timestamp_ms: i64) -> String {
        sign(&self.app_id, self.app_secret.expose(), timestamp_ms)
    }
}

/// `sha256(app_id + app_secret + timestamp_ms)` as lowercase hex, as the vendor page defines it.
pub fn sign(app_id: &str, app_secret: &str, timestamp_ms: i64) -> String {
    let mut h = Sha256::new();
    h.update(app_id.as_bytes());
    h.update(app_secret.as_bytes());
    h.update(timestamp_ms.to_string().as_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_test_vector() {
        assert_eq!(
            sign("xyzxy2121zxyz", "efcefcef1121cefcefc1212121", 1555378976238),
            "6ddcdc405743c576cb6d34b17b47ed56e2b9b6670fae1fe85ed01244fd31558b"
        );
    }

    #[test]
    fn secret_never_prints() {
        let c = Credentials::new("id", Secret::new("topsecret"));
        assert!(!format!("{c:?}").contains("topsecret"));
        assert_eq!(format!("{}", c.app_secret), "***");
    }
}
