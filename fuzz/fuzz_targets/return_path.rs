//! The post-login return target (`rd`). Whatever `local_return_path` accepts is sent
//! back as a `Location`: it must be a valid header value and stay on this origin for
//! every reader that may see it: a browser (the WHATWG URL parser, which also drops tabs
//! and newlines and reads `\` as `/`), and a server that percent-decodes it once more
//! before redirecting again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use url::Url;

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    let Some(accepted) = portcullis::policy::local_return_path(target) else {
        return;
    };
    assert_eq!(accepted, target, "accepted targets are returned unchanged");
    assert!(
        http::HeaderValue::from_str(accepted).is_ok(),
        "{target:?} is not a valid Location value"
    );
    let base = Url::parse("https://app.example.com/start/page?x=1").expect("a valid base");
    let decoded_once = percent_encoding::percent_decode_str(accepted)
        .decode_utf8_lossy()
        .into_owned();
    for reading in [accepted, decoded_once.as_str()] {
        if let Ok(resolved) = base.join(reading) {
            assert_eq!(
                resolved.origin(),
                base.origin(),
                "{target:?} (read as {reading:?}) leaves the origin: {resolved}"
            );
        }
    }
});
