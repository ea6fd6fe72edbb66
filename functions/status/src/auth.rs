//! Who may read the status: `Authorization: Bearer <token>` with one of `status.tokens`,
//! or HTTP Basic with the token as the password (any user name), which is how a browser
//! on a phone asks for it without a script. Compared in constant time against every
//! configured token, so a rotation can list the old and the new one.

use b24_domain::event::is_one_of;
use base64::Engine;

/// Whether the `Authorization` header values carry an accepted token. A request with
/// several `Authorization` headers is refused: which one would count is ambiguous.
pub fn is_authorized<'a>(mut headers: impl Iterator<Item = &'a [u8]>, tokens: &[String]) -> bool {
    let (Some(header), None) = (headers.next(), headers.next()) else {
        return false;
    };
    let Ok(header) = std::str::from_utf8(header) else {
        return false;
    };
    let Some((scheme, credentials)) = header.trim().split_once(' ') else {
        return false;
    };
    let credentials = credentials.trim();
    let presented = if scheme.eq_ignore_ascii_case("bearer") {
        credentials.as_bytes().to_vec()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(credentials) else {
            return false;
        };
        match decoded.iter().position(|&b| b == b':') {
            Some(colon) => decoded[colon + 1..].to_vec(),
            None => return false,
        }
    } else {
        return false;
    };
    !presented.is_empty() && is_one_of(tokens, &presented)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "st4tus-t0ken-9c2e7a51d84b";

    fn check(headers: &[&str]) -> bool {
        let tokens = vec!["old-t0ken-0000000000".to_string(), TOKEN.to_string()];
        is_authorized(headers.iter().map(|h| h.as_bytes()), &tokens)
    }

    fn basic(user_and_password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_and_password)
        )
    }

    #[test]
    fn a_configured_token_is_accepted_as_bearer_or_basic_password() {
        assert!(check(&[&format!("Bearer {TOKEN}")]));
        assert!(check(&[&format!("bearer   {TOKEN} ")]));
        assert!(check(&["Bearer old-t0ken-0000000000"]));
        assert!(check(&[&basic(&format!("status:{TOKEN}"))]));
        assert!(check(&[&basic(&format!(":{TOKEN}"))]));
    }

    #[test]
    fn anything_else_is_refused() {
        assert!(!check(&[]));
        assert!(!check(&[""]));
        assert!(!check(&["Bearer"]));
        assert!(!check(&["Bearer "]));
        assert!(!check(&[&format!("Bearer {TOKEN}x")]));
        assert!(!check(&[&TOKEN[..10]]));
        assert!(!check(&[&format!("Token {TOKEN}")]));
        assert!(!check(&[&basic(TOKEN)]));
        assert!(!check(&[&basic(&format!("{TOKEN}:wrong"))]));
        assert!(!check(&["Basic !!!not-base64"]));
        assert!(!check(&[
            &format!("Bearer {TOKEN}"),
            &format!("Bearer {TOKEN}")
        ]));
    }
}
