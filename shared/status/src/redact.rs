//! Text from the database (a run's error) passes through [`Redactor::scrub`] before the
//! page or the JSON shows it: the errors are written without secrets, and this makes
//! sure of it for every secret the configuration holds and any webhook URL's code.

use b24_config::Config;

/// Every secret of one configuration document, to hide wherever it shows.
pub struct Redactor {
    secrets: Vec<String>,
}

/// What a hidden secret becomes.
const HIDDEN: &str = "***";

impl Redactor {
    pub fn new(config: &Config) -> Redactor {
        let mut secrets: Vec<String> = Vec::new();
        for portal in config.portals.values() {
            // The code is the last segment of `https://host/rest/<user>/<code>/`.
            let base = portal.webhook_url.expose_base().trim_end_matches('/');
            secrets.extend(base.rsplit('/').next().map(str::to_string));
            secrets.extend(portal.application_tokens.iter().cloned());
        }
        for route in config.routes.values() {
            secrets.extend(route.secret.as_ref().map(|s| s.expose().to_string()));
        }
        if let Some(status) = &config.status {
            secrets.extend(status.tokens.iter().cloned());
        }
        // Longest first, so a secret that contains another is hidden whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.retain(|s| !s.is_empty());
        Redactor { secrets }
    }

    /// `text` with every configured secret and the code of any `/rest/<user>/<code>`
    /// webhook path replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), HIDDEN);
            }
        }
        hide_webhook_codes(&text)
    }
}

/// `.../rest/12/abcdef/...` -> `.../rest/12/***/...`.
fn hide_webhook_codes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("/rest/") {
        let (before, after) = rest.split_at(at + "/rest/".len());
        out.push_str(before);
        let user_len = after.bytes().take_while(u8::is_ascii_digit).count();
        let code = after[user_len..].strip_prefix('/');
        match code {
            Some(code) if user_len > 0 => {
                let code_len = code
                    .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
                    .unwrap_or(code.len());
                out.push_str(&after[..=user_len]);
                if code_len > 0 {
                    out.push_str(HIDDEN);
                }
                rest = &code[code_len..];
            }
            _ => rest = after,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_secrets_and_webhook_codes_are_hidden() {
        let config = Config::from_json_str(
            r#"{"portals": {"acme": {"webhook_url": "https://acme.bitrix24.com/rest/1/c0de0123/",
                                     "application_tokens": ["app-t0ken-123"]}},
                "status": {"tokens": ["st4tus-t0ken-9c2e7a51"]}}"#,
        )
        .unwrap();
        let redactor = Redactor::new(&config);
        let text = "failed https://acme.bitrix24.com/rest/1/c0de0123/crm.deal.list with app-t0ken-123 \
                    and st4tus-t0ken-9c2e7a51; other https://x.test/rest/77/zzz/crm.lead.get";
        let scrubbed = redactor.scrub(text);
        for secret in ["c0de0123", "app-t0ken-123", "st4tus-t0ken-9c2e7a51", "zzz"] {
            assert!(!scrubbed.contains(secret), "{scrubbed}");
        }
        assert!(
            scrubbed.contains("https://x.test/rest/77/***/crm.lead.get"),
            "{scrubbed}"
        );
        assert_eq!(redactor.scrub("plain error"), "plain error");
        assert_eq!(
            hide_webhook_codes("/rest/ and /rest/x/y"),
            "/rest/ and /rest/x/y"
        );
    }
}
