//! Configuration tests: inline TOML and a `HashMap` environment, never the process's.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use super::*;

const CLIENT_SECRET: &str = "client-secret-do-not-print-8c1f";
const SESSION_SECRET: &str = "session-secret-do-not-print-0123456789abcdef";

/// The five variables the seed app used, plus `UPSTREAM_URL`.
fn seed_env() -> HashMap<String, String> {
    env(&[
        ("APP_BASE_URL", "https://express.example.com"),
        ("OIDC_ISSUER", "https://auth.example.com"),
        ("OIDC_CLIENT_ID", "Express.js"),
        ("OIDC_CLIENT_SECRET", CLIENT_SECRET),
        ("SESSION_ENCRYPTION_SECRET", SESSION_SECRET),
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
    ])
}

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn with(mut base: HashMap<String, String>, pairs: &[(&str, &str)]) -> HashMap<String, String> {
    base.extend(env(pairs));
    base
}

fn without(mut base: HashMap<String, String>, keys: &[&str]) -> HashMap<String, String> {
    for key in keys {
        base.remove(*key);
    }
    base
}

fn ok(toml: &str, env: &HashMap<String, String>) -> Config {
    match load_str(toml, "test.toml", env) {
        Ok(config) => config,
        Err(error) => panic!("expected a valid configuration, got {error}"),
    }
}

fn problems(toml: &str, env: &HashMap<String, String>) -> Vec<ConfigProblem> {
    match load_str(toml, "test.toml", env) {
        Ok(_) => panic!("expected problems, configuration was accepted"),
        Err(error) => error.problems,
    }
}

/// Asserts a problem with exactly this key whose message contains `fragment`.
#[track_caller]
fn assert_problem(problems: &[ConfigProblem], key: &str, fragment: &str) {
    assert!(
        problems.iter().any(|p| p.key == key && p.message.contains(fragment)),
        "no problem `{key}: …{fragment}…` in {problems:#?}"
    );
}

/// The seed environment plus one file snippet, expecting one problem at `key`.
#[track_caller]
fn rejects(toml: &str, key: &str, fragment: &str) {
    assert_problem(&problems(toml, &seed_env()), key, fragment);
}

#[track_caller]
fn rejects_env(pairs: &[(&str, &str)], key: &str, fragment: &str) {
    assert_problem(&problems("", &with(seed_env(), pairs)), key, fragment);
}

// ---- whole configurations ----------------------------------------------------------

#[test]
fn seed_environment_alone_is_a_working_config() {
    let config = ok("", &seed_env());
    assert_eq!(config.listen_addr.to_string(), "127.0.0.1:4180");
    assert_eq!(config.base_url.as_str(), "https://express.example.com/");
    assert_eq!(config.oidc.issuer_exact, "https://auth.example.com");
    assert_eq!(config.oidc.client_id, "Express.js");
    assert_eq!(config.oidc.client_secret.expose(), CLIENT_SECRET);
    assert_eq!(config.oidc.scopes, ["openid", "profile", "email", "groups"]);
    assert_eq!(
        config.oidc.redirect_url.as_str(),
        "https://express.example.com/callback"
    );
    assert_eq!(config.oidc.par, ParMode::Auto);
    assert_eq!(config.oidc.http_timeout, Duration::from_secs(10));
    assert_eq!(config.oidc.login_rate_per_second, 20);
    assert_eq!(config.oidc.login_rate_burst, 100);
    assert_eq!(config.oidc.login_rate_per_client_per_minute, 60);
    assert_eq!(config.oidc.login_rate_per_client_burst, 30);
    assert!(config.oidc.warnings().is_empty());
    assert!(config.oidc.revoke_on_logout);
    assert_eq!(config.session.secret.expose(), SESSION_SECRET);
    assert!(!config.session.secret_is_ephemeral);
    assert!(config.session.cookie_secure);
    assert_eq!(config.session.cookie_name, "portcullis_session");
    assert_eq!(config.session.login_cookie_prefix, "portcullis_login_");
    assert_eq!(config.session.cookie_domain, None);
    assert_eq!(config.session.idle_timeout, Duration::from_secs(3600));
    assert_eq!(config.session.max_lifetime, Duration::from_secs(12 * 3600));
    assert_eq!(config.session.max_memory_bytes, 256 * 1024 * 1024);
    assert_eq!(config.session.login_timeout, Duration::from_secs(600));
    assert_eq!(config.session.max_pending_logins, 5);
    assert_eq!(config.routes.callback, "/callback");
    assert_eq!(config.routes.me(), "/.auth/me");
    assert!(matches!(&config.upstream.target, UpstreamTarget::Http(u) if u.as_str() == "http://127.0.0.1:3000/"));
    assert_eq!(config.identity.access_token, AccessTokenForwarding::None);
    let headers: Vec<(&str, Vec<&str>)> = config
        .identity
        .headers
        .iter()
        .map(|h| (h.header.as_str(), h.claims.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(
        headers,
        [
            ("remote-user", vec!["preferred_username", "sub"]),
            ("remote-groups", vec!["groups"]),
            ("remote-name", vec!["name"]),
            ("remote-email", vec!["email"]),
        ]
    );
    assert!(config.pages.show_tokens);
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(config.log.level, "info");
}

#[test]
fn missing_session_secret_generates_an_ephemeral_one() {
    let config = ok("", &without(seed_env(), &["SESSION_ENCRYPTION_SECRET"]));
    assert!(config.session.secret_is_ephemeral);
    assert!(config.session.secret.expose().len() >= MIN_SECRET_LEN);
    let other = ok("", &without(seed_env(), &["SESSION_ENCRYPTION_SECRET"]));
    assert_ne!(config.session.secret, other.session.secret);
}

#[test]
fn generated_secret_is_long_enough_and_url_safe() {
    let secret = generate_secret();
    assert_eq!(secret.len(), 43);
    assert!(secret
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
}

#[test]
fn environment_overrides_the_file() {
    let toml = r#"
        base_url = "https://file.example.com"
        listen_addr = "0.0.0.0:8080"
        [oidc]
        issuer = "https://file-issuer.example.com"
        scopes = ["openid", "email"]
        par = "never"
        [session]
        idle_timeout = "30m"
    "#;
    let env = with(
        seed_env(),
        &[
            ("PORTCULLIS_SESSION_IDLE_TIMEOUT", "2h"),
            ("PORTCULLIS_SESSION_MAX_LIFETIME", "3h"),
        ],
    );
    let config = ok(toml, &env);
    assert_eq!(config.base_url.as_str(), "https://express.example.com/");
    assert_eq!(config.oidc.issuer_exact, "https://auth.example.com");
    assert_eq!(config.listen_addr.to_string(), "0.0.0.0:8080");
    assert_eq!(config.oidc.scopes, ["openid", "email"]);
    assert_eq!(config.oidc.par, ParMode::Never);
    assert_eq!(config.session.idle_timeout, Duration::from_secs(7200));
}

#[test]
fn file_alone_with_secrets_from_env() {
    let toml = r#"
        base_url = "https://express.example.com"
        upstream_url = "unix:/run/app.sock"
        [oidc]
        issuer = "https://auth.example.com"
        client_id = "Express.js"
    "#;
    let env = env(&[("OIDC_CLIENT_SECRET", CLIENT_SECRET)]);
    let config = ok(toml, &env);
    assert!(config.session.secret_is_ephemeral);
    assert!(matches!(&config.upstream.target, UpstreamTarget::Unix(p) if p.to_str() == Some("/run/app.sock")));
}

#[test]
fn every_problem_is_reported_at_once_with_its_source_key() {
    let toml = r#"
        [session]
        idle_timeout = "soon"
        max_pending_logins = 0
    "#;
    let env = env(&[("OIDC_ISSUER", "not a url"), ("LISTEN_ADDR", "localhost")]);
    let found = problems(toml, &env);
    assert_problem(&found, "OIDC_ISSUER", "absolute URL");
    assert_problem(&found, "LISTEN_ADDR", "IP address and a port");
    assert_problem(&found, "APP_BASE_URL", "is required");
    assert_problem(&found, "OIDC_CLIENT_ID", "is required");
    assert_problem(&found, "OIDC_CLIENT_SECRET", "is required");
    assert_problem(&found, "UPSTREAM_URL", "is required");
    assert_problem(&found, "session.idle_timeout", "duration");
    assert_problem(&found, "session.max_pending_logins", "between 1 and 20");
    assert_eq!(found.len(), 8, "{found:#?}");
}

#[test]
fn empty_environment_variable_counts_as_unset() {
    let env = with(seed_env(), &[("LISTEN_ADDR", ""), ("SESSION_ENCRYPTION_SECRET", "")]);
    let config = ok(r#"listen_addr = "0.0.0.0:9000""#, &env);
    assert_eq!(config.listen_addr.to_string(), "0.0.0.0:9000");
    assert!(config.session.secret_is_ephemeral);
}

#[test]
fn error_display_lists_one_line_per_problem() {
    let error = match load_str(
        "",
        "test.toml",
        &without(seed_env(), &["OIDC_CLIENT_ID", "UPSTREAM_URL"]),
    ) {
        Err(error) => error,
        Ok(_) => panic!("accepted"),
    };
    let shown = error.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines[0], "invalid configuration:");
    assert_eq!(lines.len(), 3, "{shown}");
    assert!(lines[1].starts_with("  - OIDC_CLIENT_ID: is required"));
    assert!(lines[2].starts_with("  - UPSTREAM_URL: is required"));
}

#[test]
fn a_key_with_control_characters_is_still_one_line() {
    let error = match load_str("\"a\\nb\" = 1\n[oidc]\n\"x\\ty\" = 2\n", "test.toml", &seed_env()) {
        Err(error) => error,
        Ok(_) => panic!("accepted"),
    };
    assert_eq!(error.problems[0].key, "a\nb");
    let shown = error.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 3, "{shown}");
    assert!(lines[1].starts_with("  - a\\nb: unknown key"), "{shown}");
    assert!(lines[2].starts_with("  - oidc.x\\ty: unknown key"), "{shown}");
}

// ---- file shape --------------------------------------------------------------------

#[test]
fn unknown_keys_are_named_all_at_once() {
    let toml = r#"
        listen_adr = "0.0.0.0:1"
        [session]
        cookie_secure = true
        [oidc]
        isuer = "x"
        [[identity.headers]]
        header = "X-User"
        claim = ["sub"]
        [nonsense]
        a = 1
    "#;
    let found = problems(toml, &seed_env());
    assert_problem(&found, "listen_adr", "unknown key");
    assert_problem(&found, "session.cookie_secure", "unknown key (expected one of `secret`");
    assert_problem(&found, "oidc.isuer", "unknown key");
    assert_problem(&found, "identity.headers.claim", "unknown key");
    assert_problem(&found, "nonsense", "unknown key");
    // Validation still ran on what was left: the header entry lacks its claims.
    assert_problem(&found, "identity.headers[0].claims", "non-empty array");
}

#[test]
fn a_section_of_the_wrong_type_is_named() {
    rejects("session = 3", "session", "must be a table");
    rejects("[identity]\nheaders = 3", "identity.headers", "array of tables");
}

#[test]
fn syntax_error_names_file_and_line() {
    let found = problems("[oidc]\nissuer = \"https://x\n", &seed_env());
    assert_eq!(found.len(), 1);
    assert_problem(&found, "test.toml", "line 2");
    // Columns count characters from 1, also after multi-byte ones; toml's message of
    // several lines becomes one.
    let found = problems("# ünïcödé\n[oidc]\nscopes = [\"openid\" \"email\"]\n", &seed_env());
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].message,
        "is not valid TOML at line 3, column 20: invalid array; expected `]`"
    );
}

#[test]
fn wrong_value_types_are_reported_per_key() {
    let toml = r#"
        listen_addr = 4180
        [oidc]
        revoke_on_logout = "maybe"
        scopes = "openid"
        login_rate_burst = "many"
    "#;
    let found = problems(toml, &seed_env());
    assert_problem(&found, "listen_addr", "must be a string");
    assert_problem(&found, "oidc.revoke_on_logout", "true or false");
    assert_problem(&found, "oidc.scopes", "array of strings");
    assert_problem(&found, "oidc.login_rate_burst", "whole number");
}

// ---- base_url, issuer, upstream, listen_addr ---------------------------------------

#[test]
fn base_url_must_be_absolute_http_without_query_or_fragment() {
    rejects_env(&[("APP_BASE_URL", "/relative")], "APP_BASE_URL", "absolute URL");
    rejects_env(&[("APP_BASE_URL", "ftp://example.com")], "APP_BASE_URL", "https://");
    rejects_env(&[("APP_BASE_URL", "https://example.com/?a=b")], "APP_BASE_URL", "query");
    rejects_env(
        &[("APP_BASE_URL", "https://example.com/#x")],
        "APP_BASE_URL",
        "fragment",
    );
    for with_credentials in [
        "https://u:p@example.com",
        "https://u@example.com",
        "https://:p@example.com",
    ] {
        rejects_env(&[("APP_BASE_URL", with_credentials)], "APP_BASE_URL", "password");
    }
}

#[test]
fn a_required_setting_of_the_wrong_type_is_one_problem_not_also_missing() {
    let found = problems("base_url = 443", &without(seed_env(), &["APP_BASE_URL"]));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_problem(&found, "base_url", "must be a string");
}

#[test]
fn base_url_path_prefix_is_kept_and_trailing_slash_dropped() {
    let config = ok("", &with(seed_env(), &[("APP_BASE_URL", "https://example.com/app/")]));
    assert_eq!(config.base_url.as_str(), "https://example.com/app");
    assert_eq!(config.oidc.redirect_url.as_str(), "https://example.com/app/callback");
    let config = ok("[routes]\ncallback = \"/oauth/cb\"", &seed_env());
    assert_eq!(
        config.oidc.redirect_url.as_str(),
        "https://express.example.com/oauth/cb"
    );
}

#[test]
fn cookie_secure_follows_base_url_scheme() {
    let config = ok("", &with(seed_env(), &[("APP_BASE_URL", "http://localhost:4180")]));
    assert!(!config.session.cookie_secure);
}

#[test]
fn issuer_is_kept_exactly_and_refuses_a_trailing_slash() {
    let config = ok(
        "",
        &with(seed_env(), &[("OIDC_ISSUER", "https://auth.example.com/realm")]),
    );
    assert_eq!(config.oidc.issuer_exact, "https://auth.example.com/realm");
    rejects_env(
        &[("OIDC_ISSUER", "https://auth.example.com/")],
        "OIDC_ISSUER",
        "character by character",
    );
    rejects_env(
        &[("OIDC_ISSUER", "https://auth.example.com?x=1")],
        "OIDC_ISSUER",
        "query",
    );
    rejects_env(
        &[("OIDC_ISSUER", "https://auth.example.com#x")],
        "OIDC_ISSUER",
        "fragment",
    );
    rejects_env(&[("OIDC_ISSUER", "auth.example.com")], "OIDC_ISSUER", "absolute URL");
    let found = problems(
        "[oidc]\nissuer = \"https://a.example/\"",
        &without(seed_env(), &["OIDC_ISSUER"]),
    );
    assert_problem(&found, "oidc.issuer", "no trailing slash");
}

#[test]
fn http_issuer_only_on_loopback_or_when_allowed() {
    for issuer in [
        "http://127.0.0.1:9000",
        "http://127.1.2.3",
        "http://localhost:9000",
        "http://[::1]:9000",
    ] {
        let config = ok("", &with(seed_env(), &[("OIDC_ISSUER", issuer)]));
        assert_eq!(config.oidc.issuer_exact, issuer);
    }
    rejects_env(
        &[("OIDC_ISSUER", "http://auth.example.com")],
        "OIDC_ISSUER",
        "must be https",
    );
    rejects_env(&[("OIDC_ISSUER", "http://10.0.0.1")], "OIDC_ISSUER", "must be https");
    let env = with(seed_env(), &[("OIDC_ISSUER", "http://auth.example.com")]);
    assert!(
        ok("[oidc]\nallow_insecure_issuer = true", &env)
            .oidc
            .allow_insecure_issuer
    );
    ok("", &with(env, &[("PORTCULLIS_OIDC_ALLOW_INSECURE_ISSUER", "true")]));
}

#[test]
fn client_id_and_secret_are_required() {
    let found = problems("", &without(seed_env(), &["OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET"]));
    assert_problem(&found, "OIDC_CLIENT_ID", "is required");
    assert_problem(&found, "OIDC_CLIENT_SECRET", "is required: the plaintext client secret");
    let found = problems(
        "[oidc]\nclient_secret = \" \"",
        &without(seed_env(), &["OIDC_CLIENT_SECRET"]),
    );
    assert_problem(&found, "oidc.client_secret", "must not be empty");
}

#[test]
fn upstream_url_forms() {
    let unix = ok("", &with(seed_env(), &[("UPSTREAM_URL", "unix:///run/app.sock")]));
    assert!(matches!(&unix.upstream.target, UpstreamTarget::Unix(p) if p.to_str() == Some("/run/app.sock")));
    let https = ok(
        "",
        &with(seed_env(), &[("UPSTREAM_URL", "https://app.internal:8443/base")]),
    );
    assert!(matches!(&https.upstream.target, UpstreamTarget::Http(u) if u.path() == "/base"));
    for not_a_socket_path in ["unix:run/app.sock", "unix:/", "unix:", "unix:///"] {
        rejects_env(
            &[("UPSTREAM_URL", not_a_socket_path)],
            "UPSTREAM_URL",
            "absolute socket path",
        );
    }
    let shortest = ok("", &with(seed_env(), &[("UPSTREAM_URL", "unix:/s")]));
    assert!(matches!(&shortest.upstream.target, UpstreamTarget::Unix(p) if p.to_str() == Some("/s")));
    rejects_env(
        &[("UPSTREAM_URL", "ftp://files")],
        "UPSTREAM_URL",
        "http://, https:// or unix:/",
    );
    rejects_env(
        &[("UPSTREAM_URL", "127.0.0.1:3000")],
        "UPSTREAM_URL",
        "http://, https:// or unix:/",
    );
    assert_problem(
        &problems("", &without(seed_env(), &["UPSTREAM_URL"])),
        "UPSTREAM_URL",
        "is required",
    );
}

#[test]
fn the_body_idle_timeout_is_read_checked_and_shown_and_0_turns_it_off() {
    an_idle_timeout_is_read_checked_and_shown_and_0_turns_it_off("upstream", |c| c.upstream.body_idle_timeout);
}

#[test]
fn the_client_body_idle_timeout_is_read_checked_and_shown_and_0_turns_it_off() {
    an_idle_timeout_is_read_checked_and_shown_and_0_turns_it_off("server", |c| c.server.body_idle_timeout);
}

/// The lines `describe` shows under `[section]`.
fn shown_in<'a>(shown: &'a str, section: &str) -> &'a str {
    let header = format!("\n[{section}]\n");
    let from = shown.find(&header).map_or(shown.len(), |at| at + header.len() - 1);
    let rest = &shown[from..];
    &rest[..rest.find("\n[").unwrap_or(rest.len())]
}

/// `body_idle_timeout` of `[section]`, which `get` reads back: 5 min by default, from
/// the file or (winning) the environment, shown by `describe` in its section so that it
/// reads back, `0` in any spelling off, and every bad value refused under its key.
fn an_idle_timeout_is_read_checked_and_shown_and_0_turns_it_off(section: &str, get: fn(&Config) -> Option<Duration>) {
    let key = format!("{section}.body_idle_timeout");
    let var = format!("PORTCULLIS_{}_BODY_IDLE_TIMEOUT", section.to_uppercase());
    let in_file = |value: &str| format!("[{section}]\nbody_idle_timeout = {value}");
    let default = ok("", &seed_env());
    assert_eq!(get(&default), Some(Duration::from_secs(300)));
    assert!(shown_in(&default.describe(), section).contains("\nbody_idle_timeout = \"5m\"\n"));
    let file = ok(&in_file("\"90s\""), &seed_env());
    assert_eq!(get(&file), Some(Duration::from_secs(90)));
    assert_eq!(get(&ok(&file.describe(), &seed_env())), Some(Duration::from_secs(90)));
    // The environment wins over the file, as for every key.
    let env = with(seed_env(), &[(var.as_str(), "1500ms")]);
    assert_eq!(get(&ok(&in_file("\"90s\""), &env)), Some(Duration::from_millis(1500)));

    for off in ["0", "0s", "0ms"] {
        let env = with(seed_env(), &[(var.as_str(), off)]);
        let config = ok("", &env);
        assert_eq!(get(&config), None, "{off}");
        let shown = config.describe();
        assert!(
            shown_in(&shown, section).contains("\nbody_idle_timeout = \"0s\"  # off: "),
            "{off}: {shown}"
        );
        // And it reads back as off.
        assert_eq!(get(&ok(&shown, &seed_env())), None);
    }
    assert_eq!(get(&ok(&in_file("0"), &seed_env())), None);

    rejects(&in_file("-1"), &key, "negative");
    rejects(&in_file("\"soon\""), &key, "a duration such as");
    rejects(&in_file("true"), &key, "must be a duration");
    rejects_env(&[(var.as_str(), "5 minutes")], &var, "needs a unit");
}

#[test]
fn listen_addr_must_be_a_socket_address() {
    let config = ok("", &with(seed_env(), &[("LISTEN_ADDR", "[::]:8080")]));
    assert_eq!(config.listen_addr.port(), 8080);
    rejects_env(&[("LISTEN_ADDR", "localhost:4180")], "LISTEN_ADDR", "IP address");
    rejects("listen_addr = \"0.0.0.0\"", "listen_addr", "IP address");
}

// ---- secrets -----------------------------------------------------------------------

#[test]
fn session_secret_must_be_long_enough() {
    rejects_env(
        &[("SESSION_ENCRYPTION_SECRET", "short")],
        "SESSION_ENCRYPTION_SECRET",
        "portcullis generate-secret",
    );
    let short = secret_file("short\n");
    let env = with(
        seed_env(),
        &[
            ("SESSION_ENCRYPTION_SECRET", ""),
            ("SESSION_ENCRYPTION_SECRET_FILE", path_of(&short).as_str()),
        ],
    );
    assert_problem(&problems("", &env), "SESSION_ENCRYPTION_SECRET_FILE", "too short");
    let exactly = "x".repeat(MIN_SECRET_LEN);
    ok(
        "",
        &with(seed_env(), &[("SESSION_ENCRYPTION_SECRET", exactly.as_str())]),
    );
}

fn secret_file(content: &str) -> tempfile::NamedTempFile {
    let mut file = match tempfile::NamedTempFile::new() {
        Ok(file) => file,
        Err(error) => panic!("temp file: {error}"),
    };
    if let Err(error) = file.write_all(content.as_bytes()) {
        panic!("temp file: {error}");
    }
    file
}

fn path_of(file: &tempfile::NamedTempFile) -> String {
    file.path().display().to_string()
}

#[test]
fn file_variants_read_the_secret_and_trim_one_newline() {
    let client = secret_file("from-a-file\n\n");
    let session = secret_file(&format!("{SESSION_SECRET}\r\n"));
    let env = with(
        without(seed_env(), &["OIDC_CLIENT_SECRET", "SESSION_ENCRYPTION_SECRET"]),
        &[
            ("OIDC_CLIENT_SECRET_FILE", path_of(&client).as_str()),
            ("SESSION_ENCRYPTION_SECRET_FILE", path_of(&session).as_str()),
        ],
    );
    let config = ok("", &env);
    assert_eq!(config.oidc.client_secret.expose(), "from-a-file\n");
    assert_eq!(config.session.secret.expose(), SESSION_SECRET);
    assert!(!config.session.secret_is_ephemeral);

    let toml = format!("[oidc]\nclient_secret_file = {:?}", path_of(&client));
    let config = ok(&toml, &without(seed_env(), &["OIDC_CLIENT_SECRET"]));
    assert_eq!(config.oidc.client_secret.expose(), "from-a-file\n");
}

#[test]
fn value_and_file_in_the_same_layer_conflict() {
    let client = secret_file("x");
    rejects_env(
        &[("OIDC_CLIENT_SECRET_FILE", path_of(&client).as_str())],
        "OIDC_CLIENT_SECRET",
        "OIDC_CLIENT_SECRET_FILE",
    );
    let toml = format!(
        "[session]\nsecret = {SESSION_SECRET:?}\nsecret_file = {:?}",
        path_of(&client)
    );
    let found = problems(&toml, &without(seed_env(), &["SESSION_ENCRYPTION_SECRET"]));
    assert_problem(&found, "session.secret", "session.secret_file");
}

#[test]
fn environment_file_variant_beats_the_file_value() {
    let client = secret_file("env-file-secret");
    let env = with(
        without(seed_env(), &["OIDC_CLIENT_SECRET"]),
        &[("OIDC_CLIENT_SECRET_FILE", path_of(&client).as_str())],
    );
    let config = ok("[oidc]\nclient_secret = \"file-value\"", &env);
    assert_eq!(config.oidc.client_secret.expose(), "env-file-secret");
}

#[test]
fn environment_value_beats_the_file_variant_in_the_file() {
    let client = secret_file("file-variant-secret");
    let toml = format!("[oidc]\nclient_secret_file = {:?}", path_of(&client));
    let config = ok(&toml, &seed_env());
    assert_eq!(config.oidc.client_secret.expose(), CLIENT_SECRET);
}

#[test]
fn a_blank_client_secret_is_one_problem_not_also_missing() {
    let found = problems("", &with(seed_env(), &[("OIDC_CLIENT_SECRET", "  ")]));
    let about_secret: Vec<_> = found.iter().filter(|p| p.key == "OIDC_CLIENT_SECRET").collect();
    assert_eq!(about_secret.len(), 1, "{found:#?}");
    assert!(about_secret[0].message.contains("must not be empty"), "{found:#?}");
}

#[test]
fn unreadable_or_empty_secret_file_is_a_problem() {
    rejects_env(
        &[
            ("SESSION_ENCRYPTION_SECRET", ""),
            ("SESSION_ENCRYPTION_SECRET_FILE", "/nonexistent/portcullis-secret"),
        ],
        "SESSION_ENCRYPTION_SECRET_FILE",
        "cannot read /nonexistent/portcullis-secret",
    );
    let empty = secret_file("\n");
    let env = with(
        without(seed_env(), &["OIDC_CLIENT_SECRET"]),
        &[("OIDC_CLIENT_SECRET_FILE", path_of(&empty).as_str())],
    );
    assert_problem(&problems("", &env), "OIDC_CLIENT_SECRET_FILE", "empty file");
}

#[test]
fn a_secret_in_the_wrong_place_is_never_echoed() {
    let toml = format!(
        r#"
        [session]
        cookie_name = "{CLIENT_SECRET}="
        cookie_domain = "{CLIENT_SECRET}.org"
        max_memory = "{CLIENT_SECRET}"
        [log]
        format = "{CLIENT_SECRET}"
        level = "{CLIENT_SECRET}=[["
        [oidc]
        scopes = ["{CLIENT_SECRET} x"]
        par = "{CLIENT_SECRET}"
        [upstream]
        connect_timeout = "{CLIENT_SECRET}"
        [pages]
        show_tokens = "{CLIENT_SECRET}"
        [identity]
        strip_headers = ["{CLIENT_SECRET} "]
        [[identity.headers]]
        header = "{CLIENT_SECRET} "
        claims = []
        "#
    );
    let env = with(
        seed_env(),
        &[
            ("LISTEN_ADDR", CLIENT_SECRET),
            ("APP_BASE_URL", CLIENT_SECRET),
            ("OIDC_ISSUER", CLIENT_SECRET),
            ("UPSTREAM_URL", CLIENT_SECRET),
            ("SESSION_ENCRYPTION_SECRET", "short-secret"),
            ("PORTCULLIS_SESSION_IDLE_TIMEOUT", CLIENT_SECRET),
            ("PORTCULLIS_OIDC_LOGIN_RATE_BURST", CLIENT_SECRET),
        ],
    );
    let error = match load_str(&toml, "test.toml", &env) {
        Err(error) => error,
        Ok(_) => panic!("accepted"),
    };
    assert!(error.problems.len() >= 14, "{error}");
    let shown = error.to_string();
    assert!(!shown.contains("client-secret"), "{shown}");
    assert!(!shown.contains("short-secret"), "{shown}");

    let syntax = problems(&format!("x = \"{CLIENT_SECRET}"), &seed_env());
    assert!(!format!("{syntax:?}").contains("client-secret"));
    let shape = problems(&format!("session = \"{CLIENT_SECRET}\""), &seed_env());
    assert!(!format!("{shape:?}").contains("client-secret"));
}

// ---- describe ----------------------------------------------------------------------

#[test]
fn describe_redacts_every_secret() {
    let config = ok("", &seed_env());
    let text = config.describe();
    assert!(
        !text.contains(CLIENT_SECRET) && !text.contains(SESSION_SECRET),
        "{text}"
    );
    assert!(text.contains("client_secret = \"[redacted]\""));
    assert!(text.contains("\n[session]\nsecret = \"[redacted]\"\n"));
    assert!(text.contains("issuer = \"https://auth.example.com\"\n"));

    let ephemeral = ok("", &without(seed_env(), &["SESSION_ENCRYPTION_SECRET"]));
    let text = ephemeral.describe();
    assert!(text.contains("generated (ephemeral)"));
    assert!(!text.contains(ephemeral.session.secret.expose()));
}

#[test]
fn describe_reads_back_as_the_same_configuration() {
    let toml = r#"
        [session]
        max_memory = 1000
        idle_timeout = "1h30m"
        cookie_domain = ".example.com"
        [policy]
        public_paths = ["/static/", "/robots.txt"]
        allowed_groups = ["admins", "site ops"]
        allowed_email_domains = ["Example.com"]
        [identity]
        access_token = "x-forwarded-access-token"
        strip_headers = ["X-Debug"]
        [[identity.headers]]
        header = "X-User"
        claims = ["email", "sub"]
    "#;
    let config = ok(toml, &seed_env());
    assert_eq!(
        config.identity.access_token,
        AccessTokenForwarding::XForwardedAccessToken
    );
    assert!(config
        .identity
        .strip_headers
        .contains(&http::HeaderName::from_static("x-forwarded-access-token")));
    let first = config.describe();
    let second = ok(&first, &seed_env()).describe();
    assert_eq!(first, second);
}

// ---- session, cookies, limits ------------------------------------------------------

#[test]
fn cookie_names_must_be_tokens() {
    rejects(
        "[session]\ncookie_name = \"my session\"",
        "session.cookie_name",
        "cookie name",
    );
    rejects(
        "[session]\nlogin_cookie_prefix = \"a;b\"",
        "session.login_cookie_prefix",
        "cookie name",
    );
    rejects("[session]\ncookie_name = \"\"", "session.cookie_name", "cookie name");
    rejects(
        "[session]\ncookie_name = \"portcullis_login_x\"",
        "session.cookie_name",
        "login_cookie_prefix",
    );
    let config = ok("[session]\ncookie_name = \"__Host-sid\"", &seed_env());
    assert_eq!(config.session.cookie_name, "__Host-sid");
    let env = with(seed_env(), &[("APP_BASE_URL", "http://localhost:4180")]);
    assert_problem(
        &problems("[session]\ncookie_name = \"__Host-sid\"", &env),
        "session.cookie_name",
        "https",
    );
}

#[test]
fn cookie_domain_must_cover_the_base_url_host() {
    let config = ok("[session]\ncookie_domain = \".Example.com\"", &seed_env());
    assert_eq!(config.session.cookie_domain.as_deref(), Some("example.com"));
    rejects(
        "[session]\ncookie_domain = \"other.org\"",
        "session.cookie_domain",
        "parent domain",
    );
    rejects(
        "[session]\ncookie_domain = \"exa mple.com\"",
        "session.cookie_domain",
        "domain name",
    );
    rejects(
        "[session]\ncookie_name = \"__Host-s\"\ncookie_domain = \"example.com\"",
        "session.cookie_domain",
        "__Host-",
    );
}

#[test]
fn session_limits() {
    rejects(
        "[session]\nmax_pending_logins = 0",
        "session.max_pending_logins",
        "between 1 and 20",
    );
    rejects(
        "[session]\nmax_pending_logins = 21",
        "session.max_pending_logins",
        "between 1 and 20",
    );
    assert_eq!(
        ok("[session]\nmax_pending_logins = 20", &seed_env())
            .session
            .max_pending_logins,
        20
    );
    rejects(
        "[session]\nidle_timeout = 0",
        "session.idle_timeout",
        "longer than zero",
    );
    rejects(
        "[session]\nidle_timeout = \"2h\"\nmax_lifetime = \"1h\"",
        "session.max_lifetime",
        "idle_timeout",
    );
    // Equal is fine: a session then ends after that long whether it is used or not.
    let config = ok("[session]\nidle_timeout = \"2h\"\nmax_lifetime = \"2h\"", &seed_env());
    assert_eq!(config.session.max_lifetime, config.session.idle_timeout);
    rejects_env(
        &[("PORTCULLIS_OIDC_LOGIN_RATE_PER_SECOND", "0")],
        "PORTCULLIS_OIDC_LOGIN_RATE_PER_SECOND",
        "between 1",
    );
    rejects(
        "[session]\nmax_memory = \"0\"",
        "session.max_memory",
        "larger than zero",
    );
    rejects("[session]\nmax_memory = -5", "session.max_memory", "negative");
    assert_eq!(
        ok("[session]\nmax_memory = \"64KiB\"", &seed_env())
            .session
            .max_memory_bytes,
        65536
    );
}

#[test]
fn the_per_client_login_limit_is_read_checked_and_shown() {
    let config = ok(
        "[oidc]\nlogin_rate_per_client_per_minute = 12\nlogin_rate_per_client_burst = 4",
        &seed_env(),
    );
    assert_eq!(
        (
            config.oidc.login_rate_per_client_per_minute,
            config.oidc.login_rate_per_client_burst
        ),
        (12, 4)
    );
    let shown = config.describe();
    for line in [
        "login_rate_per_client_per_minute = 12\n",
        "login_rate_per_client_burst = 4\n",
        // A bucket refills in 20 s: 100 + 20 × 20 clients hold state at most, four slots each.
        "# per client: an IPv4 address or an IPv6 /64; 2048 clients tracked at most (",
    ] {
        assert!(shown.contains(line), "{line:?} not in\n{shown}");
    }
    // 0 turns it off; the burst then does nothing, but is still checked.
    let env = [
        ("PORTCULLIS_OIDC_LOGIN_RATE_PER_CLIENT_PER_MINUTE", "0"),
        ("PORTCULLIS_OIDC_LOGIN_RATE_PER_CLIENT_BURST", "7"),
    ];
    let off = ok("", &with(seed_env(), &env));
    assert_eq!(off.oidc.login_rate_per_client_per_minute, 0);
    assert!(off
        .describe()
        .contains("login_rate_per_client_per_minute = 0  # off: the global limit alone\n"));
    assert!(!off.describe().contains("clients tracked"));
    rejects_env(
        &[("PORTCULLIS_OIDC_LOGIN_RATE_PER_CLIENT_BURST", "0")],
        "PORTCULLIS_OIDC_LOGIN_RATE_PER_CLIENT_BURST",
        "between 1",
    );
    rejects(
        "[oidc]\nlogin_rate_per_client_per_minute = -1",
        "oidc.login_rate_per_client_per_minute",
        "whole number",
    );
    rejects(
        "[oidc]\nlogin_rate_per_client_per_minute = \"often\"",
        "oidc.login_rate_per_client_per_minute",
        "whole number",
    );
}

#[test]
fn a_per_client_login_limit_no_stricter_than_the_global_one_is_warned_about() {
    for toml in [
        // 20/s is 1200/min.
        "[oidc]\nlogin_rate_per_client_per_minute = 1200",
        "[oidc]\nlogin_rate_per_client_burst = 100",
        "[oidc]\nlogin_rate_per_second = 1\nlogin_rate_burst = 5",
    ] {
        let config = ok(toml, &seed_env());
        let warnings = config.oidc.warnings();
        assert!(
            warnings.len() == 1 && warnings[0].contains("one client can use the whole login budget"),
            "{toml}: {warnings:?}"
        );
        assert!(
            config.describe().contains("# warning: oidc.login_rate_per_client"),
            "{toml}"
        );
    }
    for quiet in [
        "[oidc]\nlogin_rate_per_client_per_minute = 1199\nlogin_rate_per_client_burst = 99",
        "[oidc]\nlogin_rate_per_client_per_minute = 0\nlogin_rate_per_client_burst = 500",
    ] {
        assert!(ok(quiet, &seed_env()).oidc.warnings().is_empty(), "{quiet}");
    }
}

#[test]
fn portcullis_variables_reach_every_section() {
    let env = with(
        seed_env(),
        &[
            ("PORTCULLIS_OIDC_PAR", "Always"),
            ("PORTCULLIS_OIDC_REVOKE_ON_LOGOUT", "no"),
            ("PORTCULLIS_UPSTREAM_RESPONSE_TIMEOUT", "90"),
            ("PORTCULLIS_PAGES_SHOW_TOKENS", "false"),
            ("PORTCULLIS_SERVER_SHUTDOWN_GRACE", "0s"),
            ("PORTCULLIS_LOG_FORMAT", "json"),
            ("PORTCULLIS_LOG_LEVEL", "portcullis=debug,info"),
            ("PORTCULLIS_ROUTES_PREFIX", "/_auth"),
            ("PORTCULLIS_SESSION_MAX_MEMORY", "1GB"),
            ("PORTCULLIS_IDENTITY_ACCESS_TOKEN", "authorization"),
        ],
    );
    let config = ok("", &env);
    assert_eq!(config.oidc.par, ParMode::Always);
    assert!(!config.oidc.revoke_on_logout);
    assert_eq!(config.upstream.response_timeout, Duration::from_secs(90));
    assert!(!config.pages.show_tokens);
    assert_eq!(config.server.shutdown_grace, Duration::ZERO);
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(config.log.level, "portcullis=debug,info");
    assert_eq!(config.routes.login(), "/_auth/login");
    assert_eq!(config.session.max_memory_bytes, 1_000_000_000);
    assert_eq!(config.identity.access_token, AccessTokenForwarding::AuthorizationBearer);
    assert!(config.identity.strip_headers.contains(&http::header::AUTHORIZATION));
    rejects_env(
        &[("PORTCULLIS_OIDC_PAR", "sometimes")],
        "PORTCULLIS_OIDC_PAR",
        "\"auto\", \"always\", \"never\"",
    );
    for level in ["=[[", "  "] {
        rejects_env(
            &[("PORTCULLIS_LOG_LEVEL", level)],
            "PORTCULLIS_LOG_LEVEL",
            "tracing filter",
        );
    }
    // tracing takes an empty filter for "nothing"; here it is a mistake.
    rejects("[log]\nlevel = \"\"", "log.level", "tracing filter");
}

// ---- scopes ------------------------------------------------------------------------

#[test]
fn scopes_from_env_are_space_separated_and_need_openid() {
    let config = ok(
        "",
        &with(seed_env(), &[("OIDC_SCOPES", "openid  profile offline_access openid")]),
    );
    assert_eq!(config.oidc.scopes, ["openid", "profile", "offline_access"]);
    rejects_env(
        &[("OIDC_SCOPES", "profile email")],
        "OIDC_SCOPES",
        "must include `openid`",
    );
    rejects("[oidc]\nscopes = [\"profile\"]", "oidc.scopes", "must include `openid`");
    rejects("[oidc]\nscopes = []", "oidc.scopes", "must include `openid`");
    rejects("[oidc]\nscopes = [\"openid\", \"a\\\"b\"]", "oidc.scopes", "characters");
    rejects("[oidc]\nscopes = [\"openid\", \"a\\\\b\"]", "oidc.scopes", "characters");
    rejects("[oidc]\nscopes = [\"openid\", \"\"]", "oidc.scopes", "characters");
    // Every byte RFC 6749 allows in a scope: `!`, `#` to `[`, `]` to `~`.
    let config = ok(
        "",
        &with(seed_env(), &[("OIDC_SCOPES", "openid ! #09:AZ[ ]az~ api:Read.v2")]),
    );
    assert_eq!(config.oidc.scopes, ["openid", "!", "#09:AZ[", "]az~", "api:Read.v2"]);
}

// ---- routes ------------------------------------------------------------------------

#[test]
fn route_paths_are_checked() {
    rejects("[routes]\ncallback = \"callback\"", "routes.callback", "start with `/`");
    rejects("[routes]\ncallback = \"/a b\"", "routes.callback", "only letters");
    rejects("[routes]\ncallback = \"/a//b\"", "routes.callback", "segments");
    rejects("[routes]\ncallback = \"/a/../b\"", "routes.callback", "segments");
    rejects("[routes]\ncallback = \"/a/\"", "routes.callback", "segments");
    rejects("[routes]\ncallback = \"/\"", "routes.callback", "root");
    rejects("[routes]\ncallback = \"\"", "routes.callback", "start with `/`");
    let config = ok("[routes]\ncallback = \"/c\"\nprefix = \"/a\"", &seed_env());
    assert_eq!(
        (config.routes.callback.as_str(), config.routes.prefix.as_str()),
        ("/c", "/a")
    );
    rejects(
        "[routes]\nprefix = \"/.auth/\"",
        "routes.prefix",
        "must not end with `/`",
    );
    rejects("[routes]\nprefix = \"/\"", "routes.prefix", "root");
    rejects("[routes]\nprefix = \"auth\"", "routes.prefix", "start with `/`");
    rejects(
        "[routes]\ncallback = \"/.auth/login\"",
        "routes.callback",
        "reserved route",
    );
    rejects(
        "[routes]\nprefix = \"/oauth2\"\ncallback = \"/oauth2\"",
        "routes.callback",
        "reserved route",
    );
    let config = ok(
        "[routes]\nprefix = \"/oauth2\"\ncallback = \"/oauth2/callback\"",
        &seed_env(),
    );
    assert_eq!(config.oidc.redirect_url.path(), "/oauth2/callback");
}

// ---- policy ------------------------------------------------------------------------

#[test]
fn the_policy_is_empty_by_default() {
    let config = ok("", &seed_env());
    assert!(config.policy.public_paths.is_empty());
    assert!(config.policy.allowed_groups.is_empty());
    assert!(config.policy.allowed_email_domains.is_empty());
}

#[test]
fn policy_lists_from_the_file() {
    let toml = r#"
        [policy]
        public_paths = ["/static/", "/robots.txt", "/favicon.ico", "/static/", "/.well-known/security.txt"]
        allowed_groups = ["admins", "site ops", "admins"]
        allowed_email_domains = ["Example.COM", "corp.example", "example.com"]
    "#;
    let config = ok(toml, &seed_env());
    assert_eq!(
        config.policy.public_paths,
        ["/static/", "/robots.txt", "/favicon.ico", "/.well-known/security.txt"]
    );
    assert_eq!(config.policy.allowed_groups, ["admins", "site ops"]);
    assert_eq!(config.policy.allowed_email_domains, ["example.com", "corp.example"]);
}

#[test]
fn policy_lists_from_the_environment_are_words() {
    let env = with(
        seed_env(),
        &[
            ("PORTCULLIS_POLICY_PUBLIC_PATHS", "/static/ /robots.txt,/favicon.ico"),
            ("PORTCULLIS_POLICY_ALLOWED_GROUPS", "admins, dev"),
            ("PORTCULLIS_POLICY_ALLOWED_EMAIL_DOMAINS", "example.com"),
        ],
    );
    let config = ok("[policy]\npublic_paths = [\"/from-the-file\"]", &env);
    assert_eq!(config.policy.public_paths, ["/static/", "/robots.txt", "/favicon.ico"]);
    assert_eq!(config.policy.allowed_groups, ["admins", "dev"]);
    assert_eq!(config.policy.allowed_email_domains, ["example.com"]);
    rejects_env(
        &[("PORTCULLIS_POLICY_PUBLIC_PATHS", "/ok/ /a/../b")],
        "PORTCULLIS_POLICY_PUBLIC_PATHS[1]",
        "`..`",
    );
    rejects_env(
        &[("PORTCULLIS_POLICY_ALLOWED_EMAIL_DOMAINS", "*")],
        "PORTCULLIS_POLICY_ALLOWED_EMAIL_DOMAINS[0]",
        "not a wildcard",
    );
}

#[test]
fn each_ambiguous_or_reserved_public_path_is_refused() {
    for (entry, fragment) in [
        ("static/", "absolute path"),
        ("", "absolute path"),
        ("/", "whole app public"),
        ("/a/../admin/", "`..`"),
        ("/a/./b", "`..`"),
        ("/a/..", "`..`"),
        ("/a//b", "`//`"),
        ("//a", "`//`"),
        ("/a%2e%2e/", "`%`"),
        ("/publi%63/", "`%`"),
        ("/a;b/", "`;`"),
        ("/a\\b", "`\\`"),
        ("/a?b", "query"),
        ("/a#b", "fragment"),
        ("/a b", "spaces"),
        ("/café/", "only letters"),
        ("/.auth", "routes.prefix"),
        ("/.auth/", "routes.prefix"),
        ("/.auth/me", "routes.prefix"),
        ("/.auth/anything/", "routes.prefix"),
        ("/callback", "routes.callback"),
        ("/callback/", "routes.callback"),
        ("/callback/x", "routes.callback"),
    ] {
        let toml = format!("[policy]\npublic_paths = ['/fine/', '{entry}']");
        let found = problems(&toml, &seed_env());
        assert_problem(&found, "policy.public_paths[1]", fragment);
        assert_eq!(found.len(), 1, "{entry:?}: {found:#?}");
    }
    // Near the reserved routes but not under them.
    let config = ok(
        "[policy]\npublic_paths = [\"/.authx/\", \"/callbackx\", \"/.well-known/\"]",
        &seed_env(),
    );
    assert_eq!(config.policy.public_paths.len(), 3);
    // The reserved routes follow their configuration.
    rejects(
        "[routes]\nprefix = \"/oauth2\"\ncallback = \"/oauth2/callback\"\n[policy]\npublic_paths = [\"/oauth2/\"]",
        "policy.public_paths[0]",
        "routes.prefix",
    );
    ok(
        "[routes]\nprefix = \"/oauth2\"\n[policy]\npublic_paths = [\"/.auth/\"]",
        &seed_env(),
    );
}

#[test]
fn a_rule_on_a_claim_the_scopes_do_not_ask_for_is_warned_about() {
    let env = with(
        seed_env(),
        &[
            ("OIDC_SCOPES", "openid profile"),
            ("PORTCULLIS_POLICY_ALLOWED_GROUPS", "admins"),
            ("PORTCULLIS_POLICY_ALLOWED_EMAIL_DOMAINS", "example.com"),
        ],
    );
    let config = ok("", &env);
    let warnings = config.policy.warnings(&config.oidc.scopes);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("`groups`") && warnings[1].contains("`email`"));
    assert!(config.describe().contains("# warning: policy.allowed_groups is set"));
    let config = ok("", &with(seed_env(), &[("PORTCULLIS_POLICY_ALLOWED_GROUPS", "admins")]));
    assert!(config.policy.warnings(&config.oidc.scopes).is_empty());
    // Scopes without `groups` and `email` are no concern when no rule reads those claims.
    let config = ok("", &with(seed_env(), &[("OIDC_SCOPES", "openid profile")]));
    assert!(config.policy.warnings(&config.oidc.scopes).is_empty());
}

#[test]
fn allowed_groups_and_email_domains_are_checked() {
    rejects("[policy]\nallowed_groups = [\"\"]", "policy.allowed_groups[0]", "empty");
    rejects(
        "[policy]\nallowed_groups = [\"ok\", \" admins\"]",
        "policy.allowed_groups[1]",
        "spaces",
    );
    rejects(
        "[policy]\nallowed_groups = \"admins\"",
        "policy.allowed_groups",
        "array of strings",
    );
    for (domain, fragment) in [
        ("*", "not a wildcard"),
        ("@example.com", "without `@`"),
        ("*.example.com", "without `*.`"),
        ("example..com", "domain name"),
        (".example.com", "domain name"),
        ("example.com.", "domain name"),
        ("-x.example", "domain name"),
        ("ex ample.com", "domain name"),
        ("bücher.example", "xn--"),
    ] {
        rejects(
            &format!("[policy]\nallowed_email_domains = [\"{domain}\"]"),
            "policy.allowed_email_domains[0]",
            fragment,
        );
    }
    // A host name: at most 253 characters, labels of at most 63.
    let name = |last_label: usize| {
        format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(last_label)
        )
    };
    let longest = name(61);
    let config = ok(
        &format!("[policy]\nallowed_email_domains = [\"{longest}\"]"),
        &seed_env(),
    );
    assert_eq!(config.policy.allowed_email_domains, [longest]);
    for too_long in [name(62), format!("{}.example", "a".repeat(64))] {
        rejects(
            &format!("[policy]\nallowed_email_domains = [\"{too_long}\"]"),
            "policy.allowed_email_domains[0]",
            "domain name",
        );
    }
    rejects(
        "[policy]\npublic_paths = [\"/a\", 1]",
        "policy.public_paths",
        "array of strings",
    );
    rejects("[policy]\nallowed = []", "policy.allowed", "unknown key");
}

// ---- identity headers --------------------------------------------------------------

#[test]
fn configured_identity_headers_replace_the_defaults_and_are_stripped() {
    let toml = r#"
        [identity]
        strip_headers = ["X-Debug-User"]
        [[identity.headers]]
        header = "X-User"
        claims = ["preferred_username", "sub"]
        [[identity.headers]]
        header = "x-groups"
        claims = ["groups"]
    "#;
    let config = ok(toml, &seed_env());
    let names: Vec<&str> = config.identity.headers.iter().map(|h| h.header.as_str()).collect();
    assert_eq!(names, ["x-user", "x-groups"]);
    let stripped: Vec<&str> = config.identity.strip_headers.iter().map(|h| h.as_str()).collect();
    assert_eq!(
        stripped,
        [
            "x-user",
            "x-groups",
            "remote-user",
            "remote-groups",
            "remote-name",
            "remote-email",
            "x-debug-user"
        ]
    );

    let defaults = ok("", &seed_env());
    let stripped: Vec<&str> = defaults.identity.strip_headers.iter().map(|h| h.as_str()).collect();
    assert_eq!(
        stripped,
        ["remote-user", "remote-groups", "remote-name", "remote-email"]
    );
}

#[test]
fn identity_headers_from_the_environment() {
    let env = with(
        seed_env(),
        &[(
            "PORTCULLIS_IDENTITY_HEADERS",
            "X-User=preferred_username|sub, X-Mail=email",
        )],
    );
    let config = ok("", &env);
    assert_eq!(config.identity.headers[0].claims, ["preferred_username", "sub"]);
    assert_eq!(config.identity.headers[1].header.as_str(), "x-mail");
    rejects_env(
        &[("PORTCULLIS_IDENTITY_HEADERS", "X-User")],
        "PORTCULLIS_IDENTITY_HEADERS",
        "must look like",
    );
    rejects_env(
        &[("PORTCULLIS_IDENTITY_HEADERS", "X User=sub")],
        "PORTCULLIS_IDENTITY_HEADERS",
        "valid header name",
    );
}

#[test]
fn identity_header_names_are_checked() {
    let entry = |header: &str, claims: &str| format!("[[identity.headers]]\nheader = {header:?}\nclaims = {claims}\n");
    rejects(
        &entry("Remote User", "[\"sub\"]"),
        "identity.headers[0].header",
        "valid header name",
    );
    rejects(
        &entry("Cookie", "[\"sub\"]"),
        "identity.headers[0].header",
        "manages itself",
    );
    rejects(
        &entry("X-Forwarded-User", "[\"sub\"]"),
        "identity.headers[0].header",
        "manages itself",
    );
    rejects(&entry("X-A", "[]"), "identity.headers[0].claims", "non-empty");
    rejects(&entry("X-A", "[\"\"]"), "identity.headers[0].claims", "non-empty");
    let twice = format!("{}{}", entry("X-A", "[\"sub\"]"), entry("x-a", "[\"email\"]"));
    rejects(&twice, "identity.headers[1].header", "already listed");
    let bearer = format!(
        "[identity]\naccess_token = \"authorization\"\n{}",
        entry("Authorization", "[\"sub\"]")
    );
    rejects(&bearer, "identity.headers[0].header", "access_token");
    rejects(
        "[identity]\nstrip_headers = [\"bad header\"]",
        "identity.strip_headers",
        "valid header name",
    );
    rejects(
        "[[identity.headers]]\nclaims = [\"sub\"]",
        "identity.headers[0].header",
        "required",
    );
}

// ---- durations and sizes -----------------------------------------------------------

#[test]
fn duration_parser() {
    let cases = [
        ("30s", 30_000),
        ("10m", 600_000),
        ("1h", 3_600_000),
        ("12h", 43_200_000),
        ("500ms", 500),
        ("1h30m", 5_400_000),
        ("2d", 172_800_000),
        ("45", 45_000),
        (" 5s ", 5000),
        ("0", 0),
        ("1m500ms", 60_500),
    ];
    for (text, millis) in cases {
        assert_eq!(parse_duration(text), Ok(Duration::from_millis(millis)), "{text}");
    }
    for (bad, says) in [
        ("", "is empty"),
        ("s", "expected a duration"),
        ("10x", "unknown unit"),
        ("1.5h", "needs a unit"),
        ("-3s", "expected a duration"),
        ("10 s", "needs a unit"),
        ("1h30", "needs a unit"),
        ("h1", "expected a duration"),
        ("1h 30m", "expected a duration"),
        ("99999999999999999999", "is too large"),
        ("99999999999999999999s", "is too large"),
        ("18446744073709551615d", "is too large"),
    ] {
        match parse_duration(bad) {
            Ok(parsed) => panic!("{bad:?} accepted as {parsed:?}"),
            Err(message) => assert!(message.contains(says), "{bad:?}: {message}"),
        }
    }
}

#[test]
fn duration_format_round_trips() {
    for millis in [0, 500, 1000, 90_000, 3_600_000, 5_400_500, 86_400_000 + 1000] {
        let duration = Duration::from_millis(millis);
        let text = format_duration(duration);
        assert_eq!(parse_duration(&text), Ok(duration), "{text}");
    }
    assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
}

#[test]
fn size_parser() {
    for (text, bytes) in [
        ("12345", 12345),
        ("7B", 7),
        ("2KB", 2_000),
        ("2kB", 2_000),
        ("3MB", 3_000_000),
        ("1GB", 1_000_000_000),
        ("4 KiB", 4096),
        ("256MiB", 256 << 20),
        ("5GiB", 5 << 30),
        ("18446744073GB", 18_446_744_073_000_000_000),
        ("17179869183GiB", 17_179_869_183 << 30),
    ] {
        assert_eq!(parse_size(text), Ok(bytes), "{text}");
    }
    for (bytes, text) in [
        (0, "0"),
        (1000, "1000"),
        (1536, "1536"),
        (5 << 10, "5KiB"),
        (1536 << 10, "1536KiB"),
        (256 << 20, "256MiB"),
        (3 << 30, "3GiB"),
    ] {
        assert_eq!(duration::format_size(bytes), text);
        assert_eq!(parse_size(text), Ok(bytes), "{text}");
    }
    assert!(parse_size("18446744074GB").is_err());
    assert!(parse_size("17179869184GiB").is_err());
    assert!(parse_size("12 parsecs").is_err());
    assert!(parse_size("MiB").is_err());
    assert!(parse_size("99999999999GiB").is_err());
}

// ---- the example file --------------------------------------------------------------

const EXAMPLE: &str = include_str!("../../proxy.toml.example");

#[test]
fn example_file_parses_with_the_secret_set() {
    let config = ok(EXAMPLE, &env(&[("OIDC_CLIENT_SECRET", CLIENT_SECRET)]));
    assert_eq!(
        config.oidc.redirect_url.as_str(),
        "https://express.example.com/callback"
    );
    assert_eq!(config.oidc.client_id, "Express.js");
    assert!(EXAMPLE.contains("- 'https://express.example.com/callback'"));
}

/// Every `#key = value` line of the example, uncommented, gives the defaults back: the
/// documented defaults are the real ones. (`_file` twins would conflict and are skipped.)
#[test]
fn example_file_defaults_are_the_real_defaults() {
    let uncommented: String = EXAMPLE
        .lines()
        .filter(|line| !line.starts_with("#client_secret_file") && !line.starts_with("#secret_file"))
        .map(|line| match line.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '[') => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let env = env(&[
        ("SESSION_ENCRYPTION_SECRET", SESSION_SECRET),
        ("OIDC_CLIENT_SECRET", CLIENT_SECRET),
    ]);
    let all = ok(&uncommented, &env);
    let defaults = ok(EXAMPLE, &env);
    let strip_domain = |text: String| text.replace("cookie_domain = \"example.com\"\n", "");
    let described = strip_domain(all.describe());
    let expected = defaults
        .describe()
        .replace("# cookie_domain unset: host-only cookies\n", "");
    assert_eq!(described, expected);
}

#[test]
fn transport_defaults_are_safe() {
    let config = ok("", &seed_env());
    assert!(config.server.tls.is_none());
    assert!(!config.server.h2c);
    assert_eq!(config.server.max_headers, 100);
    assert_eq!(config.server.max_header_bytes, 64 * 1024);
    assert!(config.server.trusted_proxies.is_empty());
    assert!(config.upstream.preserve_host);
    assert!(!config.upstream.http2);
}

#[test]
fn connection_workers_default_to_one_per_core_and_take_a_count() {
    let config = ok("", &seed_env());
    assert_eq!(config.server.workers, None);
    assert!(config.describe().contains("# workers unset: one per core ("));
    let config = ok("[server]\nworkers = 3\n", &seed_env());
    assert_eq!(config.server.workers, Some(3));
    assert!(config.describe().contains("\nworkers = 3\n"));
    let config = ok("", &with(seed_env(), &[("PORTCULLIS_SERVER_WORKERS", "1")]));
    assert_eq!(config.server.workers, Some(1));
    rejects("[server]\nworkers = 0\n", "server.workers", "between 1 and 1024");
    rejects_env(
        &[("PORTCULLIS_SERVER_WORKERS", "many")],
        "PORTCULLIS_SERVER_WORKERS",
        "whole number",
    );
}

#[test]
fn tls_needs_both_the_certificate_and_the_key() {
    rejects(
        "[server]\ntls_cert_file = \"/etc/cert.pem\"\n",
        "server.tls_key_file",
        "is required",
    );
    rejects(
        "[server]\ntls_key_file = \"/etc/key.pem\"\n",
        "server.tls_cert_file",
        "is required",
    );
    let config = ok(
        "[server]\ntls_cert_file = \"/c.pem\"\ntls_key_file = \"/k.pem\"\n",
        &seed_env(),
    );
    assert_eq!(
        config.server.tls.map(|t| t.key),
        Some(std::path::PathBuf::from("/k.pem"))
    );
}

#[test]
fn trusted_proxies_take_addresses_and_ranges() {
    let config = ok(
        "",
        &with(
            seed_env(),
            &[("PORTCULLIS_SERVER_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1 ::1")],
        ),
    );
    let shown: Vec<String> = config.server.trusted_proxies.iter().map(|n| n.to_string()).collect();
    assert_eq!(shown, ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]);
    assert!(config.server.warnings().is_empty());
    for everyone in ["0.0.0.0/0", "10.0.0.1, ::/0"] {
        let config = ok(
            "",
            &with(seed_env(), &[("PORTCULLIS_SERVER_TRUSTED_PROXIES", everyone)]),
        );
        let warnings = config.server.warnings();
        assert!(
            warnings.len() == 1 && warnings[0].contains("every address"),
            "{everyone}: {warnings:?}"
        );
        assert!(config
            .describe()
            .contains("# warning: server.trusted_proxies trusts every address"));
    }
    rejects_env(
        &[("PORTCULLIS_SERVER_TRUSTED_PROXIES", "10.0.0.0/33")],
        "PORTCULLIS_SERVER_TRUSTED_PROXIES",
        "CIDR",
    );
}

#[test]
fn the_https_redirect_listener_needs_an_https_base_url() {
    rejects_env(
        &[
            ("APP_BASE_URL", "http://localhost:4180"),
            ("PORTCULLIS_SERVER_HTTP_REDIRECT_ADDR", "127.0.0.1:8080"),
        ],
        "PORTCULLIS_SERVER_HTTP_REDIRECT_ADDR",
        "https",
    );
    rejects_env(
        &[("PORTCULLIS_SERVER_HTTP_REDIRECT_ADDR", "port 80")],
        "PORTCULLIS_SERVER_HTTP_REDIRECT_ADDR",
        "address",
    );
}

#[test]
fn an_invalid_upstream_server_name_is_refused() {
    rejects(
        "[upstream]\ntls_server_name = \"not a name\"\n",
        "upstream.tls_server_name",
        "DNS name",
    );
}

#[test]
fn upstream_tls_settings_need_an_https_upstream() {
    rejects("[upstream]\nca_file = \"/etc/ca.pem\"\n", "upstream.ca_file", "https");
    let config = ok(
        "upstream_url = \"https://10.0.0.5:8443\"\n[upstream]\ntls_server_name = \"app.internal\"\n",
        &without(seed_env(), &["UPSTREAM_URL"]),
    );
    assert_eq!(config.upstream.tls_server_name.as_deref(), Some("app.internal"));
}

/// The upstream's CA file is read while loading, so `portcullis check` reports it.
#[test]
fn the_upstream_ca_file_is_read_and_checked_with_the_configuration() {
    let https = without(seed_env(), &["UPSTREAM_URL"]);
    let file = |content: &[u8]| {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        std::io::Write::write_all(&mut file, content).expect("write");
        file
    };
    let toml = |path: &std::path::Path| {
        format!(
            "upstream_url = \"https://10.0.0.5:8443\"\n[upstream]\nca_file = \"{}\"\n",
            path.display()
        )
    };

    let pem = rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()])
        .expect("certificate")
        .cert
        .pem();
    let good = file(pem.as_bytes());
    let config = ok(&toml(good.path()), &https);
    let ca = config.upstream.ca_file.expect("the CA file is kept");
    assert_eq!((ca.path.as_path(), ca.pem.as_slice()), (good.path(), pem.as_bytes()));
    assert_eq!(ca.certificates().len(), 1);

    let missing = good.path().with_extension("missing");
    let found = problems(&toml(&missing), &https);
    assert_problem(
        &found,
        "upstream.ca_file",
        &format!("cannot read {}", missing.display()),
    );

    // Problems name the file, never its content.
    let garbage = file(b"-----BEGIN CERTIFICATE-----\nSECRET-LOOKING-CONTENT\n");
    let found = problems(&toml(garbage.path()), &https);
    assert_problem(&found, "upstream.ca_file", "holds no readable PEM certificate");
    assert!(!format!("{found:?}").contains("SECRET-LOOKING"), "{found:?}");

    let key_only = file(rcgen::KeyPair::generate().expect("key").serialize_pem().as_bytes());
    let found = problems(&toml(key_only.path()), &https);
    assert_problem(&found, "upstream.ca_file", "holds no readable PEM certificate");

    // Not read at all for a plain upstream: the only problem is that it does not apply.
    let found = problems(
        &format!("[upstream]\nca_file = \"{}\"\n", missing.display()),
        &seed_env(),
    );
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_problem(&found, "upstream.ca_file", "only applies to an https upstream_url");
}

/// The provider's CA file: read and checked while loading (from the file or the
/// environment), kept, shown by `describe` so that it reads back, and refused for an
/// http issuer, where it would mean nothing.
#[test]
fn the_oidc_ca_file_is_read_checked_and_shown_for_an_https_issuer() {
    let file = |content: &[u8]| {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        std::io::Write::write_all(&mut file, content).expect("write");
        file
    };
    let in_file = |path: &std::path::Path| format!("[oidc]\nca_file = \"{}\"\n", path.display());
    let pem = rcgen::generate_simple_self_signed(vec!["auth.internal".to_owned()])
        .expect("certificate")
        .cert
        .pem();
    let good = file(pem.as_bytes());

    let unset = ok("", &seed_env());
    assert_eq!(unset.oidc.ca_file, None);
    assert!(shown_in(&unset.describe(), "oidc").contains("\n# ca_file unset: system roots only\n"));

    let config = ok(&in_file(good.path()), &seed_env());
    let ca = config.oidc.ca_file.clone().expect("the CA file is kept");
    assert_eq!((ca.path.as_path(), ca.pem.as_slice()), (good.path(), pem.as_bytes()));
    assert_eq!(ca.certificates().len(), 1);
    let shown = config.describe();
    assert!(
        shown_in(&shown, "oidc").contains(&format!("\nca_file = \"{}\"\n", good.path().display())),
        "{shown}"
    );
    assert_eq!(ok(&shown, &seed_env()).oidc.ca_file, Some(ca.clone()));
    assert!(!shown.contains("BEGIN CERTIFICATE"), "{shown}");
    // From the environment, as every key.
    let good_path = good.path().display().to_string();
    let from_env = ok(
        "",
        &with(seed_env(), &[("PORTCULLIS_OIDC_CA_FILE", good_path.as_str())]),
    );
    assert_eq!(from_env.oidc.ca_file, Some(ca));

    let missing = good.path().with_extension("missing");
    assert_problem(
        &problems(&in_file(&missing), &seed_env()),
        "oidc.ca_file",
        &format!("cannot read {}", missing.display()),
    );
    let empty = file(b"");
    rejects(
        &in_file(empty.path()),
        "oidc.ca_file",
        "holds no readable PEM certificate",
    );
    // Problems name the file, never its content.
    let garbage = file(b"-----BEGIN CERTIFICATE-----\nSECRET-LOOKING-CONTENT\n");
    let found = problems(&in_file(garbage.path()), &seed_env());
    assert_problem(&found, "oidc.ca_file", "holds no readable PEM certificate");
    assert!(!format!("{found:?}").contains("SECRET-LOOKING"), "{found:?}");
    let key_only = file(rcgen::KeyPair::generate().expect("key").serialize_pem().as_bytes());
    let missing_path = missing.display().to_string();
    rejects_env(
        &[(
            "PORTCULLIS_OIDC_CA_FILE",
            key_only.path().to_str().expect("a UTF-8 path"),
        )],
        "PORTCULLIS_OIDC_CA_FILE",
        "holds no readable PEM certificate",
    );

    // An http issuer (loopback) takes no CA file: not read, the one problem is that.
    let http = with(seed_env(), &[("OIDC_ISSUER", "http://127.0.0.1:9091")]);
    let found = problems("", &with(http, &[("PORTCULLIS_OIDC_CA_FILE", missing_path.as_str())]));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_problem(
        &found,
        "PORTCULLIS_OIDC_CA_FILE",
        "only applies to an https oidc.issuer",
    );

    let oidc_section = shown_in(EXAMPLE, "oidc");
    assert!(
        oidc_section.contains("\n#   ca_file = \""),
        "proxy.toml.example's [oidc] lacks ca_file"
    );
}
