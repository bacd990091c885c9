//! The local certificate authority: created once under the data dir, reused
//! by every later run. Its files live beside the store, never in it, so
//! `cacheow ca` works while a `cacheow serve` holds the data dir.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use time::{Duration, OffsetDateTime};

use super::provider;

const DIR: &str = "ca";
const CERT_FILE: &str = "cacheow-ca.pem";
const KEY_FILE: &str = "cacheow-ca-key.pem";
/// A development lifetime: long enough that nobody re-trusts it by hand.
const CA_VALIDITY: Duration = Duration::days(10 * 365);
/// Under the 398 days clients such as Apple's accept for server certificates.
const LEAF_VALIDITY: Duration = Duration::days(365);
/// Clocks that run a little behind still accept a fresh certificate.
const BACKDATE: Duration = Duration::days(1);

/// Where a data dir keeps its CA.
#[derive(Debug, Clone)]
pub struct CaPaths {
    /// The directory holding both files.
    pub dir: PathBuf,
    /// The certificate (PEM): the file clients trust.
    pub cert: PathBuf,
    /// The private key (PEM, mode 0600).
    pub key: PathBuf,
}

impl CaPaths {
    /// The CA files of `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        let dir = data_dir.join(DIR);
        Self {
            cert: dir.join(CERT_FILE),
            key: dir.join(KEY_FILE),
            dir,
        }
    }
}

/// Why the CA could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// A file or directory could not be read or written.
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A CA file exists but cannot be used.
    #[error(
        "`{}` is not a usable CA {what}: {reason}; move `{}` aside to create a new CA (clients must then trust the new one)",
        path.display(), dir.display()
    )]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The CA directory, to move aside.
        dir: PathBuf,
        /// "certificate" or "key".
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// Generating a certificate failed (not expected with valid input).
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CaError {
    let path = path.to_owned();
    move |source| CaError::Io {
        action,
        path,
        source,
    }
}

/// The loaded CA: signs leaf certificates for intercepted hosts.
pub struct Ca {
    paths: CaPaths,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    created: bool,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Internal: never print the issuer, it holds the private key.
        f.debug_struct("Ca")
            .field("cert", &self.paths.cert)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads the CA of `data_dir`, creating it (and the data dir) if absent.
    pub fn load_or_create(data_dir: &Path) -> Result<Ca, CaError> {
        let paths = CaPaths::new(data_dir);
        if !paths.cert.exists() && !paths.key.exists() {
            match create(&paths) {
                Ok(()) => return load(paths, true),
                // Another cacheow created it at the same moment: use theirs.
                Err(CaError::Io { source, .. }) if is_already_there(&source) => {}
                Err(e) => return Err(e),
            }
        }
        load(paths, false)
    }

    /// Where the files are.
    pub fn paths(&self) -> &CaPaths {
        &self.paths
    }

    /// True if this call created the CA.
    pub fn created(&self) -> bool {
        self.created
    }

    /// The certificate as PEM, what clients trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A leaf for `host` (a DNS name or an IP address), signed by this CA,
    /// with the chain a TLS server sends: leaf first, then the CA.
    pub(crate) fn mint_leaf(&self, host: &str) -> Result<CertifiedKey, LeafError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![host.to_owned()])?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, host);
        params.distinguished_name = name;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + LEAF_VALIDITY;
        let leaf = params.signed_by(&key, &self.issuer)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok(CertifiedKey::from_der(
            vec![leaf.der().clone(), self.cert_der.clone()],
            key_der,
            &provider(),
        )?)
    }

    /// How to trust the certificate, for people: the path and the commands
    /// for the usual clients.
    pub fn how_to_trust(&self) -> String {
        let cert =
            std::path::absolute(&self.paths.cert).unwrap_or_else(|_| self.paths.cert.clone());
        let cert = cert.display();
        format!(
            "cacheow CA certificate: {cert}
Clients that go through cacheow (HTTPS_PROXY) must trust it:

  curl                   curl --cacert {cert} ...
                         or: export CURL_CA_BUNDLE={cert}
  Python requests        export REQUESTS_CA_BUNDLE={cert}
  Python httpx           export SSL_CERT_FILE={cert}
  Node.js                export NODE_EXTRA_CA_CERTS={cert}
  Rust reqwest           Client::builder().add_root_certificate(
                             reqwest::Certificate::from_pem(&std::fs::read(\"{cert}\")?)?)
  Rust rustls            RootCertStore::add(CertificateDer::from_pem_file(\"{cert}\")?)
  Debian system store    sudo cp {cert} /usr/local/share/ca-certificates/cacheow.crt
                         sudo update-ca-certificates

REQUESTS_CA_BUNDLE and SSL_CERT_FILE replace the default roots; hosts reached
without cacheow then fail to verify unless the bundle also holds them.
`cacheow ca --pem` prints the certificate itself.
"
        )
    }
}

/// Why a leaf certificate could not be minted (an unusual host name).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum LeafError {
    /// rcgen refused the name or failed to sign.
    #[error("cannot mint a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the result.
    #[error("cannot use the minted certificate: {0}")]
    Rustls(#[from] rustls::Error),
}

fn is_already_there(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::AlreadyExists | io::ErrorKind::DirectoryNotEmpty
    )
}

/// Writes a new CA into a private temporary directory, then renames that
/// directory into place, so a concurrent reader sees both files or none.
fn create(paths: &CaPaths) -> Result<(), CaError> {
    let parent = paths.dir.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_error("create the data dir", parent))?;
    if paths.dir.exists() {
        // Internal: an empty leftover `ca/` would be replaced by the rename
        // below; one with files is reported by `load`.
        fs::remove_dir(&paths.dir).map_err(io_error("replace", &paths.dir))?;
    }
    let temp = parent.join(format!(".{DIR}.{}.tmp", std::process::id()));
    let _ = fs::remove_dir_all(&temp);
    let result = write_new_ca(&temp);
    let result = result.and_then(|()| {
        fs::rename(&temp, &paths.dir).map_err(io_error("move into place", &paths.dir))
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&temp);
    }
    result
}

fn write_new_ca(dir: &Path) -> Result<(), CaError> {
    create_private_dir(dir)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "cacheow");
    name.push(
        DnType::CommonName,
        format!(
            "cacheow local CA {}",
            OffsetDateTime::now_utc().unix_timestamp()
        ),
    );
    params.distinguished_name = name;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_VALIDITY;
    let cert = params.self_signed(&key)?;
    write_file(&dir.join(KEY_FILE), key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&dir.join(CERT_FILE), cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

fn load(paths: CaPaths, created: bool) -> Result<Ca, CaError> {
    let invalid = |path: &Path, what, reason: String| CaError::Invalid {
        path: path.to_owned(),
        dir: paths.dir.clone(),
        what,
        reason,
    };
    let cert_pem = fs::read_to_string(&paths.cert)
        .map_err(io_error("read the CA certificate", &paths.cert))?;
    let key_pem =
        fs::read_to_string(&paths.key).map_err(io_error("read the CA key", &paths.key))?;
    let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| invalid(&paths.cert, "certificate", e.to_string()))?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| invalid(&paths.key, "key", e.to_string()))?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    CertifiedKey::from_der(vec![cert_der.clone()], key_der, &provider()).map_err(|e| {
        invalid(
            &paths.key,
            "key",
            format!("it does not belong to the certificate ({e})"),
        )
    })?;
    let issuer = Issuer::from_ca_cert_der(&cert_der, key)
        .map_err(|e| invalid(&paths.cert, "certificate", e.to_string()))?;
    Ok(Ca {
        paths,
        cert_pem,
        cert_der,
        issuer,
        created,
    })
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<(), CaError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(io_error("create", dir))
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<(), CaError> {
    fs::create_dir(dir).map_err(io_error("create", dir))
}

/// Writes `bytes` to a new file created with `mode` (never wider, whatever
/// the umask), and syncs it.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(io_error("create", path))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_error("write", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let first = Ca::load_or_create(&data_dir).unwrap();
        assert!(first.created());
        let second = Ca::load_or_create(&data_dir).unwrap();
        assert!(!second.created());
        assert_eq!(first.cert_pem(), second.cert_pem());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&second.paths().key)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_missing_key_is_reported_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        fs::remove_file(&ca.paths().key).unwrap();
        let err = Ca::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(KEY_FILE) && err.contains("cannot read"),
            "{err}"
        );
        assert_eq!(
            fs::read_to_string(&ca.paths().cert).unwrap(),
            ca.cert_pem(),
            "the certificate clients trust must survive"
        );
    }

    #[test]
    fn leaves_name_their_host_as_dns_or_ip() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        for host in ["api.example.com", "127.0.0.1", "::1"] {
            let leaf = ca.mint_leaf(host).unwrap();
            assert_eq!(leaf.cert.len(), 2, "{host}: leaf then CA");
            assert_eq!(leaf.cert[1], ca.cert_der);
        }
    }
}
