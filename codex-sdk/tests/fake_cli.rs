//! The SDK against fake `codex` executables (shell scripts) that print odd
//! output: malformed lines, unknown types, a crash mid-stream, a hang. The
//! end-to-end behaviour with the real CLI is tested in the runner's tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use codex_sdk::{
    ApiKey, Codex, CodexOptions, Error, EventLine, ItemDetails, ThreadEvent, ThreadOptions,
};
use futures_util::StreamExt;

struct Fake {
    dir: tempfile::TempDir,
    path: PathBuf,
}

/// A fake CLI whose body is the given shell script.
fn fake(script: &str) -> Fake {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("codex");
    std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    Fake { dir, path }
}

fn codex(path: &Path) -> Codex {
    Codex::new(CodexOptions {
        codex_path: Some(path.to_path_buf()),
        ..Default::default()
    })
}

/// The typed events of a run (and its error, if any).
async fn collect(thread: &codex_sdk::Thread, input: &str) -> Vec<Result<ThreadEvent, Error>> {
    thread
        .run_streamed(input)
        .map(|event| event.map(|event| event.into_parts().0))
        .collect()
        .await
}

/// The events of a run as the SDK hands them out: line and parse.
async fn collect_lines(thread: &codex_sdk::Thread, input: &str) -> Vec<EventLine> {
    thread
        .run_streamed(input)
        .map(Result::unwrap)
        .collect()
        .await
}

#[tokio::test]
async fn args_stdin_and_environment_reach_the_cli() {
    let fake = fake(
        r#"read -r prompt
args=$(printf '%s' "$*" | sed 's/"/\\"/g')
names=$(awk 'BEGIN { for (name in ENVIRON) if (name != "PWD") print name }' | sort | tr '\n' ' ')
printf '{"type":"probe","args":"%s","prompt":"%s","key":"%s","home":"%s","git":"%s %s","env":"%s"}\n' "$args" "$prompt" "$CODEX_API_KEY" "$CODEX_HOME" "$GIT_CONFIG_GLOBAL" "$GIT_CONFIG_NOSYSTEM" "$names""#,
    );
    let codex = Codex::new(CodexOptions {
        codex_path: Some(fake.path.clone()),
        api_key: Some(ApiKey::new("sk-test")),
        ..Default::default()
    });
    let thread = codex.resume_thread(
        "0199-abc",
        ThreadOptions {
            working_directory: Some("/w".into()),
            skip_git_repo_check: true,
            codex_home: Some(fake.dir.path().join("home")),
            ..Default::default()
        },
    );
    let events = collect(&thread, "hello there").await;
    let [Ok(ThreadEvent::Unknown(probe))] = events.as_slice() else {
        panic!("expected one probe event, got {events:?}");
    };
    assert_eq!(
        probe["args"],
        "exec --experimental-json --cd /w --skip-git-repo-check \
         --config shell_environment_policy.inherit=\"all\" \
         --config shell_environment_policy.ignore_default_excludes=false \
         --config shell_environment_policy.exclude=[\"*KEY*\",\"*SECRET*\",\"*TOKEN*\",\
         \"*PASSWORD*\",\"*CREDENTIAL*\",\"CODEX_*\",\"OPENAI_*\",\"DATABASE_URL\"] \
         --config shell_environment_policy.include_only=[\"PATH\",\"HOME\",\"USER\",\
         \"LOGNAME\",\"SHELL\",\"LANG\",\"LC_*\",\"TZ\",\"TERM\",\"TMPDIR\",\"TMP\",\"TEMP\",\"CODEX_SDK_OWNER\",\"CODEX_SDK_RUN\"] \
         --config projects={\"/w\"={trust_level=\"untrusted\"}} \
         resume 0199-abc"
    );
    assert_eq!(probe["prompt"], "hello there");
    assert_eq!(probe["git"], "/dev/null 1");
    assert_eq!(probe["key"], "sk-test");
    assert_eq!(
        probe["home"],
        fake.dir.path().join("home").display().to_string()
    );
    // The test process has variables of its own outside the allow-list
    // (cargo's `CARGO_*` at least, `DATABASE_URL` when exported): none of
    // them reaches the CLI. (`PWD` is left out above: the fake's own shell
    // exports it.)
    let inherited = [
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
        "TERM",
    ];
    assert!(
        std::env::vars_os().any(|(name, _)| !inherited.iter().any(|allowed| name == *allowed)),
        "the test needs a variable of its own outside the allow-list"
    );
    let mut expected: Vec<String> = inherited
        .iter()
        .filter(|name| std::env::var_os(name).is_some())
        .map(|name| (*name).to_owned())
        .chain(
            [
                "CODEX_API_KEY",
                "CODEX_HOME",
                "CODEX_INTERNAL_ORIGINATOR_OVERRIDE",
                // The CLI's own git calls read no global or system config.
                "GIT_CONFIG_GLOBAL",
                "GIT_CONFIG_NOSYSTEM",
            ]
            .map(String::from),
        )
        .collect();
    expected.sort();
    assert_eq!(
        probe["env"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        expected,
        "only the allow-list of the caller's environment reaches the CLI"
    );
}

#[tokio::test]
async fn thread_id_is_taken_from_thread_started() {
    let fake = fake(r#"echo '{"type":"thread.started","thread_id":"t-42"}'"#);
    let thread = codex(&fake.path).start_thread(ThreadOptions::default());
    assert_eq!(thread.id(), None);
    let events = collect(&thread, "x").await;
    assert_eq!(events.len(), 1);
    assert_eq!(thread.id().as_deref(), Some("t-42"));
}

#[tokio::test]
async fn unknown_event_and_item_types_pass_through() {
    let fake = fake(
        r#"echo '{"type":"thread.renamed","name":"n"}'
echo ''
echo '{"type":"item.completed","item":{"id":"i","type":"hologram","x":1}}'"#,
    );
    let thread = codex(&fake.path).start_thread(ThreadOptions::default());
    let events: Vec<ThreadEvent> = collect(&thread, "x")
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].event_type(), "thread.renamed");
    let ThreadEvent::ItemCompleted { item } = &events[1] else {
        panic!("expected item.completed, got {:?}", events[1]);
    };
    assert!(matches!(item.details, ItemDetails::Unknown(_)));
}

#[tokio::test]
async fn a_field_the_sdk_does_not_model_reaches_the_consumer_verbatim() {
    // A known event type and a known item type, each with a field a newer
    // CLI might add, its keys in an order serde would not write them.
    let started = r#"{"type":"thread.started","thread_id":"t-7","zz_added":{"b":[1,2],"a":null}}"#;
    let item = r#"{"type":"item.completed","item":{"id":"i","type":"agent_message","text":"hi","annotations":[{"kind":"cite"}]},"extra":1.50}"#;
    let fake = fake(&format!("echo '{started}'\necho '{item}'"));
    let thread = codex(&fake.path).start_thread(ThreadOptions::default());

    let events = collect_lines(&thread, "x").await;

    let lines: Vec<&str> = events.iter().map(EventLine::line).collect();
    assert_eq!(lines, [started, item]);
    assert_eq!(
        events[0].event(),
        &ThreadEvent::ThreadStarted {
            thread_id: "t-7".into()
        }
    );
    let ThreadEvent::ItemCompleted { item } = events[1].event() else {
        panic!("expected item.completed, got {:?}", events[1]);
    };
    assert_eq!(
        item.details,
        ItemDetails::AgentMessage { text: "hi".into() }
    );
    assert_eq!(thread.id().as_deref(), Some("t-7"));
}

#[tokio::test]
async fn malformed_line_is_a_typed_error() {
    let fake = fake(
        r#"echo '{"type":"turn.started"}'
echo 'this is not json'
sleep 30"#,
    );
    let thread = codex(&fake.path).start_thread(ThreadOptions::default());
    let events = collect(&thread, "x").await;
    assert_eq!(events.len(), 2);
    assert!(matches!(events[0], Ok(ThreadEvent::TurnStarted)));
    let Err(Error::MalformedLine { line }) = &events[1] else {
        panic!("expected a malformed line error, got {:?}", events[1]);
    };
    assert_eq!(line, "this is not json");
}

#[tokio::test]
async fn crash_mid_stream_carries_the_stderr_tail() {
    let fake = fake(
        r#"echo '{"type":"turn.started"}'
echo 'panicked at core/src/lib.rs: boom' >&2
exit 3"#,
    );
    let thread = codex(&fake.path).start_thread(ThreadOptions::default());
    let events = collect(&thread, "x").await;
    assert_eq!(events.len(), 2);
    let Err(Error::Exited {
        code: Some(3),
        status,
        stderr_tail,
    }) = &events[1]
    else {
        panic!("expected an exit with code 3, got {:?}", events[1]);
    };
    assert_eq!(status, "exit status: 3");
    assert_eq!(stderr_tail, "panicked at core/src/lib.rs: boom");
}

#[tokio::test]
async fn missing_executable_is_a_spawn_error() {
    let thread = codex(Path::new("/nonexistent/codex")).start_thread(ThreadOptions::default());
    let events = collect(&thread, "x").await;
    assert!(matches!(events.as_slice(), [Err(Error::Spawn { .. })]));
}

#[tokio::test]
async fn turn_failed_makes_run_an_error_and_run_collects_the_turn() {
    let ok = fake(
        r#"echo '{"type":"thread.started","thread_id":"t"}'
echo '{"type":"item.completed","item":{"id":"a","type":"agent_message","text":"first"}}'
echo '{"type":"item.completed","item":{"id":"b","type":"agent_message","text":"final"}}'
echo '{"type":"turn.completed","usage":{"input_tokens":5,"cached_input_tokens":0,"output_tokens":2}}'"#,
    );
    let turn = codex(&ok.path)
        .start_thread(ThreadOptions::default())
        .run("x")
        .await
        .unwrap();
    assert_eq!(turn.final_response, "final");
    assert_eq!(turn.items.len(), 2);
    assert_eq!(turn.usage.unwrap().input_tokens, 5);

    let failing = fake(r#"echo '{"type":"turn.failed","error":{"message":"quota"}}'"#);
    let error = codex(&failing.path)
        .start_thread(ThreadOptions::default())
        .run("x")
        .await
        .unwrap_err();
    assert!(matches!(error, Error::TurnFailed { message } if message == "quota"));
}

/// Whether a process is gone (or a zombie waiting to be reaped).
fn gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z')),
    }
}

/// A fake that starts a grandchild, reports both pids, then hangs.
const HANGING: &str = r#"sleep 300 &
echo "{\"type\":\"pids\",\"cli\":\"$$\",\"child\":\"$!\"}"
wait"#;

fn pids(event: &ThreadEvent) -> (String, String) {
    let ThreadEvent::Unknown(value) = event else {
        panic!("expected the pids event, got {event:?}");
    };
    (
        value["cli"].as_str().unwrap().to_owned(),
        value["child"].as_str().unwrap().to_owned(),
    )
}

async fn wait_gone(pid: &str) {
    // The kernel gives no event for another process's death that we could
    // await here; poll /proc, bounded.
    for _ in 0..500 {
        if gone(pid) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("process {pid} is still alive");
}

#[tokio::test]
async fn cancel_ends_the_cli_and_its_process_group() {
    let fake = fake(HANGING);
    let thread = codex(&fake.path).start_thread(ThreadOptions::default());
    let mut stream = thread.run_streamed("x");
    let (cli, child) = pids(stream.next().await.unwrap().unwrap().event());
    stream.cancel();
    assert!(matches!(stream.next().await, Some(Err(Error::Cancelled))));
    assert!(stream.next().await.is_none());
    assert!(gone(&cli), "the CLI must be reaped before the stream ends");
    wait_gone(&child).await;
}

#[tokio::test]
async fn dropping_the_stream_kills_the_process_group() {
    let fake = fake(HANGING);
    let thread = codex(&fake.path).start_thread(ThreadOptions::default());
    let mut stream = thread.run_streamed("x");
    let (cli, child) = pids(stream.next().await.unwrap().unwrap().event());
    drop(stream);
    wait_gone(&cli).await;
    wait_gone(&child).await;
}
