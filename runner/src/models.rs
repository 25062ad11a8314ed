//! `GET /models`: the models the CLI offers, from `model/list` of a
//! short-lived `codex app-server` with the runner's `config.toml` template,
//! kept for [`TTL`] so that a burst of session creations asks once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use codex_sdk::app_server::{AppServer, AppServerOptions};
use serde::Serialize;
use serde_json::{json, Value};

/// How long a list is kept.
pub(crate) const TTL: Duration = Duration::from_secs(300);
/// How long the CLI gets to answer.
const DEADLINE: Duration = Duration::from_secs(30);

/// One model, as `GET /models` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Model {
    pub id: String,
    pub display_name: String,
    pub description: String,
    pub is_default: bool,
    pub default_reasoning_effort: Option<String>,
    pub supported_reasoning_efforts: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ModelList {
    pub models: Vec<Model>,
}

pub(crate) struct Catalog {
    codex_path: PathBuf,
    /// A `CODEX_HOME` of its own, with the runner's template.
    home: PathBuf,
    template: Option<String>,
    api_key: Option<codex_sdk::ApiKey>,
    cached: tokio::sync::Mutex<Option<(Instant, Arc<ModelList>)>>,
}

impl Catalog {
    pub(crate) fn new(
        codex_path: PathBuf,
        home: PathBuf,
        template: Option<String>,
        api_key: Option<codex_sdk::ApiKey>,
    ) -> Self {
        Self {
            codex_path,
            home,
            template,
            api_key,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// The list, from the cache or from the CLI. One caller asks the CLI;
    /// the others wait for its answer.
    pub(crate) async fn list(&self) -> anyhow::Result<Arc<ModelList>> {
        let mut cached = self.cached.lock().await;
        if let Some((at, list)) = cached.as_ref() {
            if at.elapsed() < TTL {
                return Ok(list.clone());
            }
        }
        let list = Arc::new(tokio::time::timeout(DEADLINE, self.ask()).await??);
        *cached = Some((Instant::now(), list.clone()));
        Ok(list)
    }

    async fn ask(&self) -> anyhow::Result<ModelList> {
        std::fs::create_dir_all(&self.home)?;
        if let Some(template) = &self.template {
            std::fs::write(self.home.join("config.toml"), template)?;
        }
        let mut env = BTreeMap::new();
        env.insert("PATH".to_owned(), std::env::var("PATH").unwrap_or_default());
        env.insert("HOME".to_owned(), self.home.display().to_string());
        env.insert("CODEX_HOME".to_owned(), self.home.display().to_string());
        if let Some(key) = &self.api_key {
            env.insert("CODEX_API_KEY".to_owned(), key.expose().to_owned());
        }
        let (server, _incoming) = AppServer::spawn(AppServerOptions {
            codex_path: self.codex_path.clone(),
            env,
            client_name: "repo-runner".into(),
            client_version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
        .await?;
        let answer: Value = server.request("model/list", json!({})).await?;
        server.shutdown().await;
        Ok(parse(&answer))
    }
}

/// The visible models of a `model/list` answer.
fn parse(answer: &Value) -> ModelList {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let models = answer["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["hidden"] != true)
        .map(|m| Model {
            id: text(&m["id"]),
            display_name: text(&m["displayName"]),
            description: text(&m["description"]),
            is_default: m["isDefault"] == true,
            default_reasoning_effort: m["defaultReasoningEffort"].as_str().map(str::to_owned),
            supported_reasoning_efforts: m["supportedReasoningEfforts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["reasoningEffort"].as_str().map(str::to_owned))
                .collect(),
        })
        .filter(|m| !m.id.is_empty())
        .collect();
    ModelList { models }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_keeps_visible_models_and_their_efforts() {
        let list = parse(&json!({"data": [
            {"id": "a", "displayName": "A", "description": "d", "isDefault": true,
             "defaultReasoningEffort": "low",
             "supportedReasoningEfforts": [{"reasoningEffort": "low"}, {"reasoningEffort": "high"}]},
            {"id": "b", "hidden": true},
            {"displayName": "no id"}
        ]}));
        assert_eq!(
            list.models,
            [Model {
                id: "a".into(),
                display_name: "A".into(),
                description: "d".into(),
                is_default: true,
                default_reasoning_effort: Some("low".into()),
                supported_reasoning_efforts: vec!["low".into(), "high".into()],
            }]
        );
    }
}
