//! Certificates for tests and development: a CA, and leaf certificates it
//! signs for the coordinator, the agents and clients, each naming its
//! identities as DNS subject alternative names (what both daemons
//! authorize by). `cargo xtask certs` writes the same set for a
//! development setup.

use std::{
    fs,
    path::{Path, PathBuf},
};

use faultd_proto::tls::TlsFiles;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// A CA that signs leaf certificates into a directory.
pub struct DevCa {
    dir: PathBuf,
    name: String,
    issuer: Issuer<'static, KeyPair>,
    ca_pem: PathBuf,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa")
            .field("dir", &self.dir)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl DevCa {
    /// A new CA named `name`, its certificate written to
    /// `<dir>/<name>-ca.pem` (and its key to `<name>-ca.key`).
    ///
    /// # Panics
    /// If the directory cannot be written or rcgen fails.
    pub fn new(dir: &Path, name: &str) -> Self {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{name} CA"));
        params.distinguished_name = dn;
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-signing the CA");
        let ca_pem = dir.join(format!("{name}-ca.pem"));
        write(&ca_pem, &cert.pem());
        write(&dir.join(format!("{name}-ca.key")), &key.serialize_pem());
        Self {
            dir: dir.to_owned(),
            name: name.to_owned(),
            issuer: Issuer::new(params, key),
            ca_pem,
        }
    }

    pub fn ca_pem(&self) -> &Path {
        &self.ca_pem
    }

    /// A leaf certificate for `file_stem` naming `identities` (DNS SANs; the
    /// first is also the common name), usable as server and as client;
    /// returns its files with this CA as the peers' CA.
    ///
    /// # Panics
    /// If rcgen fails or the files cannot be written.
    pub fn issue(&self, file_stem: &str, identities: &[&str]) -> TlsFiles {
        let mut params = CertificateParams::new(
            identities
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<Vec<_>>(),
        )
        .expect("leaf params");
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            identities.first().copied().unwrap_or(file_stem),
        );
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("signing a leaf certificate");
        let files = TlsFiles {
            ca: self.ca_pem.clone(),
            cert: self.dir.join(format!("{file_stem}.pem")),
            key: self.dir.join(format!("{file_stem}.key")),
        };
        write(&files.cert, &cert.pem());
        write(&files.key, &key.serialize_pem());
        files
    }
}

fn write(path: &Path, text: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_load_as_server_and_client() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = DevCa::new(dir.path(), "test");
        let agent = ca.issue("agent-1", &["agent-1"]);
        let client = ca.issue("coordinator", &["coordinator.faultd"]);
        faultd_proto::tls::server_config(&agent).expect("server config");
        faultd_proto::tls::client_config(&client).expect("client config");
        let chain = faultd_proto::tls::read_certs(&client.cert).expect("pem");
        assert_eq!(
            faultd_proto::tls::identities(&chain[0]),
            vec!["coordinator.faultd".to_owned()]
        );
    }
}
