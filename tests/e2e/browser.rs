//! One real browser: headless Chromium (driven by tests/browser/login.mjs)
//! signs in through portcullis and the provider and reads the dump page.

use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;

use crate::common::process::node;
use crate::common::*;

/// What tests/browser/login.mjs prints (one JSON line).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BrowserReport {
    final_url: String,
    landing_text: String,
    me_text: String,
    me_json: serde_json::Value,
}

#[tokio::test(flavor = "multi_thread")]
async fn chromium_logs_in_lands_on_the_requested_page_and_reads_the_dump_page() {
    let stack = Stack::start().await;
    let protected = stack.url("/browser/landing?from=chromium");

    let mut cmd = node("tests/browser/login.mjs");
    cmd.args([protected.as_str(), "john", PASSWORD])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("the browser login finishes within 90 s")
        .expect("run node tests/browser/login.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "login.mjs failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| panic!("login.mjs printed no JSON line:\n{stdout}\n{stderr}"));
    let report: BrowserReport =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("login.mjs printed {line:?}: {e}\n{stderr}"));

    assert_eq!(report.final_url, protected, "{report:#?}");
    // The echo upstream's page lists the headers it received, portcullis's included.
    let landing = report.landing_text.to_ascii_lowercase();
    assert!(
        landing.contains("remote-user"),
        "no Remote-User on the landing page: {report:#?}"
    );
    let row = landing.lines().find(|l| l.contains("remote-user")).unwrap_or_default();
    assert!(
        row.contains("john"),
        "the upstream did not see Remote-User john: {row:?}"
    );
    assert!(landing.contains("/browser/landing?from=chromium"), "{report:#?}");

    assert_eq!(
        report.me_json["userInfo"]["preferred_username"], "john",
        "{:#}",
        report.me_json
    );
    assert_eq!(
        report.me_json["userInfo"]["groups"],
        serde_json::json!(["admins", "dev"])
    );
    // The dump page as a person reads it shows the same session as its JSON.
    let id_token = report.me_json["idToken"].as_str().unwrap_or_default();
    assert_eq!(
        id_token.split('.').count(),
        3,
        "idToken is not a JWS: {:#}",
        report.me_json
    );
    for shown in ["john@example.com", "admins", "openid", id_token] {
        assert!(
            report.me_text.contains(shown),
            "the dump page does not show {shown:?}:\n{}",
            report.me_text
        );
    }

    let stats = stack.idp.stats().await;
    assert_eq!((stats.par, stats.authorization_code), (1, 1), "{stats:?}");
}
