//! A certificate and key a test makes for a `wss://` signalling server on 127.0.0.1, in a
//! folder of its own (`cert.pem`, `key.pem`), removed when dropped.

#![allow(dead_code, reason = "shared by the p2p and browser tests, which each use part of it")]

use std::path::{Path, PathBuf};

pub struct TestCertificate {
    dir: PathBuf,
}

impl TestCertificate {
    /// A self-signed certificate for `localhost` and `127.0.0.1`.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("bpi-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a folder for the certificate");
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("a certificate");
        std::fs::write(dir.join("cert.pem"), made.cert.pem()).expect("cert.pem");
        std::fs::write(dir.join("key.pem"), made.signing_key.serialize_pem()).expect("key.pem");
        Self { dir }
    }

    /// The folder holding `cert.pem` and `key.pem`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn cert(&self) -> String {
        self.dir.join("cert.pem").display().to_string()
    }

    pub fn key(&self) -> String {
        self.dir.join("key.pem").display().to_string()
    }
}

impl Drop for TestCertificate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
