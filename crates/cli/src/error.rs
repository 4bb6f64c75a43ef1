//! The CLI's error: a message, and a hint saying what to do, printed as `error: ...`.

use std::fmt;

use bypass::ErrorKind;

#[derive(Debug)]
pub(crate) struct CliError {
    message: String,
    hint: Option<String>,
}

impl CliError {
    pub(crate) fn new(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            hint: None,
        }
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> CliError {
        self.hint = Some(hint.into());
        self
    }

    /// Prefixes the message with what was being done.
    pub(crate) fn context(mut self, doing: impl fmt::Display) -> CliError {
        self.message = format!("{doing}: {}", self.message);
        self
    }

    pub(crate) fn print(&self) {
        eprintln!("error: {}", self.message);
        if let Some(h) = &self.hint {
            eprintln!("hint: {h}");
        }
    }
}

/// A hint for the queue-API errors a user can do something about.
fn hint_for(kind: ErrorKind) -> Option<&'static str> {
    Some(match kind {
        ErrorKind::AddressInUse => {
            "another process listens there: choose another port with --listen"
        }
        ErrorKind::ConnectionRefused => {
            "start a server first (bypass echo serve --listen IP:PORT) or check --connect"
        }
        ErrorKind::Config => "see docs/config.toml for every key and its allowed values",
        ErrorKind::Unsupported => "run `bypass doctor` to see what this machine and build support",
        ErrorKind::PermissionDenied => {
            "this needs root or capabilities; `bypass doctor` lists them"
        }
        _ => return None,
    })
}

impl From<bypass::Error> for CliError {
    fn from(e: bypass::Error) -> CliError {
        let err = CliError::new(e.message());
        match hint_for(e.kind()) {
            Some(h) => err.hint(h),
            None => err,
        }
    }
}

impl From<bypass_echo::Error> for CliError {
    fn from(e: bypass_echo::Error) -> CliError {
        let err = CliError::new(e.to_string());
        match e.api_kind().and_then(hint_for) {
            Some(h) => err.hint(h),
            None => err,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
