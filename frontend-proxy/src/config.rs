//! The proxy's configuration, read once from the environment.

use figment::providers::{Env, Serialized};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
pub struct Config {
    /// `PROXY_ADDR`: where the dashboard is served.
    pub proxy_addr: String,
    /// `PREVIEW_ADDR`: where sessions' workspaces are served as static
    /// sites, on an origin of their own (see `preview.rs`).
    pub preview_addr: String,
    /// `BACKEND_URL`: where `/api`, `/docs` and `/health` go.
    pub backend_url: String,
    /// `DEMO_MODE`: the dashboard says so (a scripted model drives Codex).
    pub demo_mode: bool,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("proxy_addr", &self.proxy_addr)
            .field("preview_addr", &self.preview_addr)
            .field("backend_url", &self.backend_url)
            .field("demo_mode", &self.demo_mode)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            proxy_addr: "127.0.0.1:9100".into(),
            preview_addr: "127.0.0.1:9104".into(),
            backend_url: "http://127.0.0.1:9101".into(),
            demo_mode: false,
        }
    }
}

impl Config {
    pub fn from_env() -> Result<Self, Box<figment::Error>> {
        let mut config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Env::raw().only(&["PROXY_ADDR", "PREVIEW_ADDR", "BACKEND_URL", "DEMO_MODE"]))
            .extract()
            .map_err(Box::new)?;
        config.backend_url = config.backend_url.trim_end_matches('/').to_owned();
        // The preview reads each session with the grant its address carries
        // and holds no token of its own. One still set is ignored; it reads
        // whatever its user may, so it should not lie around either.
        if std::env::var_os("PREVIEW_TOKEN").is_some_and(|t| !t.is_empty()) {
            tracing::warn!(
                "PREVIEW_TOKEN is set and ignored: previews read each session with a grant of \
                 the dashboard's; unset it and revoke that token (backend admin token revoke ID)"
            );
        }
        Ok(config)
    }
}
