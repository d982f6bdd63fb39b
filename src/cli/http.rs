//! The CLI's requests to the daemon's API, on ureq. Plain HTTP: the API listens on the loopback
//! interface, or behind the site's own TLS proxy.

use std::time::Duration;

use anyhow::{Context, Result};

/// An answer, whatever its status: the API explains a refusal in its body.
pub(super) struct Reply {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON (`null` if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request to `server` (`http://host:port`): `path` with its query, the operator's
/// token when given, and a JSON body for a POST.
pub(super) fn call(
    server: &str,
    path: &str,
    token: Option<&str>,
    json: Option<&[u8]>,
) -> Result<Reply> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let url = format!("{}{path}", server.trim_end_matches('/'));
    let auth = token.map(|t| format!("Bearer {t}"));
    let sent = match json {
        Some(body) => {
            let mut req = agent.post(&url).header("Content-Type", "application/json");
            if let Some(auth) = &auth {
                req = req.header("Authorization", auth);
            }
            req.send(body)
        }
        None => {
            let mut req = agent.get(&url);
            if let Some(auth) = &auth {
                req = req.header("Authorization", auth);
            }
            req.call()
        }
    };
    let mut reply = sent.with_context(|| format!("{url}: no answer"))?;
    let status = reply.status().as_u16();
    let body = reply
        .body_mut()
        .read_to_vec()
        .with_context(|| format!("{url}: reading the answer"))?;
    Ok(Reply { status, body })
}
