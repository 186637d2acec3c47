//! Reading portcullis' Prometheus metrics (`server.metrics_addr`) in a test.

/// The text exposition at `url` (`http://…/metrics`), checked to be one.
pub async fn scrape(url: &str) -> String {
    let response = reqwest::get(url).await.expect("metrics listener answers");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    response.text().await.unwrap()
}

/// The value of the series `name` (with its labels, exactly as exposed).
#[track_caller]
pub fn value(text: &str, series: &str) -> f64 {
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
        .parse()
        .unwrap_or_else(|e| panic!("{series}: {e}"))
}
