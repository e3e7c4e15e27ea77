//! Test certificates made at test time with the `openssl` CLI (Debian package `openssl`):
//! a test CA and a server certificate it signs for `127.0.0.1` / `localhost` (the TLS
//! registry), and a self-signed ES256 certificate whose key signs registry tokens (the token
//! server). All keys are P-256; nothing is committed, nothing outlives the scratch directory.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA created for one test, and the server certificate it issued.
#[derive(Debug, Clone)]
pub struct TestCa {
    /// The CA certificate (PEM): what a client trusts (`--ca-file`, skopeo's `--cert-dir`).
    pub ca_cert: PathBuf,
    /// A directory holding only `ca.crt` (the CA): the layout of skopeo's / Docker's
    /// `certs.d/HOST` directories.
    pub cert_dir: PathBuf,
    /// The server certificate (PEM) for `IP:127.0.0.1` and `DNS:localhost`.
    pub server_cert: PathBuf,
    /// The server's private key (PEM).
    pub server_key: PathBuf,
}

/// `openssl req -x509` with a new P-256 key: a self-signed certificate.
fn self_signed(openssl: &Path, cert: &Path, key: &Path, cn: &str, extra: &[&str]) {
    crate::run(
        Command::new(openssl)
            .args([
                "req",
                "-x509",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "2", "-subj", &format!("/CN={cn}")])
            .args(extra)
            .arg("-keyout")
            .arg(key)
            .arg("-out")
            .arg(cert),
    );
}

impl TestCa {
    /// Make a CA and a server certificate in `dir` (created). `None` only when `openssl` is
    /// missing and skipping is allowed.
    pub fn new(dir: &Path) -> Option<TestCa> {
        let openssl = crate::require_package_tool("openssl", "openssl")?;
        std::fs::create_dir_all(dir).unwrap();
        let ca_key = dir.join("ca.key");
        let cert_dir = dir.join("certs");
        std::fs::create_dir_all(&cert_dir).unwrap();
        let ca_cert = cert_dir.join("ca.crt");
        self_signed(
            &openssl,
            &ca_cert,
            &ca_key,
            "erofs-rs test CA",
            &[
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        let server_key = dir.join("server.key");
        let server_csr = dir.join("server.csr");
        let server_cert = dir.join("server.crt");
        crate::run(
            Command::new(&openssl)
                .args([
                    "req",
                    "-new",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                ])
                .args(["-nodes", "-subj", "/CN=127.0.0.1", "-keyout"])
                .arg(&server_key)
                .arg("-out")
                .arg(&server_csr),
        );
        let ext = dir.join("server.ext");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let serial = format!("0x{:016x}", std::process::id() as u64 ^ nanos());
        crate::run(
            Command::new(&openssl)
                .args(["x509", "-req", "-days", "2", "-set_serial", &serial, "-in"])
                .arg(&server_csr)
                .arg("-CA")
                .arg(&ca_cert)
                .arg("-CAkey")
                .arg(&ca_key)
                .arg("-extfile")
                .arg(&ext)
                .arg("-out")
                .arg(&server_cert),
        );
        Some(TestCa {
            ca_cert,
            cert_dir,
            server_cert,
            server_key,
        })
    }
}

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A self-signed P-256 certificate and its key, for signing tokens (ES256).
#[derive(Debug, Clone)]
pub struct SigningCert {
    /// The certificate (PEM): the registry's `rootcertbundle`.
    pub cert: PathBuf,
    /// The private key (PKCS#8 PEM).
    pub key: PathBuf,
}

impl SigningCert {
    /// Make one in `dir` (created), named `name.crt` / `name.key`.
    pub fn new(dir: &Path, name: &str) -> Option<SigningCert> {
        let openssl = crate::require_package_tool("openssl", "openssl")?;
        std::fs::create_dir_all(dir).unwrap();
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        self_signed(&openssl, &cert, &key, name, &[]);
        Some(SigningCert { cert, key })
    }

    /// The certificate's DER, base64 (standard alphabet): a JWT header's `x5c` entry. That is
    /// the PEM body with its line breaks removed.
    pub fn x5c(&self) -> String {
        let pem = std::fs::read_to_string(&self.cert).unwrap();
        pem.lines()
            .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
            .skip(1)
            .take_while(|l| !l.starts_with("-----END"))
            .collect()
    }
}
