//! What `kubectl fledge` prints: a table of Rollouts (`get`), one Rollout in full (`status`:
//! where it is, the last analysis with its evidence, the last command, the latest decisions), and
//! the evidence behind a failure (`wait`). Text from the Rollout's JSON; nothing decided here.

use serde_json::Value;

/// Decisions shown by `status` and after a failed `wait`.
const RECENT: usize = 5;

/// `get`: one line per Rollout under a header, columns aligned.
pub fn table(rollouts: &[Value], namespaces: bool) -> String {
    let mut rows = vec![
        vec![
            "NAMESPACE",
            "NAME",
            "PHASE",
            "STEP",
            "CANARY%",
            "VERDICT",
            "LAST COMMAND",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>(),
    ];
    for r in rollouts {
        let s = &r["status"];
        rows.push(vec![
            text(&r["metadata"]["namespace"]),
            text(&r["metadata"]["name"]),
            text(&s["phase"]),
            text(&s["step"]),
            s["canaryWeight"]
                .as_u64()
                .map_or("-".into(), |w| w.to_string()),
            text(&s["lastAnalysis"]["verdict"]),
            last_command(s).unwrap_or_else(|| "-".into()),
        ]);
    }
    if !namespaces {
        for row in &mut rows {
            row.remove(0);
        }
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// `status`: one Rollout for a person.
pub fn status(rollout: &Value) -> String {
    let s = &rollout["status"];
    let mut out = format!("{}\n", crate::cli::summary_line(rollout));
    if let Some(a) = s["lastAnalysis"].as_object() {
        out.push_str(&format!(
            "last analysis ({}): {} — {}\n",
            text(&a["at"]),
            text(&a["verdict"]),
            text(&a["reason"])
        ));
        if let Some(hold) = a["hold"].as_str() {
            out.push_str(&format!("  holding: {hold}\n"));
        }
    }
    if let Some(line) = last_command(s) {
        out.push_str(&format!(
            "last command: {line}: {}\n",
            text(&s["lastCommand"]["reason"])
        ));
    }
    if let Some(problem) = s["commandProblem"].as_str() {
        out.push_str(&format!("command annotation: {problem}\n"));
    }
    out.push_str(&recent(s));
    out
}

/// After a failed `wait`: why it ended, with the analysis's numbers.
pub fn evidence(rollout: &Value) -> String {
    let s = &rollout["status"];
    let mut out = format!(
        "{} ended {}: {}\n",
        key(rollout),
        text(&s["phase"]),
        text(&s["reason"])
    );
    if let Some(a) = s["lastAnalysis"].as_object() {
        out.push_str(&format!(
            "last analysis of step {} at {}: {} — {}\n",
            a.get("step").and_then(Value::as_u64).map_or(0, |s| s + 1),
            text(&a["at"]),
            text(&a["verdict"]),
            text(&a["reason"])
        ));
        if let Some(e) = a.get("evidence").filter(|e| !e.is_null()) {
            let pretty = serde_json::to_string_pretty(e).unwrap_or_default();
            out.push_str("evidence:\n");
            for line in pretty.lines() {
                out.push_str("  ");
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out.push_str(&recent(s));
    out
}

fn recent(status: &Value) -> String {
    let Some(history) = status["history"].as_array().filter(|h| !h.is_empty()) else {
        return String::new();
    };
    let mut out = String::from("recent decisions:\n");
    for d in &history[history.len().saturating_sub(RECENT)..] {
        out.push_str(&format!("  {}  {}\n", text(&d["at"]), text(&d["reason"])));
    }
    out
}

/// `promote (command 3) by alice: Applied`.
fn last_command(status: &Value) -> Option<String> {
    let c = status["lastCommand"].as_object()?;
    Some(format!(
        "{} (command {}) by {}: {}",
        text(&c["command"]),
        c.get("id").and_then(Value::as_u64).unwrap_or(0),
        text(&c["by"]),
        text(&c["outcome"])
    ))
}

fn key(rollout: &Value) -> String {
    format!(
        "{}/{}",
        text(&rollout["metadata"]["namespace"]),
        text(&rollout["metadata"]["name"])
    )
}

fn text(v: &Value) -> String {
    match v.as_str() {
        Some(s) if !s.is_empty() => s.to_owned(),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    fn rollout(name: &str, phase: &str) -> serde_json::Value {
        json!({
            "metadata": { "namespace": "shop", "name": name },
            "status": {
                "phase": phase, "step": "2/3", "canaryWeight": 25, "currentStep": 1,
                "totalSteps": 3, "reason": "analysis failed at step 2/3: error rate",
                "lastAnalysis": {
                    "at": "2027-01-15T08:00:00Z", "step": 1, "verdict": "Fail",
                    "reason": "error rate 4.1% > 1%", "evidence": { "canaryRequests": 900 },
                },
                "lastCommand": {
                    "command": "pause", "id": 3, "by": "alice", "at": "2027-01-15T07:59:00Z",
                    "outcome": "Applied", "reason": "paused",
                },
                "history": [{ "at": "2027-01-15T08:00:00Z", "reason": "rolled back" }],
            },
        })
    }

    #[test]
    fn the_table_aligns_its_columns() {
        let rows = [
            rollout("reviews", "RolledBack"),
            json!({ "metadata": { "namespace": "shop", "name": "ratings-long" } }),
        ];
        assert_eq!(
            super::table(&rows, false),
            "NAME           PHASE        STEP   CANARY%   VERDICT   LAST COMMAND\n\
             reviews        RolledBack   2/3    25        Fail      pause (command 3) by alice: Applied\n\
             ratings-long   -            -      -         -         -\n"
        );
        assert!(super::table(&rows, true).starts_with("NAMESPACE   NAME"));
    }

    #[test]
    fn the_evidence_names_the_failed_check_and_its_numbers() {
        let text = super::evidence(&rollout("reviews", "RolledBack"));
        for part in [
            "shop/reviews ended RolledBack: analysis failed at step 2/3: error rate\n",
            "last analysis of step 2 at 2027-01-15T08:00:00Z: Fail — error rate 4.1% > 1%\n",
            "evidence:\n  {\n    \"canaryRequests\": 900\n  }\n",
            "recent decisions:\n  2027-01-15T08:00:00Z  rolled back\n",
        ] {
            assert!(text.contains(part), "{part:?} in {text}");
        }
    }
}
