//! `tokengate token sign|verify|decode`.

use std::io::Read;
use std::time::SystemTime;

use serde_json::Value;
use tokengate::{KeyRing, SignOptions, UnixTime, VerifyPolicy};

use super::keyfiles;
use crate::cli::output::stdout_line;
use crate::cli::{Failure, SignArgs, TokenCommand, VerifyArgs};
use crate::infra::files;

/// Longest token `decode` will look at: generous, it is a debugging aid.
const DECODE_MAX_LEN: usize = 64 * 1024;

/// Runs a `token` subcommand.
pub fn run(cmd: TokenCommand) -> Result<(), Failure> {
    match cmd {
        TokenCommand::Sign(args) => sign(args),
        TokenCommand::Verify(args) => verify(args),
        TokenCommand::Decode { token } => decode(&token),
    }
}

fn now() -> UnixTime {
    UnixTime::from_system_time(SystemTime::now())
}

/// The token argument, or standard input for `-`, without surrounding whitespace.
fn read_token(arg: &str) -> Result<String, Failure> {
    let text = if arg == "-" {
        let mut buf = String::new();
        std::io::stdin().read_to_string(&mut buf).map_err(|e| {
            Failure::Input(format!("cannot read the token from standard input: {e}"))
        })?;
        buf
    } else {
        arg.to_owned()
    };
    let token = text.trim().to_owned();
    if token.is_empty() {
        return Err(Failure::Input("no token given".into()));
    }
    Ok(token)
}

fn pretty(v: &Value) -> Result<String, Failure> {
    serde_json::to_string_pretty(v).map_err(|e| Failure::Input(e.to_string()))
}

fn sign(args: SignArgs) -> Result<(), Failure> {
    let key = keyfiles::signing_key(&args.key, args.alg, args.kid.as_deref())?;
    let text = match args.claims.strip_prefix('@') {
        Some(path) => String::from_utf8(files::read(path.as_ref())?)
            .map_err(|_| Failure::Input(format!("{path}: not UTF-8")))?,
        None => args.claims.clone(),
    };
    let claims: Value = serde_json::from_str(&text)
        .map_err(|e| Failure::Input(format!("claims are not valid JSON: {e}")))?;
    if !claims.is_object() {
        return Err(Failure::Input("claims must be a JSON object".into()));
    }
    let options = SignOptions {
        lifetime: args.exp,
        typ: Some(args.typ),
    };
    let token = KeyRing::with_signing_key(key)
        .sign(&claims, &options, now())
        .map_err(|e| Failure::Input(e.to_string()))?;
    stdout_line!("{token}")?;
    Ok(())
}

fn verify(args: VerifyArgs) -> Result<(), Failure> {
    let path = match (&args.key, &args.jwks) {
        (Some(path), _) | (None, Some(path)) => path,
        (None, None) => return Err(Failure::Input("give --key or --jwks".into())),
    };
    let ring = keyfiles::verifying_ring(path, args.alg, args.kid.as_deref())?;
    let mut policy = VerifyPolicy::builder().leeway(args.leeway);
    policy = if args.iss.is_empty() {
        eprintln!("note: iss is not checked (no --iss given)");
        policy.any_issuer()
    } else {
        policy.issuers(args.iss.iter().cloned())
    };
    policy = if args.aud.is_empty() {
        eprintln!("note: aud is not checked (no --aud given)");
        policy.any_audience()
    } else {
        policy.audiences(args.aud.iter().cloned())
    };
    if let Some(typ) = &args.typ {
        policy = policy.typ(typ.clone());
    }
    let policy = policy.build().map_err(|e| Failure::Input(e.to_string()))?;
    let token = read_token(&args.token)?;
    let verified = ring
        .verify::<Value>(&token, &policy, now())
        .map_err(|e| Failure::Rejected(e.to_string()))?;
    stdout_line!("{}", pretty(&verified.claims)?)?;
    Ok(())
}

fn decode(arg: &str) -> Result<(), Failure> {
    let token = read_token(arg)?;
    let decoded = tokengate::dangerous::decode_unverified(&token, DECODE_MAX_LEN)
        .map_err(|e| Failure::Input(e.to_string()))?;
    stdout_line!(
        "UNVERIFIED: the signature and claims have NOT been checked; do not trust this content."
    )?;
    stdout_line!("header:\n{}", pretty(&decoded.header)?)?;
    stdout_line!("claims:\n{}", pretty(&decoded.payload)?)?;
    let now = now().as_secs();
    for name in ["exp", "nbf", "iat"] {
        let Some(t) = decoded.payload.get(name).and_then(Value::as_i64) else {
            continue;
        };
        stdout_line!("{name}: {} ({})", super::rfc3339(t), relative(name, t, now))?;
    }
    Ok(())
}

fn span(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..7_200 => format!("{} min", secs / 60),
        7_200..172_800 => format!("{} h", secs / 3_600),
        _ => format!("{} days", secs / 86_400),
    }
}

fn relative(name: &str, t: i64, now: i64) -> String {
    let ahead = t > now;
    let d = span(t.abs_diff(now));
    match (name, ahead) {
        ("exp", true) => format!("expires in {d}"),
        ("exp", false) => format!("expired {d} ago"),
        ("nbf", true) => format!("not valid for another {d}"),
        ("nbf", false) => format!("valid since {d} ago"),
        (_, true) => format!("{d} in the future"),
        (_, false) => format!("{d} ago"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_naturally() {
        assert_eq!(relative("exp", 1_000, 1_000 + 5 * 60), "expired 5 min ago");
        assert_eq!(relative("exp", 1_000 + 90, 1_000), "expires in 1 min");
        assert_eq!(relative("iat", 1_000, 1_030), "30 s ago");
        assert_eq!(relative("nbf", 10_000, 1_000), "not valid for another 2 h");
        assert_eq!(crate::cli::commands::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(crate::cli::commands::rfc3339(-1), "-1 (before 1970)");
    }
}
