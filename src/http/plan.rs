//! `POST /v1/query_plan`: which resources of a type may a principal act on, as a
//! filter (see docs/query-plan.md).

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::error::ApiError;
use super::{json_response, read_json, Ctx, Reply};
use crate::plan::{plan, PlanError, PlanRequest};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryPlanRequest {
    pub principal: String,
    pub action: String,
    pub resource_type: String,
    #[serde(default)]
    pub context: Option<serde_json::Value>,
}

pub async fn query_plan(ctx: &Ctx, req: Request<Incoming>) -> Reply {
    let body: QueryPlanRequest = read_json(ctx, req).await?;
    let request = PlanRequest::parse(
        &body.principal,
        &body.action,
        &body.resource_type,
        body.context,
    )
    .map_err(|e| ApiError::from(&e))?;
    let snapshot = ctx.app.model.load();
    let Some(data) = snapshot.entities.as_ref() else {
        return Err(ApiError::from(&PlanError::NoEntityData));
    };
    // A plan decides over every entity of the data: the whole set, built on the first
    // plan against this snapshot.
    let entities = data
        .whole(&snapshot.schema)
        .map_err(|m| ApiError::from(&PlanError::Entities(m)))?;
    let answer = plan(&snapshot, &entities, &request).map_err(|e| ApiError::from(&e))?;
    let text = serde_json::to_string(&answer)
        .map_err(|e| ApiError::from(&PlanError::Evaluation(format!("unencodable plan: {e}"))))?;
    Ok(json_response(StatusCode::OK, text))
}
