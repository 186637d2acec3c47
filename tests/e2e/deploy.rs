//! The shipped systemd unit: systemd itself must accept it, and its sandbox must stay
//! tight. (`deploy/Dockerfile` needs a Docker daemon and Docker Hub, which the test
//! machines do not have.)

use std::path::Path;
use std::process::Command;

/// `deploy/portcullis.service` with `ExecStart` pointing at the binary under test, so
/// `systemd-analyze verify` can check the command exists.
fn unit_under_test(dir: &Path) -> std::path::PathBuf {
    let unit = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/portcullis.service"))
        .expect("deploy/portcullis.service");
    assert!(
        unit.contains("ExecStart=/usr/local/bin/portcullis "),
        "ExecStart changed: update this test"
    );
    let unit = unit.replace("/usr/local/bin/portcullis", env!("CARGO_BIN_EXE_portcullis"));
    let path = dir.join("portcullis.service");
    std::fs::write(&path, unit).unwrap();
    path
}

fn systemd_analyze(args: &[&str]) -> (bool, String) {
    let output = Command::new("systemd-analyze")
        .args(args)
        .output()
        .expect("systemd-analyze (Debian package systemd; tests/setup.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn systemd_accepts_the_unit_without_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_under_test(dir.path());
    let (ok, text) = systemd_analyze(&["verify", unit.to_str().unwrap()]);
    assert!(ok, "systemd-analyze verify failed:\n{text}");
    let complaints: Vec<&str> = text.lines().filter(|l| l.contains("portcullis.service")).collect();
    assert!(complaints.is_empty(), "systemd complains about the unit:\n{text}");
}

#[test]
fn the_units_sandbox_rates_ok_in_systemds_security_analysis() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_under_test(dir.path());
    let (_, text) = systemd_analyze(&["security", "--offline=true", unit.to_str().unwrap()]);
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for portcullis.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    // 0 = fully sandboxed, 10 = none; systemd calls < 2 "OK". Ours was 1.1 when written.
    assert!(exposure < 2.0, "exposure {exposure} is no longer OK:\n{text}");
}
