//! Downloading the files of a source deal's file fields, to upload them to the target
//! with `fileData`.
//!
//! `crm.deal.get` describes a file as `{id, showUrl, downloadUrl}` with `downloadUrl`
//! relative to the portal (`/bitrix/components/bitrix/crm.deal.show/show_file.php?...`).
//! It is fetched from the portal the webhook belongs to; an absolute URL is followed
//! only when it points at that portal, so a deal's data can never send the forwarder
//! elsewhere. These URLs can carry credentials, so no error repeats them.
//!
//! The simulator serves these URLs to anyone. A real portal serves the old API's
//! `downloadUrl` (its `auth=` is empty) to a logged-in browser; whether it serves a
//! webhook's caller is undocumented (bitrix-tools/b24-rest-docs issue 94 asks, with no
//! answer), so copying files from a real portal is untested.

use std::time::Duration;

use b24_domain::forward::mapping::SourceFile;
use b24_domain::webhook::WebhookUrl;
use reqwest::Url;

use crate::error::ForwardError;

/// A downloaded file: its name (from `Content-Disposition`, else `file-<id>`) and bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Downloaded {
    pub name: String,
    pub content: Vec<u8>,
}

/// Downloads files from one portal.
#[derive(Clone)]
pub struct Downloader {
    http: reqwest::Client,
}

impl Downloader {
    pub fn new(timeout: Duration) -> Result<Downloader, ForwardError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("b24sync/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ForwardError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Downloader { http })
    }

    /// Fetches `file` of `field` from the portal of `webhook` (named `portal`).
    pub async fn download(
        &self,
        portal: &str,
        webhook: &WebhookUrl,
        field: &str,
        file: &SourceFile,
    ) -> Result<Downloaded, ForwardError> {
        let failure = |detail: String, retryable: bool| ForwardError::File {
            portal: portal.to_string(),
            field: field.to_string(),
            file_id: file.id,
            detail,
            retryable,
        };
        let url = file_url(webhook, &file.download_url).map_err(|e| failure(e, false))?;
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| failure(transport_detail(&e), true))?;
        let status = response.status();
        if !status.is_success() {
            // 5xx and 429 may pass; a 4xx (gone, forbidden) will not.
            let retryable = status.is_server_error() || status.as_u16() == 429;
            return Err(failure(format!("HTTP {}", status.as_u16()), retryable));
        }
        let name = response
            .headers()
            .get(reqwest::header::CONTENT_DISPOSITION)
            .and_then(|v| v.to_str().ok())
            .and_then(disposition_file_name)
            .unwrap_or_else(|| format!("file-{}", file.id));
        let content = response
            .bytes()
            .await
            .map_err(|e| failure(transport_detail(&e), true))?;
        Ok(Downloaded {
            name,
            content: content.to_vec(),
        })
    }
}

/// The absolute URL of a file on the webhook's portal.
fn file_url(webhook: &WebhookUrl, download_url: &str) -> Result<Url, String> {
    let base = Url::parse(webhook.expose_base())
        .map_err(|_| "the portal's webhook URL is not a URL".to_string())?;
    let url = base
        .join(download_url)
        .map_err(|_| "the file's downloadUrl is not a URL".to_string())?;
    let same_portal = url.scheme() == base.scheme()
        && url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default();
    if !same_portal {
        return Err("the file's downloadUrl points to another host than the portal".into());
    }
    Ok(url)
}

/// What went wrong in transport, without the URL.
fn transport_detail(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".into()
    } else if error.is_connect() {
        "cannot connect".into()
    } else {
        "the connection failed".into()
    }
}

/// The `filename` of a `Content-Disposition` header (quoted or not), without any path.
fn disposition_file_name(header: &str) -> Option<String> {
    let value = header.split(';').map(str::trim).find_map(|part| {
        let (key, value) = part.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("filename")
            .then(|| value.trim().trim_matches('"').to_string())
    })?;
    let name = value.rsplit(['/', '\\']).next().unwrap_or_default().trim();
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook() -> WebhookUrl {
        WebhookUrl::parse("https://partner.bitrix24.com/rest/1/secretcode123/").unwrap()
    }

    #[test]
    fn relative_urls_resolve_on_the_portal_and_other_hosts_are_refused() {
        let url = file_url(
            &webhook(),
            "/bitrix/components/bitrix/crm.deal.show/show_file.php?auth=&ownerId=5&fileId=9",
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://partner.bitrix24.com/bitrix/components/bitrix/crm.deal.show/show_file.php?auth=&ownerId=5&fileId=9"
        );
        assert!(file_url(&webhook(), "https://partner.bitrix24.com/x?fileId=1").is_ok());
        for foreign in [
            "https://evil.example/x",
            "http://partner.bitrix24.com/x",
            "https://partner.bitrix24.com:8443/x",
            "//evil.example/x",
        ] {
            let error = file_url(&webhook(), foreign).unwrap_err();
            assert!(error.contains("another host"), "{foreign}: {error}");
            assert!(!error.contains("evil"), "{error}");
        }
    }

    #[test]
    fn file_names_come_from_content_disposition_without_paths() {
        assert_eq!(
            disposition_file_name("attachment; filename=\"contract.pdf\"").as_deref(),
            Some("contract.pdf")
        );
        assert_eq!(
            disposition_file_name("attachment; FILENAME=a.txt").as_deref(),
            Some("a.txt")
        );
        assert_eq!(
            disposition_file_name("attachment; filename=\"../../etc/passwd\"").as_deref(),
            Some("passwd")
        );
        assert_eq!(disposition_file_name("attachment"), None);
        assert_eq!(disposition_file_name("attachment; filename=\"\""), None);
    }
}
