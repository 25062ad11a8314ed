//! The CLI carries out an approved command or file change outside its
//! sandbox, as the runner's user: the third attack run approved its own
//! agent's patch to `~/.gitconfig` and from there ran code in another
//! user's session. A runner that does not allow that
//! (`RUNNER_ALLOW_UNSANDBOXED_APPROVALS`, off by default) declines every
//! approval itself, at once, and says so on the stream; the real CLI then
//! goes on without the action.

use std::path::Path;

use serde_json::json;
use test_support::labels;

use crate::helpers::{SseEvent, TestRunner};

fn script(dir: &Path) -> scripted_model::Script {
    let d = dir.display();
    scripted_model::Script::from_json(
        &json!({"turns": [
            {"when": "command", "steps": [
                [{"exec": format!("touch {d}/outside-command.txt")}],
                [{"message": "tried a command"}]]},
            {"when": "patch", "steps": [
                [{"apply_patch": format!("*** Begin Patch\n*** Add File: {d}/outside-patch.txt\n+x\n*** End Patch\n")}],
                [{"message": "tried a patch"}]]},
            {"when": "inside", "steps": [
                [{"apply_patch": "*** Begin Patch\n*** Add File: inside.txt\n+x\n*** End Patch\n"}],
                [{"message": "tried inside"}]]},
            {"when": "", "steps": [[{"message": "You said: {{prompt}}"}]]}
        ]})
        .to_string(),
    )
    .unwrap()
}

async fn refusing_runner() -> TestRunner {
    // The test configuration leaves RUNNER_ALLOW_UNSANDBOXED_APPROVALS off.
    TestRunner::start_with(script, |config| {
        config.driver = runner::config::DriverMode::AppServer;
    })
    .await
}

fn approvals(events: &[SseEvent]) -> (Vec<&SseEvent>, Vec<&SseEvent>) {
    let of = |name: &str| {
        events
            .iter()
            .filter(|e| e.event == name)
            .collect::<Vec<_>>()
    };
    (of("approval.requested"), of("approval.resolved"))
}

#[tokio::test]
async fn an_approval_that_would_leave_the_sandbox_is_declined_by_the_runner() {
    let runner = refusing_runner().await;
    let dir = runner.root.parent().unwrap().to_path_buf();
    let thread = runner
        .create_thread(json!({"workingDirectory": runner.repo, "approvalPolicy": "untrusted"}))
        .await;

    for prompt in ["command", "patch", "inside"] {
        let run = runner.start_run(&thread, prompt).await;
        // Nobody answers: the run still ends, the runner having answered.
        let events = runner.events(&run).await;

        assert_eq!(
            events.last().unwrap().event,
            "run.completed",
            "{prompt}: {:?}",
            labels(&events)
        );
        let (requested, resolved) = approvals(&events);
        assert_eq!((requested.len(), resolved.len()), (1, 1), "{prompt}");
        let refused = requested[0].data["refused"].as_str().unwrap();
        assert!(
            refused.contains("RUNNER_ALLOW_UNSANDBOXED_APPROVALS"),
            "{refused}"
        );
        assert_eq!(resolved[0].data["decision"], "deny");
        assert_eq!(resolved[0].data["by"], "repo-runner");
        assert_eq!(
            resolved[0].data["approvalId"],
            requested[0].data["approvalId"]
        );
        // Answered already: a person's answer finds nothing waiting.
        let approval = requested[0].data["approvalId"].as_str().unwrap();
        let late = runner
            .post(
                &format!("/runs/{run}/approvals/{approval}"),
                json!({"decision": "approve"}),
            )
            .await;
        assert!(matches!(late.status().as_u16(), 404 | 409), "{prompt}");
    }
    assert!(!dir.join("outside-command.txt").exists());
    assert!(!dir.join("outside-patch.txt").exists());
    assert!(!runner.repo.join("inside.txt").exists());
}

/// Without an asking policy nothing changes: the sandbox decides, and a
/// write outside the workspace fails.
#[tokio::test]
async fn without_approvals_the_sandbox_alone_decides() {
    let runner = refusing_runner().await;
    let dir = runner.root.parent().unwrap().to_path_buf();
    let thread = runner.repo_thread().await;

    for prompt in ["command", "patch"] {
        let run = runner.start_run(&thread, prompt).await;
        let events = runner.events(&run).await;
        assert_eq!(events.last().unwrap().event, "run.completed");
        assert_eq!(approvals(&events), (vec![], vec![]), "{prompt}");
    }
    assert!(!dir.join("outside-command.txt").exists());
    assert!(!dir.join("outside-patch.txt").exists());
}
