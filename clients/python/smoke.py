"""Drives repo-runner with the Python client generated from its OpenAPI spec
(openapi-python-client): create a session, send a prompt, read the run until
it completes, read a file the agent wrote.

Usage: BASE_URL=http://127.0.0.1:9100 API_TOKEN=rr_… REPO_URL=file:///path python smoke.py
(with the generated package `repo_runner_client` on PYTHONPATH).
"""

import os
import sys
import time

from repo_runner_client import AuthenticatedClient
from repo_runner_client.api.files import read_file
from repo_runner_client.api.runs import get_run
from repo_runner_client.api.sessions import create_session, get_session, send_prompt
from repo_runner_client.models import CreateSession, PromptRequest, RunStatus, SessionStatus


def wait(fetch, done, what):
    # The API has no event for these states in a plain HTTP client: poll, bounded.
    for _ in range(600):
        value = fetch()
        if done(value):
            return value
        time.sleep(0.1)
    sys.exit(f"timed out waiting for {what}")


def main():
    # The spec declares bearer authentication, so the generator made an
    # AuthenticatedClient, which sends the token on every call.
    client = AuthenticatedClient(
        base_url=os.environ["BASE_URL"], token=os.environ["API_TOKEN"], raise_on_unexpected_status=True
    )
    session = create_session.sync(client=client, body=CreateSession(repo_url=os.environ["REPO_URL"]))
    assert session.status == SessionStatus.CLONING, session
    session = wait(
        lambda: get_session.sync(session_id=str(session.session_id), client=client),
        lambda s: s.status != SessionStatus.CLONING,
        "the clone",
    )
    assert session.status == SessionStatus.READY, session.error
    accepted = send_prompt.sync(
        session_id=str(session.session_id), client=client, body=PromptRequest(prompt="Please create a file")
    )
    run = wait(
        lambda: get_run.sync(run_id=str(accepted.run_id), client=client),
        lambda r: r.status not in (RunStatus.QUEUED, RunStatus.RUNNING),
        "the run",
    )
    assert run.status == RunStatus.COMPLETED, run.error
    assert run.files.created == ["hello.txt"], run.files
    file = read_file.sync(session_id=str(session.session_id), path="hello.txt", client=client)
    assert file.content == "hello\n", file
    print(f"python client: run {run.run_id} {run.status.value}: {run.final_response!r}; hello.txt read")


if __name__ == "__main__":
    main()
