//! The emulated Entra directory: applications with their password credentials, and the
//! service principals created at run time (for applications and managed identities), with
//! the replication delay after which ARM sees a new principal.

use ring::digest;
use serde_json::{Value, json};
use tokio::time::Instant;

/// A password credential. The secret itself is never kept: only its SHA-256, to check logins.
pub(crate) struct Password {
    pub(crate) key_id: String,
    pub(crate) display_name: Option<String>,
    pub(crate) hint: String,
    pub(crate) start: String,
    pub(crate) end: String,
    secret_sha256: Vec<u8>,
}

impl Password {
    /// Graph's `passwordCredential` (`secretText` is null except in the addPassword answer).
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "customKeyIdentifier": null,
            "displayName": self.display_name,
            "endDateTime": self.end,
            "hint": self.hint,
            "keyId": self.key_id,
            "secretText": null,
            "startDateTime": self.start
        })
    }
}

/// An application object.
pub(crate) struct Application {
    pub(crate) id: String,
    pub(crate) app_id: String,
    pub(crate) display_name: String,
    pub(crate) created: String,
    /// Free-form tags (`tags` of the application resource).
    pub(crate) tags: Vec<String>,
    pub(crate) passwords: Vec<Password>,
}

/// Which kind of service principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PrincipalKind {
    /// Of an application registration.
    Application,
    /// Of a user-assigned managed identity.
    ManagedIdentity,
}

/// A service principal created at run time.
pub(crate) struct CreatedPrincipal {
    pub(crate) id: String,
    pub(crate) app_id: String,
    pub(crate) display_name: String,
    pub(crate) kind: PrincipalKind,
    /// For managed identities: the identity's resource id.
    pub(crate) alternative_name: Option<String>,
    /// When it was created: ARM sees it once the replication delay has passed.
    pub(crate) created_at: Instant,
}

/// What ARM's view of the directory says about an object id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PrincipalLookup {
    /// Known and replicated.
    Found,
    /// Created, but not yet replicated to ARM's view.
    Replicating,
    /// Never heard of.
    Unknown,
}

/// The run-time part of the directory (the configured principals live in the config).
#[derive(Default)]
pub(crate) struct Directory {
    pub(crate) apps: Vec<Application>,
    pub(crate) principals: Vec<CreatedPrincipal>,
}

fn sha256(s: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, s.as_bytes())
        .as_ref()
        .to_vec()
}

impl Directory {
    /// The application with this object id.
    pub(crate) fn app(&self, id: &str) -> Option<&Application> {
        self.apps.iter().find(|a| a.id.eq_ignore_ascii_case(id))
    }

    /// The application with this object id, for changes.
    pub(crate) fn app_mut(&mut self, id: &str) -> Option<&mut Application> {
        self.apps.iter_mut().find(|a| a.id.eq_ignore_ascii_case(id))
    }

    /// The application with this appId.
    pub(crate) fn app_by_app_id(&self, app_id: &str) -> Option<&Application> {
        self.apps
            .iter()
            .find(|a| a.app_id.eq_ignore_ascii_case(app_id))
    }

    /// The created service principal of this appId.
    pub(crate) fn principal_by_app_id(&self, app_id: &str) -> Option<&CreatedPrincipal> {
        self.principals
            .iter()
            .find(|p| p.app_id.eq_ignore_ascii_case(app_id))
    }

    /// Adds a password to `app`; returns the credential and the secret (shown once).
    pub(crate) fn add_password(
        app: &mut Application,
        display_name: Option<String>,
        end: String,
    ) -> (String, String) {
        use rand::Rng;
        const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789~._-";
        let mut rng = rand::rng();
        let secret: String = (0..40)
            .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
            .collect();
        let key_id = uuid::Uuid::new_v4().to_string();
        app.passwords.push(Password {
            key_id: key_id.clone(),
            display_name,
            hint: secret.chars().take(3).collect(),
            start: crate::clock::rfc3339_now(),
            end,
            secret_sha256: sha256(&secret),
        });
        (key_id, secret)
    }

    /// The object id of the service principal that may log in as `client_id` with
    /// `secret`: `Err(true)` when the app exists but has no service principal.
    pub(crate) fn login(&self, client_id: &str, secret: &str) -> Option<Result<String, bool>> {
        let app = self.app_by_app_id(client_id)?;
        let digest = sha256(secret);
        if !app.passwords.iter().any(|p| p.secret_sha256 == digest) {
            return Some(Err(false));
        }
        Some(
            self.principal_by_app_id(client_id)
                .map(|p| p.id.clone())
                .ok_or(true),
        )
    }

    /// Whether ARM can resolve this object id now.
    pub(crate) fn lookup(
        &self,
        id: &str,
        now: Instant,
        delay: std::time::Duration,
    ) -> PrincipalLookup {
        match self
            .principals
            .iter()
            .find(|p| p.id.eq_ignore_ascii_case(id))
        {
            Some(p) if now.saturating_duration_since(p.created_at) >= delay => {
                PrincipalLookup::Found
            }
            Some(_) => PrincipalLookup::Replicating,
            None => PrincipalLookup::Unknown,
        }
    }

    /// Removes the service principal of a deleted managed identity.
    pub(crate) fn remove_identity_principal(&mut self, resource_id: &str) {
        self.principals.retain(|p| {
            p.alternative_name
                .as_deref()
                .is_none_or(|a| !a.eq_ignore_ascii_case(resource_id))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_kept_as_digests_and_log_in_only_with_a_principal() {
        let mut d = Directory::default();
        d.apps.push(Application {
            id: "o1".into(),
            app_id: "a1".into(),
            display_name: "x".into(),
            created: String::new(),
            tags: vec![],
            passwords: vec![],
        });
        let app = d.app_mut("o1").unwrap();
        let (key_id, secret) = Directory::add_password(app, None, "2030-01-01T00:00:00Z".into());
        assert_eq!(secret.len(), 40);
        let shown = d.app("o1").unwrap().passwords[0].to_json();
        assert_eq!(shown["keyId"], key_id.as_str());
        assert!(shown["secretText"].is_null());
        assert!(!shown.to_string().contains(&secret));
        assert_eq!(d.login("a1", &secret), Some(Err(true)));
        assert_eq!(d.login("a1", "wrong"), Some(Err(false)));
        d.principals.push(CreatedPrincipal {
            id: "sp1".into(),
            app_id: "a1".into(),
            display_name: "x".into(),
            kind: PrincipalKind::Application,
            alternative_name: None,
            created_at: Instant::now(),
        });
        assert_eq!(d.login("a1", &secret), Some(Ok("sp1".into())));
        assert_eq!(d.login("nope", &secret), None);
    }
}
