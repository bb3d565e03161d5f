//! The forms the login and consent pages post, and their CSRF check.
//!
//! Each page embeds its interaction's CSRF token in a hidden field; a post counts only with the
//! interaction cookie *and* that token, compared here in constant time against the interaction
//! the cookie names. This is the only CSRF check of the front channel (the store does not
//! compare tokens). SameSite=Lax already keeps the cookie off cross-site posts; the token
//! covers browsers and paths where it would not.

use axum::http::HeaderMap;
use zeroize::Zeroizing;

use crate::error::OAuthError;
use crate::store::Interaction;

/// The login and consent forms are a few short fields.
const MAX_PAGE_FORM_BYTES: usize = 8 * 1024;

/// A form posted by the login or consent page. The body and the password are held in zeroizing
/// buffers (best effort: the HTTP stack's own buffers are out of reach).
pub(super) struct PageForm {
    csrf: Option<String>,
    pub(super) username: Option<String>,
    pub(super) password: Zeroizing<String>,
    /// The button pressed: `approve` or `deny` on the consent page, `cancel` on the login page
    /// (absent for Sign in).
    pub(super) decision: Option<String>,
}

impl PageForm {
    pub(super) async fn read(
        headers: &HeaderMap,
        body: axum::body::Body,
    ) -> Result<Self, OAuthError> {
        if !crate::form::is_form_urlencoded(headers) {
            return Err(OAuthError::invalid_request(
                "the form must be application/x-www-form-urlencoded",
            ));
        }
        let bytes = crate::form::read_body(body, MAX_PAGE_FORM_BYTES).await?;
        let raw = Zeroizing::new(Vec::from(bytes));
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&raw)
            .map_err(|_| OAuthError::invalid_request("the form is not URL-encoded"))?;
        let mut form = PageForm {
            csrf: None,
            username: None,
            password: Zeroizing::new(String::new()),
            decision: None,
        };
        let mut seen_password = false;
        for (k, v) in pairs {
            let repeated = match k.as_str() {
                "csrf" => form.csrf.replace(v).is_some(),
                "username" => form.username.replace(v).is_some(),
                "decision" => form.decision.replace(v).is_some(),
                "password" => {
                    form.password = Zeroizing::new(v);
                    std::mem::replace(&mut seen_password, true)
                }
                _ => false,
            };
            if repeated {
                return Err(OAuthError::invalid_request(format!(
                    "field {k} is repeated"
                )));
            }
        }
        Ok(form)
    }

    /// The form's `csrf` field is `interaction`'s token.
    pub(super) fn check_csrf(&self, interaction: &Interaction) -> Result<(), OAuthError> {
        match &self.csrf {
            Some(c) if same_secret(c, &interaction.csrf) => Ok(()),
            _ => Err(OAuthError::invalid_request(
                "the form does not belong to this sign-in (CSRF check failed)",
            )),
        }
    }
}

/// Compares without stopping at the first difference.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, header};

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }

    fn form_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        h
    }

    #[tokio::test]
    async fn fields_are_read_once_and_the_csrf_token_checked() {
        let form = PageForm::read(
            &form_headers(),
            "username=alice&password=p%26w&csrf=tok&other=x".into(),
        )
        .await
        .unwrap();
        assert_eq!(form.username.as_deref(), Some("alice"));
        assert_eq!(form.password.as_str(), "p&w");
        let mut interaction = Interaction {
            client_id: "c".into(),
            request: serde_json::json!({}),
            csrf: "tok".into(),
            user: None,
            expires_at: 0,
        };
        assert!(form.check_csrf(&interaction).is_ok());
        interaction.csrf = "tom".into();
        assert!(form.check_csrf(&interaction).is_err());

        for body in ["password=a&password=b", "csrf=a&csrf=b"] {
            assert!(PageForm::read(&form_headers(), body.into()).await.is_err());
        }
        let no_csrf = PageForm::read(&form_headers(), "decision=approve".into())
            .await
            .unwrap();
        assert!(no_csrf.check_csrf(&interaction).is_err());
        assert!(
            PageForm::read(&HeaderMap::new(), "csrf=tom".into())
                .await
                .is_err(),
            "not a form"
        );
    }
}
