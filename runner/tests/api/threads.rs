//! A full thread table: idle threads make room, busy ones never do, and
//! idle threads are released after their idle time.

use std::time::Duration;

use scripted_model::Script;
use serde_json::{json, Value};

use crate::helpers::TestRunner;

/// A script whose "hold" prompt runs a long command carrying `marker`, so a
/// run stays active until it is cancelled.
fn holding_script(marker: &str) -> Script {
    Script::from_json(
        &json!({"turns": [
            {"when": "hold", "steps": [
                [{"exec": format!("sleep 30 # {marker}")}],
                [{"message": "held"}]]},
            {"when": "", "steps": [[{"message": "You said: {{prompt}}"}]]}
        ]})
        .to_string(),
    )
    .unwrap()
}

async fn thread_status(runner: &TestRunner, thread: &str) -> u16 {
    runner
        .client
        .get(runner.url(&format!("/threads/{thread}")))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Starts a run that stays active, and waits until its command runs.
async fn hold(runner: &TestRunner, thread: &str) -> String {
    let run = runner.start_run(thread, "please hold").await;
    runner
        .subscribe(&run, None)
        .await
        .until(|e| e.label() == "item.started:command_execution")
        .await;
    run
}

async fn cancel(runner: &TestRunner, run: &str) {
    runner.post(&format!("/runs/{run}/cancel"), json!({})).await;
    assert_eq!(
        runner.events(run).await.last().unwrap().event,
        "run.cancelled"
    );
}

#[tokio::test]
async fn a_full_table_releases_the_least_recently_used_idle_thread_never_a_busy_one() {
    let marker = format!("HOLD_{}", uuid::Uuid::new_v4().simple());
    let runner = TestRunner::start_with(
        |_| holding_script(&marker),
        |config| config.limits.max_threads = 2,
    )
    .await;
    let busy = runner.repo_thread().await;
    let busy_run = hold(&runner, &busy).await;
    let idle = runner.repo_thread().await;
    let done = runner.start_run(&idle, "hello").await;
    assert_eq!(
        runner.events(&done).await.last().unwrap().event,
        "run.completed"
    );

    // The busy thread is the least recently used, yet the idle one goes.
    let third = runner.repo_thread().await;

    assert_eq!(thread_status(&runner, &idle).await, 404);
    assert_eq!(thread_status(&runner, &busy).await, 200);
    assert_eq!(thread_status(&runner, &third).await, 200);
    let third_run = hold(&runner, &third).await;

    let refused = runner
        .post("/threads", json!({"workingDirectory": runner.repo}))
        .await;
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "too_many_requests");
    let unknown = runner
        .post("/runs", json!({"threadId": idle, "prompt": "hello"}))
        .await;
    assert_eq!(unknown.status(), 404);

    cancel(&runner, &busy_run).await;
    cancel(&runner, &third_run).await;
    let fourth = runner.repo_thread().await;
    assert_eq!(thread_status(&runner, &fourth).await, 200);
}

#[tokio::test]
async fn idle_threads_are_released_after_their_idle_time_and_busy_ones_stay() {
    let marker = format!("HOLD_{}", uuid::Uuid::new_v4().simple());
    let runner = TestRunner::start_with(
        |_| holding_script(&marker),
        |config| config.limits.thread_idle = Duration::from_millis(300),
    )
    .await;
    let busy = runner.repo_thread().await;
    let busy_run = hold(&runner, &busy).await;
    let idle = runner.repo_thread().await;

    let deadline = tokio::time::Instant::now() + test_support::HANG_GUARD;
    while thread_status(&runner, &idle).await != 404 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the idle thread was never released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert_eq!(thread_status(&runner, &busy).await, 200);
    cancel(&runner, &busy_run).await;
}
