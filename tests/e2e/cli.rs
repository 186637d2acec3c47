//! The command line of the real binary: `check` (which also loads the files the
//! configuration names), `generate-secret`, `--version`, and a refusal to start on an
//! invalid configuration, with one line per problem.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
const CLIENT_SECRET: &str = "cli-test-client-secret-never-printed";

fn portcullis(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run portcullis")
}

fn seed_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("APP_BASE_URL", "https://express.example.com"),
        ("OIDC_ISSUER", "https://auth.example.com"),
        ("OIDC_CLIENT_ID", "Express.js"),
        ("OIDC_CLIENT_SECRET", CLIENT_SECRET),
        (
            "SESSION_ENCRYPTION_SECRET",
            "a-session-secret-of-at-least-32-characters",
        ),
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
    ]
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_accepts_the_seed_environment_and_redacts_every_secret() {
    let out = portcullis(&["check"], &seed_env());
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "check failed: {}", text(&out.stderr));
    assert!(stdout.contains("issuer = \"https://auth.example.com\""), "{stdout}");
    assert!(
        stdout.contains("redirect_url = \"https://express.example.com/callback\""),
        "{stdout}"
    );
    assert!(
        !stdout.contains(CLIENT_SECRET) && !stdout.contains("a-session-secret"),
        "{stdout}"
    );
    assert!(stdout.contains("[redacted]"));
}

#[test]
fn an_invalid_configuration_is_refused_with_one_line_per_problem_naming_the_key() {
    let mut env = seed_env();
    env.retain(|(key, _)| *key != "OIDC_CLIENT_SECRET");
    env.retain(|(key, _)| *key != "OIDC_ISSUER");
    env.push(("OIDC_ISSUER", "http://auth.example.com"));
    env.push(("UPSTREAM_URL", "ftp://files"));
    env.push(("PORTCULLIS_SESSION_IDLE_TIMEOUT", "soon"));
    for args in [&["check"][..], &[][..]] {
        let out = portcullis(args, &env);
        assert_eq!(out.status.code(), Some(78), "{args:?} must exit 78 (EX_CONFIG)");
        let stderr = text(&out.stderr);
        for key in [
            "OIDC_CLIENT_SECRET:",
            "OIDC_ISSUER:",
            "UPSTREAM_URL:",
            "PORTCULLIS_SESSION_IDLE_TIMEOUT:",
        ] {
            assert_eq!(
                stderr.lines().filter(|line| line.contains(key)).count(),
                1,
                "{key} in {stderr}"
            );
        }
    }
}

#[test]
fn an_unknown_key_in_the_file_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("proxy.toml");
    std::fs::write(&file, "[session]\ncookie_secure = true\n").expect("write");
    let out = portcullis(&["check", "--config", file.to_str().expect("path")], &seed_env());
    assert_eq!(out.status.code(), Some(78));
    assert!(
        text(&out.stderr).contains("session.cookie_secure: unknown key"),
        "{}",
        text(&out.stderr)
    );
}

/// `check` builds what start-up builds from the files the configuration names, so a
/// configuration it calls valid also starts.
#[test]
fn check_loads_the_listeners_certificate_and_the_upstreams_ca_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name).to_str().expect("path").to_owned();
    let write = |name: &str, content: &str| std::fs::write(dir.path().join(name), content).expect("write");
    let certified = rcgen::generate_simple_self_signed(vec!["express.example.com".to_owned()]).expect("cert");
    let other = rcgen::generate_simple_self_signed(vec!["express.example.com".to_owned()]).expect("cert");
    write("cert.pem", &certified.cert.pem());
    write("key.pem", &certified.signing_key.serialize_pem());
    write("other-key.pem", &other.signing_key.serialize_pem());
    let (cert, key, other_key, missing) = (
        path("cert.pem"),
        path("key.pem"),
        path("other-key.pem"),
        path("none.pem"),
    );
    let with_tls = |cert: &str, key: &str| {
        let mut env = seed_env();
        env.push(("PORTCULLIS_SERVER_TLS_CERT_FILE", cert));
        env.push(("PORTCULLIS_SERVER_TLS_KEY_FILE", key));
        portcullis(&["check"], &env)
    };

    let out = with_tls(&cert, &key);
    assert!(out.status.success(), "check failed: {}", text(&out.stderr));
    assert!(text(&out.stdout).ends_with("configuration is valid\n"));

    for (out, expected) in [
        (with_tls(&missing, &key), format!("cannot read {missing}")),
        (with_tls(&cert, &missing), format!("cannot read {missing}")),
        (with_tls(&key, &key), format!("{key} holds no PEM certificate")),
        (
            with_tls(&cert, &other_key),
            format!("the private key in {other_key} is not usable"),
        ),
    ] {
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{stderr}");
        assert!(stderr.contains(&expected), "{expected} not in {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(out.stdout.is_empty(), "nothing is called valid: {}", text(&out.stdout));
        assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");
    }

    let mut env = seed_env();
    env.retain(|(key, _)| *key != "UPSTREAM_URL");
    env.push(("UPSTREAM_URL", "https://127.0.0.1:3443"));
    env.push(("PORTCULLIS_UPSTREAM_CA_FILE", &missing));
    let out = portcullis(&["check"], &env);
    assert_eq!(out.status.code(), Some(78));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("PORTCULLIS_UPSTREAM_CA_FILE: cannot read {missing}")),
        "{stderr}"
    );
}

#[test]
fn generate_secret_prints_a_fresh_256_bit_secret() {
    let first = text(&portcullis(&["generate-secret"], &[]).stdout);
    let second = text(&portcullis(&["generate-secret"], &[]).stdout);
    assert_eq!(first.trim().len(), 43, "{first}");
    assert_ne!(first, second);
}

#[test]
fn version_and_help_answer_as_users_expect() {
    let version = portcullis(&["--version"], &[]);
    assert!(version.status.success());
    assert!(text(&version.stdout).starts_with("portcullis "));
    let help = text(&portcullis(&["--help"], &[]).stdout);
    for word in ["check", "generate-secret", "--config"] {
        assert!(help.contains(word), "{word} missing from --help");
    }
}
