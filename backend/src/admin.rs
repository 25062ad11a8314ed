//! `backend admin …`: users and API tokens, from the operator's shell.
//!
//! It talks to Postgres directly (`DATABASE_URL`, migrating first like the
//! server), so it works whether or not a backend runs. What a script needs
//! goes to stdout alone (a new token, a new user's id, the user table);
//! what a person needs goes to stderr.

use std::io::Write;

use anyhow::Context;
use clap::{Parser, Subcommand};
use uuid::Uuid;

use crate::auth::secret;
use crate::domain::UserName;
use crate::store::Store;

/// The backend's command line: no subcommand serves.
#[derive(Debug, Parser)]
#[command(
    name = "backend",
    version,
    about = "repo-runner's backend: serves the API (configured by the environment, see docs/CONFIGURATION.md)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage users and API tokens (uses DATABASE_URL)
    Admin {
        #[command(subcommand)]
        what: Admin,
    },
}

#[derive(Debug, Subcommand)]
pub enum Admin {
    /// Users
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// API tokens
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Print a sign-in link for a user: a one-time code that expires in
    /// minutes. The dashboard shows whom it signs in and asks first.
    SigninLink {
        user: String,
        /// The dashboard's address
        #[arg(long, default_value = "http://127.0.0.1:9100/")]
        url: url::Url,
        /// Minutes the code stays usable (at most 60)
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=60))]
        minutes: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user; prints their id
    Add {
        name: String,
        /// An admin sees every user's sessions
        #[arg(long)]
        admin: bool,
    },
    /// List users: id, name, role, live tokens, created
    List,
    /// Set the email of the commits a user makes through the API (without
    /// one: name@BACKEND_COMMIT_EMAIL_DOMAIN); `--clear` removes it
    Email {
        name: String,
        #[arg(required_unless_present = "clear")]
        email: Option<String>,
        #[arg(long, conflicts_with = "email")]
        clear: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token for a user; prints only the token, which is shown this once
    Create { user: String },
    /// List a user's tokens (ids, never the tokens)
    List { user: String },
    /// Revoke a token by id: it, and every browser signed in with it, stop working
    Revoke { id: Uuid },
    /// Read a token on stdin; exit 0 and print its user's name if it is live
    Check,
}

/// Runs one admin command against `database_url`.
pub async fn run(what: Admin, database_url: &str) -> anyhow::Result<()> {
    let store = Store::connect(database_url, 2)
        .await
        .context("cannot connect to Postgres (DATABASE_URL)")?;
    let mut out = std::io::stdout().lock();
    match what {
        Admin::User {
            command: UserCommand::Add { name, admin },
        } => {
            let name = UserName::parse(&name)?;
            let user = store
                .add_user(name.as_str(), admin)
                .await?
                .with_context(|| format!("a user named {} exists already", name.as_str()))?;
            writeln!(out, "{}", user.id)?;
            tracing::info!(user = %user.name, admin, "user added");
        }
        Admin::User {
            command: UserCommand::Email { name, email, clear },
        } => {
            let email = if clear {
                None
            } else {
                let email = email.unwrap_or_default();
                let email = email.trim();
                // What git takes between `<` and `>`: no brackets, no line.
                let fine = email.len() <= 254
                    && email.contains('@')
                    && !email
                        .chars()
                        .any(|c| c.is_control() || c.is_whitespace() || "<>".contains(c));
                anyhow::ensure!(fine, "{email:?} is not an email address git can record");
                Some(email.to_owned())
            };
            anyhow::ensure!(
                store.set_user_email(&name, email.as_deref()).await?,
                "no user is named {name}"
            );
            tracing::info!(user = %name, "commit email set");
        }
        Admin::User {
            command: UserCommand::List,
        } => {
            writeln!(
                out,
                "{:<36}  {:<24}  {:<5}  {:>6}  CREATED",
                "ID", "NAME", "ROLE", "TOKENS"
            )?;
            for summary in store.users().await? {
                let user = summary.user;
                writeln!(
                    out,
                    "{:<36}  {:<24}  {:<5}  {:>6}  {}",
                    user.id,
                    user.name,
                    if user.is_admin { "admin" } else { "user" },
                    summary.live_tokens,
                    user.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                )?;
            }
        }
        Admin::Token {
            command: TokenCommand::Create { user },
        } => {
            let user = find_user(&store, &user).await?;
            let minted = secret::mint(secret::Kind::ApiToken)?;
            let id = store.add_token(user.id, &minted.sha256).await?;
            writeln!(out, "{}", minted.secret)?;
            tracing::info!(user = %user.name, token_id = %id, "token created; it is shown once, above");
        }
        Admin::Token {
            command: TokenCommand::List { user },
        } => {
            let user = find_user(&store, &user).await?;
            writeln!(
                out,
                "{:<36}  {:<23}  {:<23}  LABEL",
                "ID", "CREATED", "REVOKED"
            )?;
            for token in store.tokens_of(user.id).await? {
                let when = |t: chrono::DateTime<chrono::Utc>| {
                    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
                };
                writeln!(
                    out,
                    "{:<36}  {:<23}  {:<23}  {}",
                    token.id,
                    when(token.created_at),
                    token.revoked_at.map(when).unwrap_or_else(|| "-".into()),
                    token.label.as_deref().unwrap_or("-"),
                )?;
            }
        }
        Admin::Token {
            command: TokenCommand::Check,
        } => {
            let mut token = String::new();
            std::io::stdin().read_line(&mut token)?;
            let signed_in = store
                .signed_in_by_token(&secret::hash(token.trim()))
                .await?
                .context("the token is not valid: it is wrong or revoked")?;
            writeln!(out, "{}", signed_in.user.name)?;
        }
        Admin::SigninLink { user, url, minutes } => {
            let user = find_user(&store, &user).await?;
            let code = secret::mint(secret::Kind::SigninCode)?;
            let expires = chrono::Utc::now() + chrono::Duration::minutes(i64::from(minutes));
            store
                .add_signin_code(user.id, &code.sha256, expires)
                .await?;
            // In the fragment, which browsers never send anywhere.
            let mut link = url;
            link.set_fragment(Some(&format!("code={}", code.secret)));
            writeln!(out, "{link}")?;
            tracing::info!(user = %user.name, minutes, "sign-in link made; it works once");
        }
        Admin::Token {
            command: TokenCommand::Revoke { id },
        } => {
            if !store.revoke_token(id).await? {
                anyhow::bail!("no live token has the id {id}");
            }
            tracing::info!(token_id = %id, "token revoked");
        }
    }
    Ok(())
}

async fn find_user(store: &Store, name: &str) -> anyhow::Result<crate::store::UserRow> {
    let name = UserName::parse(name)?;
    store
        .user_by_name(name.as_str())
        .await?
        .with_context(|| format!("no user is named {}", name.as_str()))
}
