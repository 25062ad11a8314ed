//! The statuses of sessions and runs. Postgres stores them as text (with a
//! `CHECK` on the column); these types are what the rest of the backend
//! compares, so a misspelt status cannot compile.

use std::error::Error;

use bytes::BytesMut;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};

/// A status Postgres holds that this build does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown status {0:?} in the database")]
pub struct UnknownStatus(String);

macro_rules! text_status {
    ($name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            pub(crate) fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownStatus;

            fn from_str(text: &str) -> Result<Self, UnknownStatus> {
                match text {
                    $($text => Ok(Self::$variant),)+
                    other => Err(UnknownStatus(other.to_owned())),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ToSql for $name {
            fn to_sql(
                &self,
                ty: &Type,
                out: &mut BytesMut,
            ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
                self.as_str().to_sql(ty, out)
            }

            fn accepts(ty: &Type) -> bool {
                <&str as ToSql>::accepts(ty)
            }

            to_sql_checked!();
        }

        impl<'a> FromSql<'a> for $name {
            fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
                Ok(<&str as FromSql>::from_sql(ty, raw)?.parse()?)
            }

            fn accepts(ty: &Type) -> bool {
                <&str as FromSql>::accepts(ty)
            }
        }
    };
}

text_status!(SessionStatus {
    Cloning = "cloning",
    Ready = "ready",
    Failed = "failed",
    Expired = "expired",
});

text_status!(RunStatus {
    Queued = "queued",
    Running = "running",
    Completed = "completed",
    Failed = "failed",
    Cancelled = "cancelled",
});

impl RunStatus {
    /// Queued or running: the run may still change.
    pub(crate) fn is_active(self) -> bool {
        matches!(self, Self::Queued | Self::Running)
    }

    /// It reached an outcome: nothing more will be appended.
    pub(crate) fn has_ended(self) -> bool {
        !self.is_active()
    }
}

impl From<&runner_protocol::Terminal> for RunStatus {
    /// The status a run ends in, by its terminal event.
    fn from(terminal: &runner_protocol::Terminal) -> Self {
        match terminal {
            runner_protocol::Terminal::Completed { .. } => Self::Completed,
            runner_protocol::Terminal::Failed { .. } => Self::Failed,
            runner_protocol::Terminal::Cancelled { .. } => Self::Cancelled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_reads_back_what_it_writes() {
        for status in [
            SessionStatus::Cloning,
            SessionStatus::Ready,
            SessionStatus::Failed,
        ] {
            assert_eq!(status.as_str().parse::<SessionStatus>().unwrap(), status);
        }
        for status in [
            RunStatus::Queued,
            RunStatus::Running,
            RunStatus::Completed,
            RunStatus::Failed,
            RunStatus::Cancelled,
        ] {
            assert_eq!(status.as_str().parse::<RunStatus>().unwrap(), status);
        }
        assert!("paused".parse::<RunStatus>().is_err());
    }
}
