//! What an operator reads at INFO: the start, the address, sessions and
//! runs coming and going, and errors; not every request of a polling
//! dashboard, not the configuration, and no colour codes in a file.

use crate::helpers::TestStack;

#[tokio::test]
async fn at_info_the_backend_logs_lifecycles_not_requests_or_its_configuration() {
    let stack = TestStack::start_configured(true, &[("RUST_LOG", "info")]).await;
    for _ in 0..20 {
        assert_eq!(stack.get("/api/sessions").await.status(), 200);
    }
    let (session, _) = stack.ready_session().await;
    let run = stack.prompt(&session, "hello").await;
    stack.events(&run).await;
    // Logged after everything above, so everything above is in the log.
    stack
        .log
        .wait_for(|line| line.contains("run finished"))
        .await;

    let lines = stack.log.lines();
    let has = |text: &str| lines.iter().any(|l| l.contains(text));
    assert!(has("backend listening"), "{lines:#?}");
    assert!(has("session created"), "{lines:#?}");
    assert!(has("run started"), "{lines:#?}");
    assert!(!has(" request status="), "requests are DEBUG: {lines:#?}");
    assert!(!has("database_url") && !has("Config {"), "{lines:#?}");
    assert!(
        !has("\u{1b}["),
        "colour codes in a log that is not a terminal"
    );
}
