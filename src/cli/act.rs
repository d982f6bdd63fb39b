//! The verbs that act on the running daemon through its API (pause, resume, cancel, retry, rerun,
//! trigger, hold, release, reinject), with the operator's token.

use super::*;

pub(super) fn pause(a: &TargetArgs, pausing: bool) -> Action {
    let name = a.name.clone();
    match (a.kind.as_str(), pausing) {
        ("model", true) => Action::PauseModel { model: name },
        ("model", false) => Action::ResumeModel { model: name },
        (_, true) => Action::PauseChannel { channel: name },
        (_, false) => Action::ResumeChannel { channel: name },
    }
}

/// The operator's token: the first of the token file, or POM_TOKEN.
pub(super) fn token(paths: &Paths) -> Result<String> {
    if let Ok(t) = std::env::var("POM_TOKEN")
        && !t.trim().is_empty()
    {
        return Ok(t.trim().to_string());
    }
    let Some(file) = &paths.token_file else {
        anyhow::bail!("control needs a token: set POM_TOKEN or --token-file");
    };
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once(':').map_or(l, |x| x.1).trim().to_string())
        .context("the token file holds no token")
}

/// Sends an action to the daemon's API and prints its answer; exit 1 if refused.
pub(super) fn act(paths: &Paths, action: &Action) -> Result<ExitCode> {
    let token = token(paths)?;
    let body = serde_json::to_vec(action)?;
    let reply = super::http::call(&paths.server, "/api/actions", Some(&token), Some(&body))
        .context("is `pom serve` running?")?;
    let v = reply.json();
    match (reply.status, v.get("outcome").and_then(|o| o.as_str())) {
        (200, _) => {
            println!("{}", v["message"].as_str().unwrap_or("done"));
            Ok(ExitCode::SUCCESS)
        }
        (_, Some("refused")) => {
            println!("refused: {}", v["reason"].as_str().unwrap_or_default());
            Ok(ExitCode::from(1))
        }
        (status, _) => anyhow::bail!(
            "HTTP {status}: {}",
            v["error"]
                .as_str()
                .map_or_else(|| reply.text(), str::to_string)
        ),
    }
}

pub(super) fn reinject(paths: &Paths, a: &ReinjectArgs) -> Result<ExitCode> {
    let content = match &a.fixed {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading {} (XML is text)", f.display()))?,
        ),
        None => None,
    };
    act(
        paths,
        &Action::Reinject {
            file: a.id.clone(),
            content,
        },
    )
}
