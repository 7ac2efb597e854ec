//! The certificate files in the shared emptyDir, written atomically.
//!
//! - `site.crt`: the leaf followed by its intermediates (PEM), mode 0644;
//! - `site.key`: the PKCS#8 private key (PEM), mode `AUTOCERT_MODE` (default 0600);
//! - `root.crt`: the step-ca root(s) (PEM), mode 0644;
//!
//! all owned by `AUTOCERT_OWNER` when set. Each file is replaced by `rename(2)`, so a reader sees
//! either the old or the new content of a file, never a partial one.
//!
//! Ordering: [`write_all`] writes `site.key`, then `root.crt`, then `site.crt`. Applications
//! reload when `site.crt` changes, so whoever sees a new `site.crt` also finds its key and root.
//! Between the first and the last rename a reader may see the new key with the old certificate;
//! [`read_current`] treats such a pair as invalid, and applications should read both after
//! `site.crt` changes. A renewal keeps the key and replaces only `site.crt`.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use chrono::{DateTime, Utc};
use zeroize::Zeroizing;

use crate::pki::chain::parse_pem_chain;
use crate::pki::keys::GeneratedKey;

/// Leaf and intermediates.
pub const SITE_CRT: &str = "site.crt";
/// Private key.
pub const SITE_KEY: &str = "site.key";
/// Root certificate(s).
pub const ROOT_CRT: &str = "root.crt";
/// Mode of the certificate files.
pub const CERT_MODE: u32 = 0o644;

/// Numeric owner of the files.
pub use crate::pod_protocol::Owner;

/// Writes `bytes` to `dir/name` atomically: a temporary file in `dir` is written, fsynced,
/// given `mode` (exactly, regardless of the umask) and `owner`, then renamed over the target,
/// and the directory is fsynced. The temporary file is removed on failure.
///
/// `chown` is skipped when the file already has the wanted owner (the injected containers run
/// as that user), so no capability is needed in the normal case.
pub fn write_atomic(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    mode: u32,
    owner: Option<Owner>,
) -> io::Result<()> {
    let tmp = dir.join(format!(
        ".{name}.tmp-{}",
        hex::encode(rand::random::<[u8; 6]>())
    ));
    let result = write_tmp(&tmp, bytes, mode, owner).and_then(|()| {
        fs::rename(&tmp, dir.join(name))?;
        // Persist the rename; failure to sync a directory is not worth failing the write for.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("writing {}: {e}", dir.join(name).display()),
        )
    })
}

fn write_tmp(tmp: &Path, bytes: &[u8], mode: u32, owner: Option<Owner>) -> io::Result<()> {
    // Created 0600 so that a key is never readable by others, even for an instant.
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)?;
    f.write_all(bytes)?;
    if let Some(o) = owner {
        let meta = f.metadata()?;
        if meta.uid() != o.uid || meta.gid() != o.gid {
            std::os::unix::fs::fchown(&f, Some(o.uid), Some(o.gid)).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot chown to {}:{} ({e}); run the agent as that user or grant CAP_CHOWN",
                        o.uid, o.gid
                    ),
                )
            })?;
        }
    }
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.sync_all()
}

/// The contents of the three files.
pub struct CertFiles {
    /// `site.crt`: leaf then intermediates.
    pub site_crt: String,
    /// `site.key`: PKCS#8 PEM. Secret.
    pub site_key: Zeroizing<String>,
    /// `root.crt`.
    pub root_crt: String,
}

impl fmt::Debug for CertFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertFiles")
            .field("site_crt", &format_args!("<{} bytes>", self.site_crt.len()))
            .field("site_key", &"<redacted>")
            .field("root_crt", &format_args!("<{} bytes>", self.root_crt.len()))
            .finish()
    }
}

/// Writes the three files, key first, then root, then certificate (see the module docs).
pub fn write_all(
    dir: &Path,
    files: &CertFiles,
    key_mode: u32,
    owner: Option<Owner>,
) -> io::Result<()> {
    write_atomic(dir, SITE_KEY, files.site_key.as_bytes(), key_mode, owner)?;
    write_atomic(dir, ROOT_CRT, files.root_crt.as_bytes(), CERT_MODE, owner)?;
    write_atomic(dir, SITE_CRT, files.site_crt.as_bytes(), CERT_MODE, owner)
}

/// The files found on disk, checked.
#[derive(Clone)]
pub struct Current {
    /// `site.crt` as read.
    pub chain_pem: String,
    /// `site.key` as read. Secret.
    pub key_pem: Zeroizing<String>,
    /// `root.crt` as read.
    pub root_pem: String,
    /// The leaf's subject.
    pub subject: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    /// The leaf's SubjectPublicKeyInfo DER.
    pub public_key_der: Vec<u8>,
}

impl fmt::Debug for Current {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Current")
            .field("subject", &self.subject)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Why [`check_current`] rejected the files (for log lines; never contains key material).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("{0} is missing or unreadable")]
    Missing(&'static str),
    #[error("site.crt does not parse: {0}")]
    BadCertificate(String),
    #[error("root.crt does not parse: {0}")]
    BadRoot(String),
    #[error("site.key is not a usable PKCS#8 key")]
    BadKey,
    #[error("site.key does not match the certificate in site.crt")]
    KeyMismatch,
}

/// Reads and checks the files; `Err` says why they are unusable. Expiry is not checked here
/// (the callers decide what an old certificate means).
pub fn check_current(dir: &Path) -> Result<Current, Invalid> {
    let read =
        |name: &'static str| fs::read_to_string(dir.join(name)).map_err(|_| Invalid::Missing(name));
    let chain_pem = read(SITE_CRT)?;
    let key_pem = Zeroizing::new(read(SITE_KEY)?);
    let root_pem = read(ROOT_CRT)?;
    let chain = parse_pem_chain(chain_pem.as_bytes())
        .map_err(|e| Invalid::BadCertificate(e.to_string()))?;
    parse_pem_chain(root_pem.as_bytes()).map_err(|e| Invalid::BadRoot(e.to_string()))?;
    let leaf = chain
        .into_iter()
        .next()
        .ok_or_else(|| Invalid::BadCertificate("no certificate".into()))?;
    let key = GeneratedKey::from_pkcs8_pem(&key_pem).map_err(|_| Invalid::BadKey)?;
    if key.public_key_der() != leaf.public_key_der {
        return Err(Invalid::KeyMismatch);
    }
    Ok(Current {
        chain_pem,
        key_pem,
        root_pem,
        subject: leaf.subject,
        not_before: leaf.not_before,
        not_after: leaf.not_after,
        public_key_der: leaf.public_key_der,
    })
}

/// The current files, or `None` when any is missing, corrupt, or the key does not match the
/// certificate.
pub fn read_current(dir: &Path) -> Option<Current> {
    check_current(dir).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pki::keys::KeyAlgorithm;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use std::ops::{Add, Sub};
    use std::time::Duration;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn write_atomic_sets_mode_and_content_and_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "site.key", b"one", 0o600, None).unwrap();
        assert_eq!(fs::read(dir.path().join("site.key")).unwrap(), b"one");
        assert_eq!(mode(&dir.path().join("site.key")), 0o600);
        // Overwrite with another mode: the new mode wins regardless of the umask.
        write_atomic(dir.path(), "site.key", b"two", 0o640, None).unwrap();
        assert_eq!(fs::read(dir.path().join("site.key")).unwrap(), b"two");
        assert_eq!(mode(&dir.path().join("site.key")), 0o640);
        write_atomic(dir.path(), "site.crt", b"crt", 0o644, None).unwrap();
        assert_eq!(mode(&dir.path().join("site.crt")), 0o644);
        assert_eq!(names(dir.path()), ["site.crt", "site.key"]);
    }

    #[test]
    fn write_atomic_with_own_owner_needs_no_privilege() {
        let dir = tempfile::tempdir().unwrap();
        let meta = fs::metadata(dir.path()).unwrap();
        let me = Owner {
            uid: meta.uid(),
            gid: meta.gid(),
        };
        write_atomic(dir.path(), "f", b"x", 0o644, Some(me)).unwrap();
        let m = fs::metadata(dir.path().join("f")).unwrap();
        assert_eq!((m.uid(), m.gid()), (me.uid, me.gid));
    }

    #[test]
    fn write_atomic_failure_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a non-empty directory, so the rename fails.
        fs::create_dir(dir.path().join("site.crt")).unwrap();
        fs::write(dir.path().join("site.crt").join("x"), b"x").unwrap();
        let err = write_atomic(dir.path(), "site.crt", b"crt", 0o644, None).unwrap_err();
        assert!(err.to_string().contains("site.crt"), "{err}");
        assert_eq!(names(dir.path()), ["site.crt"]);
    }

    /// A self-signed CA and a leaf for `key`, valid for the given days around now.
    pub(crate) fn leaf_files(key: &GeneratedKey, from_days: i64, to_days: i64) -> CertFiles {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.distinguished_name
            .push(DnType::CommonName, "Agent Test Root");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let kp = KeyPair::from_pem(&key.private_key_pem()).unwrap();
        let mut p = CertificateParams::new(vec!["app.example".to_owned()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, "app.example");
        let today = {
            use chrono::Datelike as _;
            let now = Utc::now();
            rcgen::date_time_ymd(now.year(), now.month() as u8, now.day() as u8)
        };
        p.not_before = shift_days(today, from_days);
        p.not_after = shift_days(today, to_days);
        let leaf = p.signed_by(&kp, &issuer).unwrap();
        CertFiles {
            site_crt: leaf.pem(),
            site_key: Zeroizing::new(key.private_key_pem()),
            root_crt: root.pem(),
        }
    }

    pub(crate) fn shift_days<T>(t: T, days: i64) -> T
    where
        T: Add<Duration, Output = T> + Sub<Duration, Output = T>,
    {
        let d = Duration::from_secs(days.unsigned_abs() * 86_400);
        if days < 0 { t - d } else { t + d }
    }

    #[test]
    fn write_all_then_read_current() {
        let dir = tempfile::tempdir().unwrap();
        let key = GeneratedKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let files = leaf_files(&key, -1, 2);
        write_all(dir.path(), &files, 0o600, None).unwrap();
        assert_eq!(names(dir.path()), ["root.crt", "site.crt", "site.key"]);
        assert_eq!(mode(&dir.path().join(SITE_KEY)), 0o600);
        assert_eq!(mode(&dir.path().join(SITE_CRT)), 0o644);
        assert_eq!(mode(&dir.path().join(ROOT_CRT)), 0o644);
        let cur = read_current(dir.path()).unwrap();
        assert_eq!(cur.chain_pem, files.site_crt);
        assert_eq!(cur.public_key_der, key.public_key_der());
        assert!(cur.not_after > Utc::now());
        assert!(cur.subject.contains("app.example"));
        assert!(!format!("{cur:?} {files:?}").contains("PRIVATE"));
    }

    #[test]
    fn read_current_rejects_bad_files() {
        let key = GeneratedKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let other = GeneratedKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let good = leaf_files(&key, -1, 2);
        type Edit = fn(&Path, &GeneratedKey);
        let cases: &[(&str, Edit, Invalid)] = &[
            (
                "missing key",
                |d, _| fs::remove_file(d.join(SITE_KEY)).unwrap(),
                Invalid::Missing(SITE_KEY),
            ),
            (
                "missing root",
                |d, _| fs::remove_file(d.join(ROOT_CRT)).unwrap(),
                Invalid::Missing(ROOT_CRT),
            ),
            (
                "missing crt",
                |d, _| fs::remove_file(d.join(SITE_CRT)).unwrap(),
                Invalid::Missing(SITE_CRT),
            ),
            (
                "other key",
                |d, o| fs::write(d.join(SITE_KEY), o.private_key_pem()).unwrap(),
                Invalid::KeyMismatch,
            ),
            (
                "garbage key",
                |d, _| fs::write(d.join(SITE_KEY), "nope").unwrap(),
                Invalid::BadKey,
            ),
            (
                "garbage root",
                |d, _| fs::write(d.join(ROOT_CRT), "nope").unwrap(),
                Invalid::BadRoot(String::new()),
            ),
            (
                "truncated crt",
                |d, _| {
                    let s = fs::read_to_string(d.join(SITE_CRT)).unwrap();
                    fs::write(d.join(SITE_CRT), &s[..s.len() / 2]).unwrap()
                },
                Invalid::BadCertificate(String::new()),
            ),
        ];
        for (what, edit, want) in cases {
            let dir = tempfile::tempdir().unwrap();
            write_all(dir.path(), &good, 0o600, None).unwrap();
            assert!(read_current(dir.path()).is_some(), "{what}");
            edit(dir.path(), &other);
            let got = check_current(dir.path()).unwrap_err();
            assert_eq!(
                std::mem::discriminant(&got),
                std::mem::discriminant(want),
                "{what}: {got:?}"
            );
            assert!(read_current(dir.path()).is_none(), "{what}");
        }
    }
}
