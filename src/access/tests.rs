//! The line a response body writes when it is dropped, for each way a response ends,
//! read from a `tracing` subscriber that writes into a buffer.

use std::io::Write;
use std::sync::Mutex;
use std::task::Context;

use http_body::Body;

use super::*;
use crate::ResponseBody;

/// What the lines written go into.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The access lines `run` writes, in the text format.
fn lines_of(run: impl FnOnce()) -> Vec<String> {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, run);
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    text.lines().filter(|l| l.contains(TARGET)).map(str::to_owned).collect()
}

/// `body` as a response to `method target` answered `status`, with its line.
fn logged(method: Method, target: &str, status: StatusCode, mut body: ResponseBody) -> ResponseBody {
    let request = Request::builder().method(method).uri(target).body(()).unwrap();
    let requested = Requested::of(&request, IpAddr::from([192, 0, 2, 7]));
    body.log_when_over(requested.answered(status, None, Instant::now(), Duration::from_millis(3)));
    body
}

/// Polls `body` `frames` times (each ready at once, or the test fails).
fn poll_frames(body: &mut ResponseBody, frames: usize) {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    for _ in 0..frames {
        assert!(std::pin::Pin::new(&mut *body).poll_frame(&mut cx).is_ready());
    }
}

/// A body of `frames`, each ready at once, and then `end` (its end, or an error).
fn streamed(frames: &[&'static str], end: Option<BoxError>) -> ResponseBody {
    let frames = frames
        .iter()
        .map(|data| Ok(Frame::data(Bytes::from_static(data.as_bytes()))))
        .chain(end.map(Err));
    ResponseBody::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
        frames.collect::<Vec<Result<_, BoxError>>>(),
    )))
}

#[track_caller]
fn assert_fields(line: &str, fields: &[&str]) {
    for field in fields {
        assert!(line.contains(field), "{field} missing in: {line}");
    }
}

#[test]
fn a_body_sent_to_its_end_is_logged_complete_with_its_bytes() {
    let lines = lines_of(|| {
        let mut body = logged(
            Method::GET,
            "/report?token=s3cret",
            StatusCode::OK,
            streamed(&["abc", "de"], None),
        );
        poll_frames(&mut body, 3);
        // Not written before the body is dropped: hyper drops it once it has sent it.
        drop(body);
    });
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_fields(
        &lines[0],
        &[
            "method=GET",
            "path=/report ",
            "status=200",
            "duration_ms=",
            "head_ms=3",
            "body_bytes=5",
            "outcome=complete",
            "client=192.0.2.7",
            "user=-",
        ],
    );
    assert!(!lines[0].contains("s3cret"), "the query reached the line: {}", lines[0]);
}

#[test]
fn a_body_whose_last_frame_says_it_ended_is_complete_without_another_poll() {
    // hyper polls a page once: after its only frame it is at its end.
    let lines = lines_of(|| {
        let mut body = logged(Method::GET, "/", StatusCode::NOT_FOUND, ResponseBody::full("not here"));
        poll_frames(&mut body, 1);
        drop(body);
    });
    assert_fields(&lines[0], &["status=404", "body_bytes=8", "outcome=complete"]);
}

#[test]
fn a_body_dropped_before_its_end_is_logged_as_the_client_gone() {
    let lines = lines_of(|| {
        let mut body = logged(Method::GET, "/big", StatusCode::OK, streamed(&["abc", "de", "f"], None));
        poll_frames(&mut body, 2);
        drop(body);
    });
    assert_fields(&lines[0], &["body_bytes=5", "outcome=client_gone"]);
}

#[test]
fn a_request_whose_client_left_before_the_head_is_logged_499_gone() {
    // What `App::handle` writes when its request is dropped unanswered: no body at all.
    let lines = lines_of(|| {
        let request = Request::builder().method(Method::POST).uri("/slow").body(()).unwrap();
        let requested = Requested::of(&request, IpAddr::from([192, 0, 2, 7]));
        requested
            .answered(
                client_closed_request(),
                None,
                Instant::now(),
                Duration::from_millis(300),
            )
            .write(false);
    });
    assert_fields(
        &lines[0],
        &[
            "method=POST",
            "path=/slow",
            "status=499",
            "body_bytes=0",
            "outcome=client_gone",
        ],
    );
}

#[test]
fn a_body_the_upstream_cuts_off_is_logged_with_why() {
    let stalled: BoxError = BodyError::Stalled(Duration::from_secs(1)).into();
    let broken: BoxError = std::io::Error::other("connection reset").into();
    for (error, outcome) in [(stalled, "outcome=upstream_idle"), (broken, "outcome=upstream_error")] {
        let lines = lines_of(|| {
            let mut body = logged(Method::GET, "/feed", StatusCode::OK, streamed(&["abcd"], Some(error)));
            poll_frames(&mut body, 2);
            drop(body);
        });
        assert_fields(&lines[0], &["body_bytes=4", outcome]);
    }
}

#[test]
fn responses_without_a_body_are_complete_though_their_body_is_never_read() {
    // hyper sends the head only and drops the body unread.
    let lines = lines_of(|| {
        drop(logged(
            Method::HEAD,
            "/page",
            StatusCode::OK,
            ResponseBody::full("page"),
        ));
        drop(logged(
            Method::GET,
            "/ws",
            StatusCode::SWITCHING_PROTOCOLS,
            streamed(&["x"], None),
        ));
        drop(logged(
            Method::GET,
            "/cached",
            StatusCode::NOT_MODIFIED,
            streamed(&["x"], None),
        ));
    });
    assert_eq!(lines.len(), 3, "{lines:#?}");
    for line in &lines {
        assert_fields(line, &["body_bytes=0", "outcome=complete"]);
    }
}

#[test]
fn a_body_without_a_line_writes_none() {
    let lines = lines_of(|| {
        let mut body = streamed(&["abc"], None);
        poll_frames(&mut body, 2);
    });
    assert_eq!(lines, Vec::<String>::new());
}
