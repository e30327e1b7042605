//! The certificates of a TLS test cluster ([`crate::EtcdCluster::start_tls`]), made with rcgen
//! when it starts, so that no private key is ever committed: a CA, the members' certificate (for
//! `127.0.0.1` and `localhost`) and a client certificate the members accept.

use std::fs;
use std::path::{Path, PathBuf};

use etcd_client::{Certificate, Identity, TlsOptions};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// File names inside a member's TLS directory.
const CA: &str = "ca.pem";
const SERVER_CERT: &str = "server.pem";
const SERVER_KEY: &str = "server.key";
const CLIENT_CERT: &str = "client.pem";
const CLIENT_KEY: &str = "client.key";

/// The PEM files a client of a TLS cluster needs: what jsonkv-server's `--etcd-ca`,
/// `--etcd-cert` and `--etcd-key` take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTlsFiles {
    /// The CA that signed the members' certificates (and the client's).
    pub ca: PathBuf,
    /// A client certificate the members accept (they run with `--client-cert-auth`).
    pub client_cert: PathBuf,
    /// The private key of `client_cert`.
    pub client_key: PathBuf,
}

impl EtcdTlsFiles {
    /// The client files as [`Pki::write`] put them into `dir`.
    pub(crate) fn in_dir(dir: &Path) -> EtcdTlsFiles {
        EtcdTlsFiles {
            ca: dir.join(CA),
            client_cert: dir.join(CLIENT_CERT),
            client_key: dir.join(CLIENT_KEY),
        }
    }
}

/// A cluster's certificates and keys, as PEM text.
pub(crate) struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let ca_key = KeyPair::generate().expect("cannot generate a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "jsonkv-testkit etcd CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = params.self_signed(&ca_key).expect("cannot sign the CA");
        let issue = |name: &str, sans: &[&str], usages: Vec<ExtendedKeyUsagePurpose>| {
            let key = KeyPair::generate().expect("cannot generate a key");
            let sans = sans.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            let mut params = CertificateParams::new(sans).expect("certificate parameters");
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = usages;
            let cert = params
                .signed_by(&key, &ca, &ca_key)
                .expect("cannot sign a certificate");
            (cert.pem(), key.serialize_pem())
        };
        Pki {
            // Client auth too: etcd 3.4's HTTP gateway dials the member's own gRPC port with
            // this certificate, and `--client-cert-auth` checks it like any client's.
            server: issue(
                "etcd",
                &["127.0.0.1", "localhost"],
                vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ],
            ),
            client: issue(
                "jsonkv-testkit client",
                &["jsonkv-testkit-client"],
                vec![ExtendedKeyUsagePurpose::ClientAuth],
            ),
            ca: ca.pem(),
        }
    }

    /// Writes every file into `dir` (created), and returns the etcd flags that use them.
    pub(crate) fn write(&self, dir: &Path) -> Vec<String> {
        fs::create_dir_all(dir).expect("cannot create an etcd member's TLS directory");
        for (name, pem) in [
            (CA, &self.ca),
            (SERVER_CERT, &self.server.0),
            (SERVER_KEY, &self.server.1),
            (CLIENT_CERT, &self.client.0),
            (CLIENT_KEY, &self.client.1),
        ] {
            fs::write(dir.join(name), pem).expect("cannot write an etcd member's TLS file");
        }
        vec![
            format!("--cert-file={}", dir.join(SERVER_CERT).display()),
            format!("--key-file={}", dir.join(SERVER_KEY).display()),
            format!("--trusted-ca-file={}", dir.join(CA).display()),
            "--client-cert-auth".to_owned(),
        ]
    }

    /// TLS settings for the kit's own etcd clients: trust the CA, present the client certificate.
    pub(crate) fn client_options(&self) -> TlsOptions {
        TlsOptions::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .identity(Identity::from_pem(&self.client.0, &self.client.1))
    }
}
