//! Who gets into a private cluster: the security audit's attack replayed. It
//! connected over TCP to 127.0.0.1 as `postgres` without a password (trust
//! authentication) and could write anything. Each test starts a real cluster
//! in a folder of its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use local_postgres::{LocalPostgres, PASSWORD_FILE};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;
use url::Url;

/// A folder for a cluster; whatever server runs in it is stopped, and the
/// folder removed, with the value.
struct Folder {
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Folder {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            data: dir.path().join("pg"),
            _dir: dir,
        }
    }

    /// A cluster made and started the way local-postgres did before
    /// passwords: `initdb --auth=trust`, listening on 127.0.0.1.
    fn old_trust_cluster(&self) -> u16 {
        std::fs::create_dir(&self.data).unwrap();
        if let Some(user) = server_user() {
            // As root, the server runs as `postgres`, which must reach it.
            std::fs::set_permissions(
                self.data.parent().unwrap(),
                std::fs::Permissions::from_mode(0o755),
            )
            .unwrap();
            std::os::unix::fs::chown(&self.data, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .unwrap();
        }
        let data = self.data.display().to_string();
        as_server_user(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let options =
            format!("-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{data}'");
        let log = self.data.join("server.log").display().to_string();
        as_server_user(
            "pg_ctl",
            &["start", "-w", "-D", &data, "-l", &log, "-o", &options],
        );
        port
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = local_postgres::stop_cluster(&self.data);
    }
}

/// `postgres` when we are root, as local-postgres does.
fn server_user() -> Option<nix::unistd::User> {
    nix::unistd::Uid::effective()
        .is_root()
        .then(|| nix::unistd::User::from_name("postgres").unwrap().unwrap())
}

fn as_server_user(program: &str, args: &[&str]) {
    let program = local_postgres::find_bin_dir().unwrap().join(program);
    let mut command = match server_user() {
        Some(user) => {
            let mut command = Command::new("runuser");
            command.args(["-u", &user.name, "--"]).arg(program);
            command
        }
        None => Command::new(program),
    };
    let output = command.args(args).current_dir("/").output().unwrap();
    assert!(output.status.success(), "{output:?}");
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// `url` as `user`, with `password` or none.
fn as_user(url: &str, user: &str, password: Option<&str>) -> String {
    let mut url = Url::parse(url).unwrap();
    url.set_username(user).unwrap();
    url.set_password(password).unwrap();
    url.into()
}

/// The users an attacker would try: `postgres` and the URL's.
fn users(url: &str) -> Vec<String> {
    let mut users = vec![
        "postgres".to_owned(),
        Url::parse(url).unwrap().username().to_owned(),
    ];
    users.dedup();
    users
}

/// Connecting over TCP with no password, or a wrong one, is refused.
async fn assert_refused_without_the_password(url: &str) {
    for user in users(url) {
        // Trust would have let it in: the server asks for a password.
        let error = connect(&as_user(url, &user, None)).await.err().unwrap();
        let cause = std::error::Error::source(&error).map(ToString::to_string);
        assert_eq!(cause.as_deref(), Some("password missing"), "{error:?}");
        let error = connect(&as_user(url, &user, Some("wrong")))
            .await
            .err()
            .unwrap();
        assert_eq!(error.code(), Some(&SqlState::INVALID_PASSWORD), "{error}");
    }
}

async fn select_one(url: &str) -> i32 {
    connect(url)
        .await
        .unwrap()
        .query_one("SELECT 1", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn tcp_logins_without_the_password_are_refused_and_the_url_works() {
    let folder = Folder::new();
    let pg = LocalPostgres::start(&folder.data, None).unwrap();
    let url = pg.url("postgres");

    assert_refused_without_the_password(&url).await;
    assert_eq!(select_one(&url).await, 1);
}

#[tokio::test]
async fn the_password_is_kept_in_the_data_folder_for_its_owner_only() {
    let folder = Folder::new();
    let pg = LocalPostgres::start(&folder.data, None).unwrap();

    let file = folder.data.join(PASSWORD_FILE);
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), nix::unistd::Uid::effective().as_raw());
    let kept = std::fs::read_to_string(&file).unwrap();
    let url = Url::parse(&pg.url("postgres")).unwrap();
    assert_eq!(url.password(), Some(kept.trim()));
    assert_eq!(kept.trim().len(), 64, "32 random bytes in hex");
}

#[tokio::test]
async fn no_tcp_address_is_trusted_and_the_socket_is_in_the_data_folder() {
    let folder = Folder::new();
    let pg = LocalPostgres::start(&folder.data, None).unwrap();

    let hba = std::fs::read_to_string(folder.data.join("pg_hba.conf")).unwrap();
    let rules: Vec<Vec<&str>> = hba
        .lines()
        .map(|line| line.split('#').next().unwrap().split_whitespace().collect())
        .filter(|words: &Vec<&str>| !words.is_empty())
        .collect();
    for rule in &rules {
        match rule[0] {
            "local" => {}
            _ => assert_eq!(rule.last(), Some(&"scram-sha-256"), "{rule:?}"),
        }
    }
    assert!(rules.iter().any(|rule| rule[0] == "host"));
    let socket = format!(".s.PGSQL.{}", pg.port());
    assert!(folder.data.join(&socket).exists());
    assert!(!Path::new("/tmp").join(&socket).exists());
}

#[tokio::test]
async fn a_restart_of_the_same_folder_gives_a_url_that_still_works() {
    let folder = Folder::new();
    let pg = LocalPostgres::start(&folder.data, None).unwrap();
    let (port, url) = (pg.port(), pg.url("postgres"));
    connect(&url)
        .await
        .unwrap()
        .batch_execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
        .await
        .unwrap();
    pg.stop().unwrap();

    let pg = LocalPostgres::start(&folder.data, Some(port)).unwrap();

    assert_eq!(pg.url("postgres"), url);
    let row = connect(&url)
        .await
        .unwrap()
        .query_one("SELECT n FROM kept", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 7);
    assert_refused_without_the_password(&url).await;
}

#[tokio::test]
async fn a_folder_from_before_passwords_gets_one_and_keeps_its_data() {
    let folder = Folder::new();
    let old_port = folder.old_trust_cluster();
    let old_url = format!("postgres://postgres@127.0.0.1:{old_port}/postgres");
    connect(&old_url)
        .await
        .unwrap()
        .batch_execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
        .await
        .unwrap();
    local_postgres::stop_cluster(&folder.data).unwrap();

    let pg = LocalPostgres::start(&folder.data, Some(old_port)).unwrap();
    let url = pg.url("postgres");

    assert_refused_without_the_password(&url).await;
    let row = connect(&url)
        .await
        .unwrap()
        .query_one("SELECT n FROM kept", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 7);
    let meta = std::fs::metadata(folder.data.join(PASSWORD_FILE)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // And the next start reads the password it was given.
    pg.stop().unwrap();
    let pg = LocalPostgres::start(&folder.data, Some(old_port)).unwrap();
    assert_eq!(pg.url("postgres"), url);
    assert_eq!(select_one(&url).await, 1);
}

#[tokio::test]
async fn a_running_server_from_before_passwords_stops_trusting_tcp() {
    let folder = Folder::new();
    let old_port = folder.old_trust_cluster();
    let old_url = format!("postgres://postgres@127.0.0.1:{old_port}/postgres");
    assert_eq!(select_one(&old_url).await, 1, "the old server trusts TCP");

    let pg = LocalPostgres::start(&folder.data, None).unwrap();
    let url = pg.url("postgres");

    assert_eq!(pg.port(), old_port, "the running server is reused");
    assert_refused_without_the_password(&url).await;
    assert_eq!(select_one(&url).await, 1);
}
