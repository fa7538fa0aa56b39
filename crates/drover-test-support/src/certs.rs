//! Test certificates: a CA made in the test, and certificates it signs.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A CA, and a server certificate and a client certificate it signed, as PEM text.
pub struct TestPki {
    /// The CA's certificate: what a client trusts (`sslrootcert`).
    pub ca_cert: String,
    /// The server's certificate, for the names given to [`TestPki::new`].
    pub server_cert: String,
    /// The server certificate's private key.
    pub server_key: String,
    /// A client certificate, with the common name given to [`TestPki::new`] (a role name,
    /// for `cert` authentication).
    pub client_cert: String,
    /// The client certificate's private key.
    pub client_key: String,
}

impl TestPki {
    /// A new CA, a server certificate for `server_names` (DNS names or IP addresses), and a
    /// client certificate for `client_name`.
    pub fn new(server_names: &[&str], client_name: &str) -> TestPki {
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own: two test CAs with one name would look like one CA with a bad
        // signature, not like a foreign one.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        ca.distinguished_name.push(
            DnType::CommonName,
            format!("Drover test CA {}-{nanos}", std::process::id()),
        );
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca, ca_key);

        let names: Vec<String> = server_names.iter().map(|&n| n.to_owned()).collect();
        let mut server = CertificateParams::new(names).expect("server params");
        server.distinguished_name.push(
            DnType::CommonName,
            server_names.first().copied().unwrap_or("server"),
        );
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().expect("server key");
        let server_cert = server
            .signed_by(&server_key, &issuer)
            .expect("server certificate");

        let mut client = CertificateParams::new(Vec::<String>::new()).expect("client params");
        client
            .distinguished_name
            .push(DnType::CommonName, client_name);
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().expect("client key");
        let client_cert = client
            .signed_by(&client_key, &issuer)
            .expect("client certificate");

        TestPki {
            ca_cert: ca_cert.pem(),
            server_cert: server_cert.pem(),
            server_key: server_key.serialize_pem(),
            client_cert: client_cert.pem(),
            client_key: client_key.serialize_pem(),
        }
    }

    /// Writes the client's files into `dir`: `ca.pem`, `client.pem`, `client.key`.
    pub fn write_client_files(&self, dir: &Path) -> ClientFiles {
        let files = ClientFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("client.pem"),
            key: dir.join("client.key"),
        };
        fs::write(&files.ca, &self.ca_cert).expect("write ca.pem");
        fs::write(&files.cert, &self.client_cert).expect("write client.pem");
        fs::write(&files.key, &self.client_key).expect("write client.key");
        files
    }
}

/// Where [`TestPki::write_client_files`] put the client's files.
pub struct ClientFiles {
    /// The CA certificate (`sslrootcert`).
    pub ca: PathBuf,
    /// The client certificate (`sslcert`).
    pub cert: PathBuf,
    /// Its key (`sslkey`).
    pub key: PathBuf,
}
