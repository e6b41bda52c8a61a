//! Secrets never reach a record, a log line or the provenance: the API key (which a server may
//! quote back in its 401 answer), and query parameters of the server or metrics URL that look
//! like credentials (`?api_key=`, `?token=`, `?sig=`, ...), which gateways accept in place of a
//! header. URLs are shown with those values replaced (also in the command line the provenance
//! records); every message a server backend writes passes through [`Secrets::redact`].

/// What a shown URL or message holds instead of a secret.
const REDACTED: &str = "<redacted>";

/// Query parameter names (lowercase parts) that hold credentials.
const SECRET_PARAMS: &[&str] = &[
    "key",
    "token",
    "secret",
    "password",
    "passwd",
    "auth",
    "sig",
    "signature",
    "credential",
    "session",
];

fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMS.iter().any(|s| name.contains(s))
}

/// The strings to keep out of everything written.
// The server backends hold the secrets; `shown` (below) serves the provenance as well.
#[cfg(feature = "openai")]
#[derive(Clone, Default)]
pub(crate) struct Secrets {
    words: Vec<String>,
}

#[cfg(feature = "openai")]
impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} hidden)", self.words.len())
    }
}

#[cfg(feature = "openai")]
impl Secrets {
    /// Keeps `secret` out of every message (empty and very short strings are not secrets
    /// worth hiding and would redact ordinary text).
    pub(crate) fn add(&mut self, secret: &str) {
        if secret.len() >= 4 && !self.words.iter().any(|w| w == secret) {
            self.words.push(secret.to_string());
            // Longest first, so a secret that contains another is hidden whole.
            self.words.sort_by_key(|w| std::cmp::Reverse(w.len()));
        }
    }

    /// Keeps the credential-like query values of `url` out of every message, decoded and as
    /// they stand in the URL.
    pub(crate) fn add_url(&mut self, url: &str) {
        for (_, raw) in secret_query_values(url) {
            self.add(&percent_decoded(raw));
            self.add(raw);
        }
    }

    /// `text` with every secret replaced.
    pub(crate) fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for word in &self.words {
            if out.contains(word.as_str()) {
                out = out.replace(word.as_str(), REDACTED);
            }
        }
        out
    }
}

/// The `(name, raw value)` pairs of `url`'s query whose names look like credentials.
fn secret_query_values(url: &str) -> Vec<(&str, &str)> {
    let Some((_, rest)) = url.split_once('?') else {
        return Vec::new();
    };
    let query = rest.split('#').next().unwrap_or("");
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(name, _)| is_secret_param(&percent_decoded(name)))
        .collect()
}

/// `text` percent-decoded (and `+` as a space), leniently: a malformed escape stays as it is.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `text` (a URL, or a command line holding URLs) with the values of credential-like query
/// parameters replaced: what may be shown and recorded.
pub(crate) fn shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let mut word = word.to_string();
        for (name, raw) in secret_query_values(&word.clone()) {
            word = word.replace(&format!("{name}={raw}"), &format!("{name}={REDACTED}"));
        }
        out.push_str(&word);
    }
    out
}

#[cfg(all(test, feature = "openai"))]
mod tests {
    use super::*;

    #[test]
    fn credential_query_values_are_shown_redacted() {
        let url = "http://h:1/v1?api_key=s3cr%2Bet&api-version=2024";
        let shown = shown(&format!("run --base-url {url} -o out"));
        assert!(!shown.contains("s3cr"), "{shown}");
        assert!(shown.contains("api-version=2024"), "{shown}");
        assert_eq!(percent_decoded("a%2Bb+c%zz"), "a+b c%zz");
        let mut secrets = Secrets::default();
        secrets.add_url(url);
        let message = "error for http://h:1/v1?api_key=s3cr%2Bet: the key s3cr+et is wrong";
        let redacted = secrets.redact(message);
        assert!(!redacted.contains("s3cr"), "{redacted}");
    }

    #[test]
    fn the_api_key_is_redacted_wherever_it_stands() {
        let mut secrets = Secrets::default();
        secrets.add("sk-abcdef");
        assert_eq!(
            secrets.redact("Incorrect API key provided: sk-abcdef."),
            "Incorrect API key provided: <redacted>."
        );
        assert_eq!(format!("{secrets:?}"), "Secrets(1 hidden)");
    }
}
