//! Test certificates, made afresh by every test run with rcgen, so that no private key is ever
//! committed: a CA, a server certificate for `localhost` and `127.0.0.1` signed by it, and
//! client certificates, written as PEM files into a temporary directory.
//!
//! Shared by the server's and the client's tests (the client's include this file by path).
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};

use jsonkv_server::config::TlsFiles;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate authority and the files it has issued.
pub struct Pki {
    dir: tempfile::TempDir,
    ca: Certificate,
    ca_key: KeyPair,
}

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// A new CA named `name`; its certificate is at [`Pki::ca_path`].
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = params.self_signed(&ca_key).expect("self-signed CA");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write CA");
        Pki { dir, ca, ca_key }
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    pub fn server(&self) -> Issued {
        self.issue(
            "server",
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate, for mutual TLS.
    pub fn client(&self, name: &str) -> Issued {
        self.issue(name, vec![name.into()], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// The server's TLS settings: its certificate from this CA, and with `mutual`, client
    /// certificates from this CA required.
    pub fn server_tls(&self, mutual: bool) -> TlsFiles {
        let server = self.server();
        TlsFiles {
            cert: server.cert,
            key: server.key,
            client_ca: mutual.then(|| self.ca_path()),
        }
    }

    /// A server certificate for `names` only.
    pub fn server_named(&self, names: &[&str]) -> Issued {
        let names = names.iter().map(|n| n.to_string()).collect();
        self.issue("server-named", names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// The CA's own certificate and key as a server's: what `openssl req -x509` makes, a
    /// self-signed certificate that is a CA.
    pub fn ca_as_server(&self) -> TlsFiles {
        let key = self.dir.path().join("ca.key");
        std::fs::write(&key, self.ca_key.serialize_pem()).expect("write CA key");
        TlsFiles {
            cert: self.ca_path(),
            key,
            client_ca: None,
        }
    }

    fn issue(&self, name: &str, names: Vec<String>, usage: ExtendedKeyUsagePurpose) -> Issued {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("sign");
        let issued = Issued {
            cert: self.dir.path().join(format!("{name}.pem")),
            key: self.dir.path().join(format!("{name}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).expect("write cert");
        std::fs::write(&issued.key, key.serialize_pem()).expect("write key");
        issued
    }
}
