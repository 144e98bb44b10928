//! `ferry upgrade status` in text: what `ac adm upgrade status` shows, per cluster.

use super::Shadow;
use crate::report::aligned;

/// History entries shown.
const HISTORY: usize = 5;

/// An empty cell as `-`.
pub(crate) fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

fn indent(table: String) -> String {
    table.lines().map(|l| format!("  {l}\n")).collect()
}

impl Shadow {
    pub fn render(&self) -> String {
        let mut s = format!("Cluster {}\n", self.cluster);
        let rows = [
            ["Current version".to_string(), or_dash(&self.current)],
            ["Desired version".into(), or_dash(&self.desired)],
            [
                "Available updates".into(),
                or_dash(&self.available_updates.join(", ")),
            ],
        ];
        s.push_str(&indent(aligned(&rows)));
        s.push_str("\nConditions\n");
        let wanted = [
            "PreflightReady",
            "Ready",
            "Reconciling",
            "Degraded",
            "Stalled",
        ];
        let mut rows = vec![[
            "TYPE".to_string(),
            "STATUS".into(),
            "REASON".into(),
            "MESSAGE".into(),
        ]];
        for c in self
            .conditions
            .iter()
            .filter(|c| wanted.contains(&c.kind.as_str()))
        {
            rows.push([
                c.kind.clone(),
                c.status.clone(),
                or_dash(&c.reason),
                or_dash(&c.message),
            ]);
        }
        if rows.len() == 1 {
            s.push_str("  (none reported)\n");
        } else {
            s.push_str(&indent(aligned(&rows)));
        }
        s.push_str("\nPreflight ");
        s.push_str(&self.preflight.render());
        s.push_str("\nStages\n");
        if self.stages.is_empty() {
            s.push_str("  (none: the upgrade has not entered execution)\n");
        }
        for st in &self.stages {
            s.push_str(&format!(
                "  {} {} (priority {})\n",
                st.name,
                or_dash(&st.phase),
                st.priority
            ));
            let mut rows = vec![[
                "OPERATION".to_string(),
                "ACTION".into(),
                "VERSION".into(),
                "PHASE".into(),
            ]];
            for o in &st.operations {
                rows.push([
                    o.name.clone(),
                    or_dash(&o.action),
                    format!(
                        "{} -> {}",
                        or_dash(&o.current_version),
                        or_dash(&o.target_version)
                    ),
                    or_dash(&o.phase),
                ]);
            }
            if !st.operations.is_empty() {
                s.push_str(&indent(indent(aligned(&rows))));
            }
        }
        s.push_str("\nHistory\n");
        let mut rows = vec![[
            "VERSION".to_string(),
            "STATE".into(),
            "STARTED".into(),
            "COMPLETED".into(),
        ]];
        for h in self.history.iter().take(HISTORY) {
            rows.push([
                or_dash(&h.version),
                or_dash(&h.state),
                or_dash(&h.started_time),
                or_dash(&h.completion_time),
            ]);
        }
        if rows.len() == 1 {
            s.push_str("  (none)\n");
        } else {
            s.push_str(&indent(aligned(&rows)));
        }
        s
    }
}
