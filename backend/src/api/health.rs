//! Liveness and readiness.

use std::sync::Arc;

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};

use super::models::{Health, Readiness};
use super::ApiTags;
use crate::engine::Engine;
use crate::http_error::{ApiError, ApiResult};

pub struct HealthApi {
    pub engine: Arc<Engine>,
}

#[derive(ApiResponse)]
enum Ready {
    /// Postgres and the runner answer.
    #[oai(status = 200)]
    Ok(Json<Readiness>),
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Is the backend alive
    #[oai(path = "/health", method = "get", operation_id = "health")]
    async fn health(&self) -> Json<Health> {
        Json(Health {
            status: "ok".into(),
        })
    }

    /// Can the backend serve: Postgres and the runner reachable
    #[oai(path = "/ready", method = "get", operation_id = "ready")]
    async fn ready(&self) -> ApiResult<Ready> {
        let database = self.engine.reads().database_answers().await;
        let runner = self.engine.runner_answers().await;
        if !(database && runner) {
            return Err(ApiError::unavailable(format!(
                "not ready: database {}, runner {}",
                if database { "up" } else { "down" },
                if runner { "up" } else { "down" }
            )));
        }
        Ok(Ready::Ok(Json(Readiness {
            status: "ready".into(),
            database,
            runner,
        })))
    }
}
