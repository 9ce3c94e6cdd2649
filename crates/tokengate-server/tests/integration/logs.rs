//! Every test's logs are captured in one buffer, and every password and
//! token the tests handle is remembered; each test ends by checking that
//! no log line so far contains any of them.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Mutex, Once};

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static SECRETS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
static INIT: Once = Once::new();

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut logs) = LOGS.lock() {
            logs.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn init() {
    INIT.call_once(|| {
        tokengate_server::telemetry::init("json", "debug,sqlx=warn,hyper=warn", || Capture);
    });
}

/// Remembers a value that must never be logged.
pub fn remember(secret: &str) {
    if secret.len() >= 8 {
        SECRETS.lock().expect("secrets").insert(secret.to_owned());
    }
}

/// The captured log text so far.
pub fn text() -> String {
    String::from_utf8_lossy(&LOGS.lock().expect("logs")).into_owned()
}

/// Fails if any remembered secret appears in the logs.
pub fn assert_clean() {
    let logs = text();
    let secrets = SECRETS.lock().expect("secrets");
    for secret in secrets.iter() {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret appeared in the logs: {}…",
            &secret[..6]
        );
        // The signature part of a JWT alone is also a leak.
        if let Some((_, sig)) = secret.rsplit_once('.') {
            assert!(
                sig.len() < 16 || !logs.contains(sig),
                "a token signature appeared in the logs"
            );
        }
    }
}
