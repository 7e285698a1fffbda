//! The onboarding key pair: RSA-4096, the private key in a 0600 file under the step's key
//! directory, the public key as ARM wants it (base64 of the DER PKCS#1 `RSAPublicKey`).

use base64::Engine;
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey, EncodeRsaPublicKey};
use siteflow_step::{Secret, StepContext, StepError};
use siteflow_steps_azure::keys;

const FILE: &str = "arc-onboarding_rsa.pem";
const BITS: usize = 4096;

/// The agents' key pair.
pub struct OnboardingKey {
    /// PKCS#1 PEM (`-----BEGIN RSA PRIVATE KEY-----`).
    pub private_pem: Secret<String>,
    /// `agentPublicKeyCertificate`.
    pub public_b64: String,
}

fn from_pem(pem: &str) -> Result<OnboardingKey, StepError> {
    let key = rsa::RsaPrivateKey::from_pkcs1_pem(pem).map_err(|e| {
        StepError::permanent("KeyUnreadable", format!("stored onboarding key: {e}"))
    })?;
    let der = key
        .to_public_key()
        .to_pkcs1_der()
        .map_err(|e| StepError::permanent("KeyUnreadable", e.to_string()))?;
    Ok(OnboardingKey {
        private_pem: Secret::new(pem.to_string()),
        public_b64: base64::engine::general_purpose::STANDARD.encode(der.as_bytes()),
    })
}

/// The step's stored key, or a new one written before anything uses it.
pub async fn load_or_create(cx: &StepContext) -> Result<OnboardingKey, StepError> {
    if let Some(pem) = keys::read_private(cx, FILE).await? {
        cx.add_secret(&pem);
        return from_pem(&pem);
    }
    cx.info("generating the RSA-4096 onboarding key");
    let pem = tokio::task::spawn_blocking(|| -> Result<String, String> {
        let mut rng = rsa::rand_core::UnwrapErr(getrandom::SysRng);
        let key = rsa::RsaPrivateKey::new(&mut rng, BITS).map_err(|e| e.to_string())?;
        key.to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
            .map(|p| p.to_string())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| StepError::permanent("KeyGeneration", e.to_string()))?
    .map_err(|e| StepError::permanent("KeyGeneration", e))?;
    cx.add_secret(&pem);
    match keys::write_private(cx, FILE, &pem).await? {
        None => from_pem(&pem),
        Some(theirs) => {
            cx.add_secret(&theirs);
            from_pem(&theirs)
        }
    }
}
