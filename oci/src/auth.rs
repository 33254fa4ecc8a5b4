//! Registry credentials (upstream's `machine.registries.config.<host>.auth`) and how they go
//! on the wire: `Authorization: Basic` headers and the OAuth2 refresh-token form.

use std::fmt;

use base64::Engine as _;

use crate::transport::Target;

/// The `client_id` sent with refresh-token requests.
const CLIENT_ID: &str = "talos-rs";

/// Credentials for one registry. Their `Debug` output hides the secrets.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A user name and password (or personal access token): `Authorization: Basic`, sent to
    /// the registry itself or to the token service its bearer challenge names.
    Basic { username: String, password: String },
    /// An OAuth2 refresh token (Docker's `identitytoken`), exchanged at the token service.
    IdentityToken(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Self::IdentityToken(_) => f.debug_tuple("IdentityToken").field(&"<redacted>").finish(),
        }
    }
}

/// The `Authorization` value for `username:password`.
pub(crate) fn basic_authorization(username: &str, password: &str) -> String {
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    format!("Basic {encoded}")
}

/// Whether a challenge asks for `Basic` authentication.
pub(crate) fn is_basic_challenge(challenge: &str) -> bool {
    challenge
        .trim_start()
        .split([' ', ','])
        .next()
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("basic"))
}

/// Whether credentials for `registry` may go to the token service at `realm`: over HTTPS,
/// or in plain text only to the registry's own host.
pub(crate) fn may_send_credentials(registry: &Target, realm: &Target) -> bool {
    realm.https || realm.host.eq_ignore_ascii_case(&registry.host)
}

/// The `application/x-www-form-urlencoded` body that trades `refresh_token` for an access
/// token.
pub(crate) fn refresh_token_form(
    refresh_token: &str,
    service: Option<&str>,
    scope: Option<&str>,
) -> String {
    [
        ("grant_type", Some("refresh_token")),
        ("refresh_token", Some(refresh_token)),
        ("service", service),
        ("scope", scope),
        ("client_id", Some(CLIENT_ID)),
    ]
    .into_iter()
    .filter_map(|(key, value)| value.map(|v| format!("{key}={}", query_escape(v))))
    .collect::<Vec<_>>()
    .join("&")
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(crate) fn query_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_headers_encode_user_colon_password() {
        assert_eq!(
            basic_authorization("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(
            basic_authorization("talos", "s3cret"),
            "Basic dGFsb3M6czNjcmV0"
        );
        assert!(is_basic_challenge(r#"Basic realm="registry""#));
        assert!(is_basic_challenge("basic"));
        assert!(!is_basic_challenge(r#"Bearer realm="https://a/t""#));
        assert!(!is_basic_challenge("Basically"));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let basic = Credentials::Basic {
            username: "talos".into(),
            password: "s3cret".into(),
        };
        let shown = format!("{basic:?}");
        assert!(
            shown.contains("talos") && !shown.contains("s3cret"),
            "{shown}"
        );
        let token = format!("{:?}", Credentials::IdentityToken("r3fresh".into()));
        assert!(!token.contains("r3fresh"), "{token}");
    }

    #[test]
    fn credentials_go_to_a_realm_over_https_or_on_the_registry_host_only() {
        let target = |url: &str| Target::parse(url).unwrap();
        let plain = target("http://10.0.0.5:5000/v2");
        let https = target("https://registry.test/v2");
        for (registry, realm, allowed) in [
            (&https, "https://auth.docker.io/token", true),
            (&plain, "https://auth.example/token", true),
            (&plain, "http://10.0.0.5:5001/token", true),
            (&plain, "http://10.0.0.6:5000/token", false),
            (&https, "http://REGISTRY.test/token", true),
            (&https, "http://auth.example/token", false),
        ] {
            assert_eq!(
                may_send_credentials(registry, &target(realm)),
                allowed,
                "{} -> {realm}",
                registry.url()
            );
        }
    }

    #[test]
    fn refresh_token_forms_carry_grant_token_service_scope_and_client() {
        assert_eq!(
            refresh_token_form("r/t+", Some("ghcr.io"), Some("repository:a/b:pull")),
            "grant_type=refresh_token&refresh_token=r%2Ft%2B&service=ghcr.io\
             &scope=repository%3Aa%2Fb%3Apull&client_id=talos-rs"
        );
        assert_eq!(
            refresh_token_form("t", None, None),
            "grant_type=refresh_token&refresh_token=t&client_id=talos-rs"
        );
    }
}
