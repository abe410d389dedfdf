//! The demo's `approval` scenario as a test: through the local store, the real agent holds the
//! last step of a healthy canary until the approval service (a webhook) answers 200, then
//! promotes; the chat hook gets Slack-style messages on start and promotion.

use std::time::SystemTime;

use fledge_demo::Scenario;

use crate::support::{config, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_waits_for_the_approval_webhook() {
    let outcome = run(Scenario::Approval).await;
    assert_eq!(outcome.phase, "Succeeded", "{}", outcome.reason);
    let approvals: Vec<_> = outcome
        .hooks
        .iter()
        .filter(|h| h.path == "/approve")
        .collect();
    let statuses: Vec<u16> = approvals.iter().map(|h| h.status).collect();
    assert!(
        statuses.len() >= 3 && statuses[..statuses.len() - 1].iter().all(|s| *s == 403),
        "asked again while not approved: {statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&200), "{statuses:?}");
    assert_eq!(approvals[0].body["event"], "confirmPromotion");
    assert_eq!(approvals[0].body["weights"]["canary"]["percent"], 20);

    // Nothing was promoted before the approval: the switch follows the 200.
    let hold = config(Scenario::Approval).hold;
    let after = Scenario::Approval
        .approval_after(hold)
        .expect("an approval");
    let approved = approvals.last().map(|h| h.at).expect("an approval");
    assert!(approved - approvals[0].at >= after);
    let switched = outcome.switched_at().expect("a switch");
    let approved_at = SystemTime::now() - approved.elapsed();
    assert!(
        switched + std::time::Duration::from_secs(1) >= approved_at,
        "switched {switched:?}, approved {approved_at:?}"
    );

    let chat: Vec<&str> = outcome
        .hooks
        .iter()
        .filter(|h| h.path == "/chat")
        .filter_map(|h| h.body["text"].as_str())
        .collect();
    assert_eq!(chat.len(), 2, "{chat:?}");
    assert!(
        chat[0].starts_with("fledge: shop/reviews started rolling out v2 (stable v1): step 1/1"),
        "{chat:?}"
    );
    assert_eq!(
        chat[1],
        "fledge: shop/reviews promoted v2: v2 is the new stable: every request goes to it"
    );
}
