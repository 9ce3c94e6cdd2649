use std::collections::BTreeMap;

use secrecy::ExposeSecret as _;
use tokengate::Algorithm;

use super::kinds::{format_duration, redact_url};
use super::*;

fn load(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let vars: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let overrides = Overrides {
        config_file: None,
        ..Overrides::default()
    };
    Settings::load_from(&overrides, &|name| {
        if name == "TOKENGATE_CONFIG" {
            return Some("/nonexistent-tokengate-test.toml".into()).filter(|_| false);
        }
        vars.get(name).cloned()
    })
}

#[test]
fn defaults_are_the_documented_ones() {
    let s = load(&[]).map_err(|e| e.to_string());
    let s = s.as_ref().map_err(String::clone);
    assert_eq!(s.map(|s| s.addr.to_string()), Ok("127.0.0.1:8080".into()));
    let s = load(&[]).ok();
    let s = s.as_ref();
    assert_eq!(s.map(|s| s.access_ttl), Some(Duration::from_secs(900)));
    assert_eq!(
        s.map(|s| s.refresh_ttl),
        Some(Duration::from_secs(14 * 86400))
    );
    assert_eq!(s.map(|s| s.issuer.as_str()), Some("http://127.0.0.1:8080"));
    assert_eq!(s.map(|s| s.signing_alg), Some(Algorithm::ES256));
    assert!(s.is_some_and(|s| {
        s.database_url
            .expose_secret()
            .ends_with("tokengate-data/tokengate.db")
    }));
}

#[test]
fn password_hashes_run_one_per_core_unless_configured_and_at_niceness_10() {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let s = load(&[]).ok();
    assert_eq!(s.as_ref().map(|s| s.password_hash_concurrency), Some(cores));
    assert_eq!(s.as_ref().map(|s| s.password_hash_niceness), Some(10));
    let s = load(&[
        ("TOKENGATE_PASSWORD_HASH_CONCURRENCY", "3"),
        ("TOKENGATE_PASSWORD_HASH_NICENESS", "0"),
    ])
    .ok();
    assert_eq!(s.as_ref().map(|s| s.password_hash_concurrency), Some(3));
    assert_eq!(s.as_ref().map(|s| s.password_hash_niceness), Some(0));
    // Above Linux's lowest priority, or negative (a priority raise, which
    // needs privileges): refused at start-up, naming the setting.
    for bad in ["20", "-1", "ten"] {
        let refused = load(&[("TOKENGATE_PASSWORD_HASH_NICENESS", bad)]).map_err(|e| e.to_string());
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("password_hash_niceness") && e.contains("0 to 19")),
            "{bad}: {:?}",
            refused.map(|_| ())
        );
    }
}

#[test]
fn environment_overrides_defaults_and_flags_override_environment() {
    let vars: BTreeMap<String, String> = [
        ("TOKENGATE_ADDR", "0.0.0.0:9000"),
        ("TOKENGATE_ACCESS_TTL", "5m"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let overrides = Overrides {
        addr: Some("127.0.0.1:7000".into()),
        ..Overrides::default()
    };
    let s = Settings::load_from(&overrides, &|n| vars.get(n).cloned()).ok();
    assert_eq!(
        s.as_ref().map(|s| s.addr.to_string()),
        Some("127.0.0.1:7000".into())
    );
    assert_eq!(
        s.as_ref().map(|s| s.access_ttl),
        Some(Duration::from_secs(300))
    );
    assert_eq!(
        s.as_ref()
            .and_then(|s| s.sources.get("access_ttl").cloned()),
        Some(Source::Env("TOKENGATE_ACCESS_TTL".into()))
    );
}

#[test]
fn unsafe_settings_refuse_to_start_with_one_clear_line() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("TOKENGATE_LEEWAY", "301s")], "leeway"),
        (&[("TOKENGATE_LEEWAY", "0s")], "leeway must be at least 1s"),
        (&[("TOKENGATE_ACCESS_TTL", "25h")], "24h maximum"),
        (
            &[
                ("TOKENGATE_ACCESS_TTL", "1h"),
                ("TOKENGATE_REFRESH_TTL", "30m"),
            ],
            "shorter than access_ttl",
        ),
        (&[("TOKENGATE_SIGNING_ALG", "HS256")], "needs hs_secret"),
        (
            &[
                ("TOKENGATE_SIGNING_ALG", "HS256"),
                ("TOKENGATE_HS_SECRET", "mysecret"),
            ],
            "hs_secret",
        ),
        (
            &[
                ("TOKENGATE_SIGNING_ALG", "HS256"),
                ("TOKENGATE_HS_SECRET", "password123password123password123"),
            ],
            "password",
        ),
        (&[("TOKENGATE_SIGNING_ALG", "none")], "signing_alg"),
        (&[("TOKENGATE_ACCESS_TTL", "soon")], "duration"),
        (&[("TOKENGATE_DATABASE_URL", "mysql://x")], "database_url"),
        (&[("TOKENGATE_ARGON2_MEMORY_KIB", "1024")], "OWASP"),
        (&[("TOKENGATE_ARGON2_MEMORY_KIB", "19455")], "OWASP"),
        (
            &[
                ("TOKENGATE_ARGON2_MEMORY_KIB", "47103"),
                ("TOKENGATE_ARGON2_ITERATIONS", "1"),
            ],
            "OWASP",
        ),
        (
            &[
                ("TOKENGATE_ARGON2_MEMORY_KIB", "7167"),
                ("TOKENGATE_ARGON2_ITERATIONS", "5"),
            ],
            "OWASP",
        ),
        (
            &[("TOKENGATE_REFRESH_REUSE_INTERVAL", "61s")],
            "60s maximum",
        ),
        (
            &[("TOKENGATE_SESSION_LIFETIME", "13d")],
            "shorter than refresh_ttl",
        ),
        (
            &[("TOKENGATE_METRICS_ADDR", "0.0.0.0:9464")],
            "reachable from the network",
        ),
        (&[("TOKENGATE_METRICS_ADDR", "")], "needs metrics_addr"),
        (&[("TOKENGATE_METRICS_TOKEN", "short")], "at least 32"),
        (
            &[("TOKENGATE_TRUSTED_PROXIES", "10.0.0.0/33")],
            "trusted_proxies",
        ),
        (
            &[("TOKENGATE_TRUSTED_PROXIES", "proxy.local")],
            "trusted_proxies",
        ),
        (&[("TOKENGATE_IPV6_PREFIX_LEN", "0")], "ipv6_prefix_len"),
        (&[("TOKENGATE_IPV6_PREFIX_LEN", "129")], "ipv6_prefix_len"),
        (
            &[("TOKENGATE_CLIENT_IP_HEADER", "x-real-ip")],
            "client_ip_header",
        ),
        (
            &[("TOKENGATE_HEADER_READ_TIMEOUT", "0s")],
            "header_read_timeout",
        ),
        (&[("TOKENGATE_MAX_CONNECTIONS", "0")], "max_connections"),
        (
            &[
                ("TOKENGATE_MASTER_KEY", "password123password123password123"),
                ("TOKENGATE_MASTER_KEY_FILE", "/etc/tokengate/master.key"),
            ],
            "not both",
        ),
        (
            &[("TOKENGATE_LOGIN_IP_MAX_FAILURES", "4")],
            "at least login_max_failures",
        ),
    ];
    for (vars, needle) in cases {
        let err = load(vars).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(needle), "{vars:?}: {err:?}");
        assert!(!err.contains('\n'), "one line: {err}");
        assert!(
            !err.contains("password123password123"),
            "secret echoed: {err}"
        );
    }
}

#[test]
fn settings_at_their_limits_are_accepted() {
    let cases: &[&[(&str, &str)]] = &[
        &[
            ("TOKENGATE_ARGON2_MEMORY_KIB", "19456"),
            ("TOKENGATE_ARGON2_ITERATIONS", "2"),
        ],
        &[
            ("TOKENGATE_ARGON2_MEMORY_KIB", "47104"),
            ("TOKENGATE_ARGON2_ITERATIONS", "1"),
        ],
        &[
            ("TOKENGATE_ARGON2_MEMORY_KIB", "7168"),
            ("TOKENGATE_ARGON2_ITERATIONS", "5"),
        ],
        &[("TOKENGATE_REFRESH_REUSE_INTERVAL", "60s")],
        &[("TOKENGATE_REFRESH_REUSE_INTERVAL", "0s")],
        &[("TOKENGATE_SESSION_LIFETIME", "14d")],
        &[
            ("TOKENGATE_METRICS_ADDR", "0.0.0.0:9464"),
            (
                "TOKENGATE_METRICS_TOKEN",
                "0123456789abcdef0123456789abcdef",
            ),
        ],
        &[
            ("TOKENGATE_METRICS_ADDR", ""),
            ("TOKENGATE_METRICS", "false"),
        ],
        &[("TOKENGATE_IPV6_PREFIX_LEN", "128")],
    ];
    for vars in cases {
        if let Err(e) = load(vars) {
            panic!("{vars:?} refused: {e}");
        }
    }
}

#[test]
fn trusted_proxies_are_cidr_lists_from_the_environment_or_a_toml_array() {
    let s = load(&[(
        "TOKENGATE_TRUSTED_PROXIES",
        " 10.0.0.0/8, 192.168.1.7 ,::1,",
    )])
    .map(|s| s.trusted_proxies)
    .map_err(|e| e.to_string());
    let expected: Vec<ipnet::IpNet> = ["10.0.0.0/8", "192.168.1.7/32", "::1/128"]
        .iter()
        .filter_map(|t| t.parse().ok())
        .collect();
    assert_eq!(s, Ok(expected.clone()));
    let dir = tempfile::tempdir().map_err(|e| e.to_string());
    let Ok(dir) = dir else { panic!("tempdir") };
    let path = dir.path().join("tokengate.toml");
    std::fs::write(
        &path,
        "trusted_proxies = [\"10.0.0.0/8\", \"192.168.1.7\", \"::1\"]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let overrides = Overrides {
        config_file: Some(path),
        ..Overrides::default()
    };
    let s = Settings::load_from(&overrides, &|_| None).map(|s| s.trusted_proxies);
    assert_eq!(s.map_err(|e| e.to_string()), Ok(expected));
}

#[test]
fn strong_hs_secret_is_accepted_and_redacted() {
    let secret = tokengate::generate_secret(32).unwrap_or_default();
    let s = load(&[
        ("TOKENGATE_SIGNING_ALG", "HS256"),
        ("TOKENGATE_HS_SECRET", &secret),
    ])
    .ok();
    let rendered = s.as_ref().map(Settings::render).unwrap_or_default();
    assert!(
        rendered.contains("hs_secret = \"[redacted]\""),
        "{rendered}"
    );
    assert!(!rendered.contains(&secret));
    assert!(!format!("{s:?}").contains(&secret));
}

#[test]
fn database_passwords_are_redacted() {
    assert_eq!(
        redact_url("postgres://app:hunter2@db:5432/tg"),
        "postgres://app:[redacted]@db:5432/tg"
    );
    assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
    assert_eq!(
        redact_url("postgres://u:p@ssword1@host/db"),
        "postgres://u:[redacted]@host/db"
    );
    assert_eq!(
        redact_url("postgres://127.0.0.1/db?sslmode=require&password=pgsecret1"),
        "postgres://127.0.0.1/db?sslmode=require&password=[redacted]"
    );
    assert_eq!(
        redact_url("redis://127.0.0.1/?password=x&sslpassword=y"),
        "redis://127.0.0.1/?password=[redacted]&sslpassword=[redacted]"
    );
}

#[test]
fn each_cause_is_its_own_error_variant() {
    let err = load(&[("TOKENGATE_ACCESS_TTL", "soon")]).err();
    assert!(
        matches!(
            &err,
            Some(ConfigError::Invalid { key: "access_ttl", origin: Source::Env(var), .. })
                if var == "TOKENGATE_ACCESS_TTL"
        ),
        "{err:?}"
    );
    let err = load(&[("TOKENGATE_MAX_CONNECTIONS", "0")]).err();
    assert!(
        matches!(
            err,
            Some(ConfigError::Zero {
                key: "max_connections"
            })
        ),
        "{err:?}"
    );
    let err = load(&[("TOKENGATE_SIGNING_ALG", "HS256")]).err();
    assert!(matches!(err, Some(ConfigError::MissingHsSecret)), "{err:?}");
}

#[test]
fn print_config_lists_every_key_once_in_table_order() {
    let rendered = load(&[]).map(|s| s.render()).unwrap_or_default();
    let keys: Vec<&str> = rendered
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(" = ").map(|(key, _)| key))
        .map(|key| key.trim_start_matches("# "))
        .collect();
    assert_eq!(keys, KEYS);
}

/// An environment of `vars`, listed and read as the process's would be.
fn load_listed(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let vars: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let names: Vec<String> = vars.keys().cloned().collect();
    Settings::load_from_environment(&Overrides::default(), &names, &|name| {
        vars.get(name).cloned()
    })
}

#[test]
fn an_unknown_tokengate_variable_is_refused_naming_the_closest_one() {
    let err = load_listed(&[("TOKENGATE_ACESS_TTL", "5m")]).err();
    assert!(
        matches!(
            &err,
            Some(ConfigError::UnknownVariable { name, closest })
                if name == "TOKENGATE_ACESS_TTL" && closest == "TOKENGATE_ACCESS_TTL"
        ),
        "{err:?}"
    );
    assert_eq!(
        err.map(|e| e.to_string()).unwrap_or_default(),
        "configuration: unknown environment variable TOKENGATE_ACESS_TTL (did you mean TOKENGATE_ACCESS_TTL?)"
    );
    let err = load_listed(&[("TOKENGATE_CONFG", "x.toml")]).err();
    assert!(
        matches!(&err, Some(ConfigError::UnknownVariable { closest, .. }) if closest == "TOKENGATE_CONFIG"),
        "{err:?}"
    );
    // A bare port is an operator's typo, not a Kubernetes service link; so
    // are names that merely contain a link's words.
    for (name, value) in [
        ("TOKENGATE_PORT", "8080"),
        ("TOKENGATE_METRICS_PORT", "9464"),
        ("TOKENGATE_XSERVICE_HOST", "x"),
        ("TOKENGATE_PORT_80_HTTP", "x"),
    ] {
        let err = load_listed(&[(name, value)]).err();
        assert!(
            matches!(err, Some(ConfigError::UnknownVariable { .. })),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn a_toml_syntax_error_is_one_line_and_never_quotes_the_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("tokengate.toml");
    std::fs::write(
        &path,
        "addr = \"127.0.0.1:8080\"\nhs_secret = \"realsecretvalue-do-not-print\" extra\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let overrides = Overrides {
        config_file: Some(path),
        ..Overrides::default()
    };
    let err = Settings::load_from(&overrides, &|_| None)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("line 2"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
    assert!(!err.contains("realsecretvalue"), "secret quoted: {err}");
}

#[test]
fn variables_that_are_not_settings_but_legitimate_are_accepted() {
    let legitimate: &[(&str, &str)] = &[
        ("PATH", "/usr/bin"),
        ("TOKENGATE_ACCESS_TTL", "5m"),
        (
            "TOKENGATE_TEST_PG_URL",
            "postgres://postgres@127.0.0.1:5432",
        ),
        // What Kubernetes sets in every pod for a Service named tokengate.
        ("TOKENGATE_SERVICE_HOST", "10.0.0.7"),
        ("TOKENGATE_SERVICE_PORT", "8080"),
        ("TOKENGATE_SERVICE_PORT_HTTP", "8080"),
        ("TOKENGATE_PORT", "tcp://10.0.0.7:8080"),
        ("TOKENGATE_PORT_8080_TCP", "tcp://10.0.0.7:8080"),
        ("TOKENGATE_PORT_8080_TCP_ADDR", "10.0.0.7"),
        ("TOKENGATE_PORT_8080_TCP_PORT", "8080"),
        ("TOKENGATE_PORT_8080_TCP_PROTO", "tcp"),
        // And for sibling Services: a Helm release's database, a metrics Service.
        ("TOKENGATE_POSTGRESQL_SERVICE_HOST", "10.0.0.2"),
        ("TOKENGATE_POSTGRESQL_SERVICE_PORT", "5432"),
        ("TOKENGATE_POSTGRESQL_SERVICE_PORT_TCP_POSTGRESQL", "5432"),
        ("TOKENGATE_POSTGRESQL_PORT", "tcp://10.0.0.2:5432"),
        ("TOKENGATE_POSTGRESQL_PORT_5432_TCP", "tcp://10.0.0.2:5432"),
        ("TOKENGATE_POSTGRESQL_PORT_5432_TCP_ADDR", "10.0.0.2"),
        ("TOKENGATE_METRICS_SERVICE_HOST", "10.0.0.3"),
    ];
    let loaded = load_listed(legitimate).map(|s| s.access_ttl);
    assert_eq!(
        loaded.map_err(|e| e.to_string()),
        Ok(Duration::from_secs(300))
    );
}

#[test]
fn log_format_takes_json_text_and_pretty_as_text() {
    for (given, format) in [
        ("json", LogFormat::Json),
        ("text", LogFormat::Text),
        ("pretty", LogFormat::Text),
        ("TEXT", LogFormat::Text),
    ] {
        let loaded = load(&[("TOKENGATE_LOG_FORMAT", given)]).map(|s| s.log_format);
        assert_eq!(loaded.map_err(|e| e.to_string()), Ok(format), "{given}");
    }
    let err = load(&[("TOKENGATE_LOG_FORMAT", "xml")])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("log_format") && err.contains("json, text or pretty"),
        "{err}"
    );
}

#[test]
fn durations_print_in_the_largest_exact_units_and_parse_back() {
    for (seconds, shown) in [
        (90 * 86_400, "90d"),
        (14 * 86_400, "14d"),
        (15 * 60, "15m"),
        (30, "30s"),
        (5400, "1h30m"),
        (86_400 + 1, "1d1s"),
        (0, "0s"),
    ] {
        let duration = Duration::from_secs(seconds);
        assert_eq!(format_duration(duration), shown);
        assert_eq!(humantime::parse_duration(shown).ok(), Some(duration));
    }
    let duration = Duration::from_millis(1500);
    assert_eq!(format_duration(duration), "1s500ms");
    assert_eq!(humantime::parse_duration("1s500ms").ok(), Some(duration));
}

#[test]
fn print_config_shows_durations_as_written_and_unset_keys_commented_out() {
    let rendered = load(&[]).map(|s| s.render()).unwrap_or_default();
    for line in [
        "audit_retention = \"90d\"  # default",
        "refresh_ttl = \"14d\"  # default",
        "access_ttl = \"15m\"  # default",
        "# redis_url = \"\"  # unset",
        "# key_rotation_interval = \"\"  # unset",
        "trusted_proxies = \"\"  # default",
        "# issuer = \"http://127.0.0.1:8080\"  # derived",
        "log_format = \"json\"  # default",
        "max_connections = 4096  # default",
    ] {
        assert!(
            rendered.lines().any(|l| l == line),
            "{line:?} in\n{rendered}"
        );
    }
}

/// Each line of a rendered configuration without its trailing source
/// comment: what a reload must reproduce (the source is then the file).
fn values(rendered: &str) -> Vec<&str> {
    rendered
        .lines()
        .skip(1)
        .map(|line| line.split("  # ").next().unwrap_or(line))
        .collect()
}

#[test]
fn print_config_loads_back_as_the_same_settings() {
    let token = "0123456789abcdef0123456789abcdef";
    let first = load(&[
        ("TOKENGATE_AUDIT_RETENTION", "2160h"),
        ("TOKENGATE_ACCESS_TTL", "90m"),
        ("TOKENGATE_KEY_ROTATION_INTERVAL", "30d"),
        ("TOKENGATE_TRUSTED_PROXIES", "10.0.0.0/8, ::1"),
        ("TOKENGATE_LOG_FORMAT", "pretty"),
        ("TOKENGATE_AUDIENCE", "quote \" and \\ back"),
        ("TOKENGATE_METRICS_TOKEN", token),
        (
            "TOKENGATE_DATABASE_URL",
            "postgres://app:hunter2@db:5432/tg",
        ),
    ])
    .map(|s| s.render())
    .map_err(|e| e.to_string());
    let Ok(first) = first else {
        panic!("{first:?}")
    };
    assert!(first.contains("audit_retention = \"90d\""), "{first}");
    assert!(first.contains("access_ttl = \"1h30m\""), "{first}");
    assert!(
        !first.contains(token) && !first.contains("hunter2"),
        "{first}"
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("tokengate.toml");
    std::fs::write(&path, &first).unwrap_or_else(|e| panic!("{e}"));
    let overrides = Overrides {
        config_file: Some(path),
        ..Overrides::default()
    };
    let second = Settings::load_from(&overrides, &|_| None)
        .map(|s| s.render())
        .map_err(|e| e.to_string());
    let Ok(second) = second else {
        panic!("the rendered file does not load: {second:?}\n{first}")
    };
    // Secrets cannot come back: both times they are commented out.
    let secret_lines = ["# database_url = ", "# metrics_token = "];
    let is_secret = |line: &&str| secret_lines.iter().any(|s| line.starts_with(s));
    let first_values: Vec<&str> = values(&first)
        .into_iter()
        .filter(|l| !is_secret(l))
        .collect();
    let second_values: Vec<&str> = values(&second)
        .into_iter()
        .filter(|l| !is_secret(l))
        .collect();
    assert_eq!(first_values, second_values, "\n{first}\n{second}");
    assert_eq!(values(&second).len(), KEYS.len());
    // With no secret left out, the reload renders identically.
    std::fs::write(dir.path().join("again.toml"), &second).unwrap_or_else(|e| panic!("{e}"));
    let third = Settings::load_from(
        &Overrides {
            config_file: Some(dir.path().join("again.toml")),
            ..Overrides::default()
        },
        &|_| None,
    )
    .map(|s| s.render())
    .unwrap_or_default();
    assert_eq!(values(&second), values(&third), "\n{second}\n{third}");
}

#[test]
fn an_unset_setting_with_a_default_stays_unset_through_the_file() {
    let first = load(&[
        ("TOKENGATE_METRICS", "false"),
        ("TOKENGATE_METRICS_ADDR", ""),
    ])
    .map(|s| s.render())
    .unwrap_or_default();
    assert!(
        first.contains("metrics_addr = \"\"  # environment TOKENGATE_METRICS_ADDR, unset"),
        "{first}"
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("tokengate.toml");
    std::fs::write(&path, &first).unwrap_or_else(|e| panic!("{e}"));
    let overrides = Overrides {
        config_file: Some(path),
        ..Overrides::default()
    };
    let reloaded = Settings::load_from(&overrides, &|_| None).map(|s| s.metrics_addr);
    assert_eq!(reloaded.map_err(|e| e.to_string()), Ok(None));
}

#[test]
fn forward_auth_names_are_header_tokens_and_nothing_else() {
    let long = "X".repeat(64);
    for good in ["X-Auth-", "X-Auth-Request-", "tg_", long.as_str()] {
        let s = load(&[("TOKENGATE_FORWARD_AUTH_HEADER_PREFIX", good)]).map_err(|e| e.to_string());
        assert_eq!(
            s.map(|s| s.forward_auth_header_prefix),
            Ok(good.to_owned()),
            "{good}"
        );
    }
    let too_long = "X".repeat(65);
    for bad in [
        "X Auth",
        "X-Äuth-",
        "X:Auth",
        "X-Auth\r\nSet-Cookie: a=b",
        "\"x\"",
        too_long.as_str(),
    ] {
        let err = load(&[("TOKENGATE_FORWARD_AUTH_HEADER_PREFIX", bad)]).map(|_| ());
        assert!(
            err.is_err_and(|e| e.to_string().contains("forward_auth_header_prefix")),
            "{bad:?} accepted as a header prefix"
        );
        let err = load(&[("TOKENGATE_FORWARD_AUTH_COOKIE", bad)]).map(|_| ());
        assert!(
            err.is_err_and(|e| e.to_string().contains("forward_auth_cookie")),
            "{bad:?} accepted as a cookie name"
        );
    }
    // Blank: the prefix has a default, the cookie is unset.
    let s = load(&[("TOKENGATE_FORWARD_AUTH_COOKIE", "")]).ok();
    assert_eq!(s.map(|s| s.forward_auth_cookie), Some(None));
    let s = load(&[("TOKENGATE_FORWARD_AUTH_COOKIE", "tg_access")]).ok();
    assert_eq!(
        s.map(|s| s.forward_auth_cookie),
        Some(Some("tg_access".to_owned()))
    );
}

#[test]
fn cookie_settings_parse_and_default_to_the_safe_ones() {
    let s = load(&[]).ok();
    assert_eq!(s.as_ref().map(|s| s.cookie_mode), Some(CookieMode::Allowed));
    assert_eq!(
        s.as_ref().map(|s| s.cookie_same_site),
        Some(SameSite::Strict)
    );
    assert_eq!(s.as_ref().map(|s| s.cookie_insecure_dev), Some(false));
    // The service's own origin is always allowed.
    assert_eq!(
        s.map(|s| s.cookie_origins()),
        Some(vec!["http://127.0.0.1:8080".to_owned()])
    );
    let s = load(&[
        ("TOKENGATE_COOKIE_MODE", "ALWAYS"),
        ("TOKENGATE_COOKIE_SAME_SITE", "lax"),
        ("TOKENGATE_PUBLIC_URL", "https://auth.example.com:443/base/"),
        (
            "TOKENGATE_COOKIE_ALLOWED_ORIGINS",
            "https://App.example.com/, http://localhost:5173, https://[::1]:8443",
        ),
    ])
    .ok();
    assert_eq!(s.as_ref().map(|s| s.cookie_mode), Some(CookieMode::Always));
    assert_eq!(s.as_ref().map(|s| s.cookie_same_site), Some(SameSite::Lax));
    assert_eq!(
        s.map(|s| s.cookie_origins()),
        Some(
            [
                "https://auth.example.com",
                "https://app.example.com",
                "http://localhost:5173",
                "https://[::1]:8443"
            ]
            .map(str::to_owned)
            .to_vec()
        )
    );
    for bad in [
        "app.example.com",
        "ftp://app.example.com",
        "https://app.example.com/path",
        "https://user@app.example.com",
        "https://",
        "https://app.example.com:port",
        "https://[::1",
        "https://exämple.com",
        "https://a.example, *",
    ] {
        let err = load(&[("TOKENGATE_COOKIE_ALLOWED_ORIGINS", bad)]).map(|_| ());
        assert!(
            err.is_err_and(|e| e.to_string().contains("cookie_allowed_origins")),
            "{bad:?} accepted as an origin list"
        );
    }
    for (key, bad) in [
        ("TOKENGATE_COOKIE_MODE", "sometimes"),
        ("TOKENGATE_COOKIE_SAME_SITE", "none"),
    ] {
        assert!(load(&[(key, bad)]).is_err(), "{key}={bad}");
    }
}

#[test]
fn insecure_dev_cookies_are_refused_off_loopback() {
    let on = ("TOKENGATE_COOKIE_INSECURE_DEV", "true");
    for (addr, public_url) in [
        ("127.0.0.1:8080", ""),
        ("[::1]:8080", ""),
        ("127.0.0.1:8080", "http://localhost:8080"),
        ("127.0.0.1:8080", "http://[::1]:8080/"),
    ] {
        let s = load(&[
            on,
            ("TOKENGATE_ADDR", addr),
            ("TOKENGATE_PUBLIC_URL", public_url),
        ]);
        assert!(
            s.is_ok_and(|s| s.cookie_insecure_dev),
            "{addr} {public_url}"
        );
    }
    for (addr, public_url) in [
        ("0.0.0.0:8080", ""),
        ("10.0.0.5:8080", ""),
        ("127.0.0.1:8080", "http://auth.example.com"),
        ("127.0.0.1:8080", "http://localhost.example.com"),
        ("127.0.0.1:8080", "http://192.168.1.2:8080"),
    ] {
        let err = load(&[
            on,
            ("TOKENGATE_ADDR", addr),
            ("TOKENGATE_PUBLIC_URL", public_url),
        ])
        .map(|_| ());
        assert!(
            err.is_err_and(|e| e.to_string().contains("cookie_insecure_dev")),
            "{addr} {public_url} accepted"
        );
    }
}

#[test]
fn cookie_settings_are_read_from_the_file_with_origins_as_a_toml_array() {
    let Ok(dir) = tempfile::tempdir() else {
        panic!("tempdir")
    };
    let path = dir.path().join("tokengate.toml");
    std::fs::write(
        &path,
        "cookie_mode = \"always\"\ncookie_same_site = \"lax\"\npublic_url = \"https://auth.example.com\"\n\
         cookie_allowed_origins = [\"https://app.example.com\", \"http://localhost:5173\"]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let overrides = Overrides {
        config_file: Some(path),
        ..Overrides::default()
    };
    let s = Settings::load_from(&overrides, &|_| None).map_err(|e| e.to_string());
    let s = s.as_ref().ok();
    assert_eq!(s.map(|s| s.cookie_mode), Some(CookieMode::Always));
    assert_eq!(s.map(|s| s.cookie_same_site), Some(SameSite::Lax));
    assert_eq!(
        s.map(Settings::cookie_origins),
        Some(
            [
                "https://auth.example.com",
                "https://app.example.com",
                "http://localhost:5173"
            ]
            .map(str::to_owned)
            .to_vec()
        )
    );
}

/// `cookie_insecure_dev` also refuses what would let the network in past
/// a loopback `addr` and `public_url`: an allowed origin off this machine
/// (its pages could make cookie writes with the dev cookies) and a trusted
/// proxy off it (it would be serving the dev instance to others).
#[test]
fn insecure_dev_cookies_refuse_a_non_loopback_allowed_origin_or_trusted_proxy() {
    let dev = [
        ("TOKENGATE_COOKIE_INSECURE_DEV", "true"),
        ("TOKENGATE_ADDR", "127.0.0.1:8080"),
        ("TOKENGATE_PUBLIC_URL", "http://localhost:8080"),
    ];
    for (key, value, named) in [
        (
            "TOKENGATE_COOKIE_ALLOWED_ORIGINS",
            "https://app.example.com",
            "cookie_allowed_origins",
        ),
        (
            "TOKENGATE_COOKIE_ALLOWED_ORIGINS",
            "http://localhost:5173,http://192.168.1.5:5173",
            "cookie_allowed_origins",
        ),
        ("TOKENGATE_TRUSTED_PROXIES", "10.0.0.0/8", "trusted_proxies"),
        (
            "TOKENGATE_TRUSTED_PROXIES",
            "127.0.0.1,0.0.0.0/0",
            "trusted_proxies",
        ),
        ("TOKENGATE_TRUSTED_PROXIES", "::/0", "trusted_proxies"),
    ] {
        let mut vars = dev.to_vec();
        vars.push((key, value));
        let err = load(&vars).map(|_| ()).map_err(|e| e.to_string());
        assert!(
            err.as_ref()
                .is_err_and(|e| e.contains("cookie_insecure_dev") && e.contains(named)),
            "{key}={value}: {err:?}"
        );
    }
    for (key, value) in [
        (
            "TOKENGATE_COOKIE_ALLOWED_ORIGINS",
            "http://localhost:5173,http://127.0.0.1:3000,http://[::1]:8000",
        ),
        ("TOKENGATE_TRUSTED_PROXIES", "127.0.0.1,::1,127.0.0.0/8"),
    ] {
        let mut vars = dev.to_vec();
        vars.push((key, value));
        assert!(load(&vars).is_ok(), "{key}={value}");
    }
    // Without the switch, any of them is fine.
    assert!(
        load(&[
            (
                "TOKENGATE_COOKIE_ALLOWED_ORIGINS",
                "https://app.example.com"
            ),
            ("TOKENGATE_TRUSTED_PROXIES", "10.0.0.0/8")
        ])
        .is_ok()
    );
}

#[test]
fn public_url_is_an_http_url_with_at_most_a_path() {
    for good in [
        "https://auth.example.com",
        "https://auth.example.com/",
        "http://127.0.0.1:8080",
        "http://[::1]:8080",
        "https://example.com/tg",
        "https://example.com/a/b-c_d.e~f/",
    ] {
        let s = load(&[("TOKENGATE_PUBLIC_URL", good)]).map_err(|e| e.to_string());
        assert!(s.is_ok(), "{good}: {s:?}");
    }
    // Derived from addr when unset, IPv6 included.
    let derived = load(&[("TOKENGATE_ADDR", "[::1]:9000")]).map(|s| s.public_url);
    assert_eq!(
        derived.map_err(|e| e.to_string()),
        Ok("http://[::1]:9000".to_owned())
    );
    for bad in [
        "auth.example.com",
        "ftp://auth.example.com",
        "https://",
        "https://user:pw@auth.example.com",
        "https://auth example.com",
        "https://auth.example.com/tg?x=1",
        "https://auth.example.com?x=1",
        "https://auth.example.com/#frag",
        "https://auth.example.com#frag",
        "https://auth.example.com/t g",
        "https://auth.example.com/tg\\x",
        "https://exämple.com",
        "https://auth.example.com/pfad/ü",
        "https://auth.example.com:99999",
    ] {
        let err = load(&[("TOKENGATE_PUBLIC_URL", bad)]).map(|_| ());
        assert!(
            err.as_ref()
                .is_err_and(|e| e.to_string().contains("public_url")
                    && e.to_string().contains("a URL like")),
            "{bad:?}: {err:?}"
        );
    }
}

#[test]
fn public_url_empty_is_derived_and_huge_is_judged_like_any_other() {
    // Set but empty: derived from addr, as when unset.
    let empty = load(&[("TOKENGATE_PUBLIC_URL", "")]).map(|s| s.public_url);
    assert_eq!(
        empty.map_err(|e| e.to_string()),
        Ok("http://127.0.0.1:8080".to_owned())
    );
    // A 64 KiB path is a path: no panic, no truncation.
    let long = format!("https://auth.example.com/{}", "a".repeat(64 * 1024));
    let s = load(&[("TOKENGATE_PUBLIC_URL", &long)]).map(|s| s.public_url.len());
    assert_eq!(s.map_err(|e| e.to_string()), Ok(long.len()));
    let long_query = format!("{long}?{}", "q".repeat(64 * 1024));
    assert!(load(&[("TOKENGATE_PUBLIC_URL", &long_query)]).is_err());
}

proptest::proptest! {
    /// Whatever the text, loading never panics, and a `public_url` that is
    /// accepted is an http(s) URL of visible ASCII with no query, fragment
    /// or backslash.
    #[test]
    fn an_accepted_public_url_is_always_a_plain_http_url(text in "\\PC{0,40}|https?://[a-z0-9.:\\[\\]@?#/\\\\ é-]{0,30}") {
        if let Ok(settings) = load(&[("TOKENGATE_PUBLIC_URL", &text)]) {
            let url = settings.public_url;
            proptest::prop_assert!(url.starts_with("http://") || url.starts_with("https://"), "{url}");
            proptest::prop_assert!(
                url.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'\\')),
                "{url}"
            );
        }
    }
}
