//! Keys the provider tests and benches sign with, made when they run by
//! the system's openssl (`.ci/run` installs it): no private key is ever
//! committed.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `openssl` with `args`, writing a key to `out`.
fn openssl(args: &[&str], out: &Path) {
    let made = Command::new("openssl")
        .args(args)
        .arg("-out")
        .arg(out)
        .output()
        .expect("openssl runs");
    assert!(made.status.success(), "openssl {args:?}: {made:?}");
}

/// A 2048-bit RSA key in PKCS#8 PEM written to `dir`, and the public
/// half in SPKI PEM.
pub fn rsa_key(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("rsa-key.pem");
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
        &key,
    );
    let public = dir.join("rsa-public.pem");
    let out = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public)
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "{out:?}");
    (
        key,
        std::fs::read_to_string(public).expect("the public key"),
    )
}

/// A P-256 key in PKCS#8 PEM written to `dir`, as Apple hands out `.p8`
/// files.
pub fn p256_key(dir: &Path) -> PathBuf {
    let key = dir.join("AuthKey.p8");
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ],
        &key,
    );
    key
}

/// A Firebase service account's key file in `dir`, its key fresh, its
/// token endpoint `token_uri` when given; and the key's public half.
pub fn service_account(dir: &Path, token_uri: Option<&str>) -> (PathBuf, String) {
    let (key, public) = rsa_key(dir);
    let mut account = serde_json::json!({
        "type": "service_account",
        "project_id": "herald-test",
        "private_key_id": "key-1",
        "private_key": std::fs::read_to_string(&key).expect("the key"),
        "client_email": "herald@herald-test.iam.gserviceaccount.com",
    });
    if let Some(uri) = token_uri {
        account["token_uri"] = serde_json::json!(uri);
    }
    let file = dir.join("service-account.json");
    std::fs::write(&file, account.to_string()).expect("write the key file");
    (file, public)
}

/// SendGrid's Signed Event Webhook, as the provider signs: a P-256 key
/// made when the test runs, its public key shown as SendGrid shows it.
pub struct SendgridSigner {
    pair: ring::signature::EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
    /// Base64 of the public key's SubjectPublicKeyInfo.
    pub public_key: String,
}

impl SendgridSigner {
    pub fn new() -> SendgridSigner {
        use base64::Engine as _;
        use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
        let made = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a key");
        let public_key = base64::engine::general_purpose::STANDARD
            .encode(rcgen::PublicKeyData::subject_public_key_info(&made));
        let rng = ring::rand::SystemRandom::new();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &made.serialize_der(), &rng)
                .expect("the key as PKCS#8");
        SendgridSigner {
            pair,
            rng,
            public_key,
        }
    }

    /// The signature and timestamp headers' values of `body` sent at
    /// `timestamp`.
    pub fn sign(&self, timestamp: i64, body: &str) -> (String, String) {
        use base64::Engine as _;
        let signed = format!("{timestamp}{body}");
        let signature = self
            .pair
            .sign(&self.rng, signed.as_bytes())
            .expect("signed");
        (
            base64::engine::general_purpose::STANDARD.encode(signature.as_ref()),
            timestamp.to_string(),
        )
    }
}
