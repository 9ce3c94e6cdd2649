//! Parse, don't validate: once an `Email` or a `NewPassword` exists, it is valid.

use std::fmt;

use zeroize::Zeroizing;

/// A normalised email address: trimmed, lower-cased, one `@` with a local
/// part and a dotted domain, at most 254 characters, no whitespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Normalises and checks an address.
    pub fn parse(raw: &str) -> Result<Email, String> {
        let email = raw.trim().to_lowercase();
        let valid = email.len() <= 254
            && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            && match email.split_once('@') {
                Some((local, domain)) => {
                    !local.is_empty()
                        && local.len() <= 64
                        && !domain.contains('@')
                        && domain.contains('.')
                        && !domain.starts_with('.')
                        && !domain.ends_with('.')
                }
                None => false,
            };
        if valid {
            Ok(Email(email))
        } else {
            Err("email must be an address like name@example.com".into())
        }
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password accepted for a new account: 12 to 128 characters and a
/// zxcvbn score of at least 3. Wiped on drop, never printed.
pub struct NewPassword(Zeroizing<String>);

/// The smallest password length accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The largest password length accepted (argon2 cost is bounded).
pub const MAX_PASSWORD_CHARS: usize = 128;

impl NewPassword {
    /// Checks length and strength, with advice on failure. `context` are
    /// words the password must not lean on (the email's parts).
    pub fn parse(raw: &str, context: &[&str]) -> Result<NewPassword, String> {
        let chars = raw.chars().count();
        if chars < MIN_PASSWORD_CHARS {
            return Err(format!(
                "password must be at least {MIN_PASSWORD_CHARS} characters; a few unrelated words make a strong one"
            ));
        }
        if chars > MAX_PASSWORD_CHARS {
            return Err(format!(
                "password must be at most {MAX_PASSWORD_CHARS} characters"
            ));
        }
        let estimate = zxcvbn::zxcvbn(raw, context);
        if u8::from(estimate.score()) < 3 {
            let mut advice = String::from("password is too easy to guess");
            if let Some(feedback) = estimate.feedback() {
                if let Some(warning) = feedback.warning() {
                    advice.push_str(&format!(" ({warning})"));
                }
                for suggestion in feedback.suggestions() {
                    advice.push_str(&format!("; {suggestion}"));
                }
            }
            advice.push_str("; try a longer phrase of unrelated words");
            return Err(advice);
        }
        Ok(NewPassword(Zeroizing::new(raw.to_owned())))
    }

    /// The password text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPassword([redacted])")
    }
}

/// The words of an email address (local part and domain labels), which a
/// password must not lean on.
pub fn email_words(email: &str) -> Vec<&str> {
    email
        .split(['@', '.', '_', '-', '+'])
        .filter(|p| !p.is_empty())
        .collect()
}

/// A random 128-bit id, base64url (user, session and token ids); `None` only
/// if the system random generator fails.
pub fn random_id() -> Option<String> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    Some(tokengate::b64::encode(bytes))
}

/// Validates role names (letters, digits, `-_.:`, at most 64 characters
/// each, at least one) and returns them space-separated, without repeats.
pub fn roles_text<S: AsRef<str>>(roles: &[S]) -> Result<String, String> {
    let valid = roles.iter().all(|r| {
        let r = r.as_ref();
        !r.is_empty()
            && r.len() <= 64
            && r.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    });
    if roles.is_empty() || !valid {
        return Err(
            "roles must be a non-empty list of names made of letters, digits, '-', '_', '.' or ':'"
                .into(),
        );
    }
    let mut unique: Vec<&str> = Vec::new();
    for r in roles {
        if !unique.contains(&r.as_ref()) {
            unique.push(r.as_ref());
        }
    }
    Ok(unique.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_checked_and_deduplicated() {
        assert_eq!(
            roles_text(&["user", "admin", "user"]),
            Ok("user admin".into())
        );
        assert!(roles_text::<&str>(&[]).is_err());
        assert!(roles_text(&["a b"]).is_err());
        assert!(roles_text(&[""]).is_err());
    }

    #[test]
    fn emails_are_normalised() {
        assert_eq!(
            Email::parse("  Alice.Smith@Example.COM ").map(|e| e.0),
            Ok("alice.smith@example.com".into())
        );
        for bad in [
            "",
            "alice",
            "@example.com",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            "a@.com",
            "a@com.",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn weak_passwords_are_refused_with_advice() {
        for weak in [
            "short",
            "password1234",
            "aaaaaaaaaaaaaaa",
            "qwertyuiop123",
            "alicealice1234",
        ] {
            let err = NewPassword::parse(weak, &["alice", "example"]).err();
            assert!(err.is_some(), "{weak} accepted");
        }
        let err = NewPassword::parse("password1234", &[])
            .err()
            .unwrap_or_default();
        assert!(err.contains("unrelated words"), "{err}");
        assert!(NewPassword::parse("correct horse battery staple", &[]).is_ok());
        assert!(NewPassword::parse(&"x".repeat(129), &[]).is_err());
    }
}
