//! The platform resources of a package as the report tells them (text and JSON): what was
//! done to each, or `failed` with the error beside it.

use serde::Serialize;

use super::ErrorReport;
use crate::platform::artifacts::{Action, ResourceOutcome};

/// One platform resource of a package on one cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceReport {
    pub kind: String,
    pub name: String,
    pub cluster: String,
    /// The platform (`host[:port]`) the cluster belongs to (primary or DR standby).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub platform: String,
    pub action: ResourceAction,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReport>,
}

/// What the report says of a resource: what was done to it, or `failed` (with the error
/// beside it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceAction {
    Created,
    Updated,
    Unchanged,
    WouldCreate,
    WouldUpdate,
    Failed,
}

impl From<Action> for ResourceAction {
    fn from(a: Action) -> Self {
        match a {
            Action::Created => ResourceAction::Created,
            Action::Updated => ResourceAction::Updated,
            Action::Unchanged => ResourceAction::Unchanged,
            Action::WouldCreate => ResourceAction::WouldCreate,
            Action::WouldUpdate => ResourceAction::WouldUpdate,
        }
    }
}

impl From<&ResourceOutcome> for ResourceReport {
    fn from(o: &ResourceOutcome) -> Self {
        let (action, error) = match &o.result {
            Ok(a) => (ResourceAction::from(*a), None),
            Err(e) => (ResourceAction::Failed, Some(ErrorReport::from(e))),
        };
        ResourceReport {
            kind: o.kind.clone(),
            name: o.name.clone(),
            cluster: o.cluster.clone(),
            platform: String::new(),
            action,
            error,
        }
    }
}
