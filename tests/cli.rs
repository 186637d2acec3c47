//! The command line of the real binary: `check`, `generate-secret`, `--version`, and a
//! refusal to start on an invalid configuration, with one line per problem.

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
