use std::collections::BTreeMap;

use secrecy::ExposeSecret as _;
use tokengate::Algorithm;

use super::kinds::redact_url;
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
        .collect();
    assert_eq!(keys, KEYS);
}
