//! The upstream answer, copied for the cache as it streams by (never held back), and the `Store`
//! call when a 2xx answer completes within `max_response_bytes`. Any other end (an error
//! status, a truncated or oversized answer, a client gone) just drops the copy and the ticket:
//! the sidecar keeps nothing per ticket, so there is nothing to tell it. What may be cached is
//! the sidecar's to decide (its `completion` module): the Store carries the status and the
//! headers that matter to it, and these checks only save the calls that could never store. The
//! host feeds the response callbacks in and sends what comes out.

use vane_proto::v1::StoreRequest;

/// Where the copy of one answer is.
#[derive(Debug, Clone, PartialEq)]
pub enum Capture {
    /// Copying the answer for the ticket, with the status and headers it came with.
    Copying { ticket: Vec<u8>, head: Head, body: Vec<u8> },
    /// Nothing (more) to do: no ticket, its Store was handed out, or the answer will not be stored.
    Done,
}

/// What the Store says about the answer besides its body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Head {
    status: u32,
    content_type: String,
    cache_control: String,
}

impl Capture {
    /// A forwarded request with a ticket copies its answer; one without has nothing to store.
    pub fn new(ticket: Option<Vec<u8>>) -> Capture {
        match ticket {
            Some(ticket) => Capture::Copying { ticket, head: Head::default(), body: Vec::new() },
            None => Capture::Done,
        }
    }

    /// Whether the body is still wanted (the host reads chunks only then).
    pub fn is_copying(&self) -> bool {
        matches!(self, Capture::Copying { .. })
    }

    /// The response headers: an error (anything but 2xx, or an unreadable `:status`) is never
    /// cached, so it is not copied. The status, the content type and every `Cache-Control`
    /// value (joined by ", ") go with the Store.
    pub fn on_response_headers(&mut self, status: Option<&[u8]>, content_type: Option<&[u8]>, cache_control: &[&[u8]]) {
        let Capture::Copying { head, .. } = self else { return };
        let status = status.and_then(|s| std::str::from_utf8(s).ok()).and_then(|s| s.parse::<u32>().ok());
        let Some(status) = status.filter(|s| (200..300).contains(s)) else {
            *self = Capture::Done;
            return;
        };
        let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
        let cache_control = cache_control.iter().map(|v| text(v)).collect::<Vec<_>>().join(", ");
        *head = Head { status, content_type: content_type.map(text).unwrap_or_default(), cache_control };
    }

    /// One chunk of the response body (each callback sees only the new bytes). An answer over
    /// `max_bytes` in all is not stored; a whole one is. An answer that never reaches its end
    /// (a client gone, an upstream reset) is never stored either: only the last chunk stores.
    pub fn on_response_body(&mut self, chunk: &[u8], end_of_stream: bool, max_bytes: usize) -> Option<StoreRequest> {
        let Capture::Copying { body, .. } = self else { return None };
        if body.len() + chunk.len() > max_bytes {
            log::debug!("vane: answer larger than max_response_bytes; not cached");
            *self = Capture::Done;
            return None;
        }
        body.extend_from_slice(chunk);
        if !end_of_stream {
            return None;
        }
        match std::mem::replace(self, Capture::Done) {
            Capture::Copying { ticket, head, body } => Some(StoreRequest {
                ticket,
                response: body,
                // For sidecars that predate `content_type`.
                sse: head.content_type.contains("text/event-stream"),
                status: head.status,
                content_type: head.content_type,
                cache_control: head.cache_control,
            }),
            Capture::Done => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 16;

    fn copying() -> Capture {
        Capture::new(Some(b"t1".to_vec()))
    }

    fn store(body: &[u8], status: u32, content_type: &str, cache_control: &str) -> Option<StoreRequest> {
        let sse = content_type.contains("text/event-stream");
        Some(StoreRequest { ticket: b"t1".to_vec(), response: body.to_vec(), sse, status, content_type: content_type.into(), cache_control: cache_control.into() })
    }

    fn json(body: &[u8]) -> Option<StoreRequest> {
        store(body, 200, "application/json", "")
    }

    #[test]
    fn a_whole_2xx_answer_is_stored_once() {
        let mut c = copying();
        c.on_response_headers(Some(b"200"), Some(b"application/json"), &[]);
        assert_eq!(c.on_response_body(b"{\"a\":", false, MAX), None);
        assert_eq!(c.on_response_body(b"1}", true, MAX), json(b"{\"a\":1}"));
        assert_eq!(c, Capture::Done);
        assert_eq!(c.on_response_body(b"1}", true, MAX), None, "once");
    }

    #[test]
    fn the_store_says_what_status_and_headers_came_with_the_answer() {
        for (status, content_type, cache_control, want) in [
            (&b"200"[..], Some(&b"text/event-stream"[..]), vec![&b"no-cache"[..]], store(b"x", 200, "text/event-stream", "no-cache")),
            (b"203", Some(b"text/event-stream; charset=utf-8"), vec![], store(b"x", 203, "text/event-stream; charset=utf-8", "")),
            (b"206", Some(b"application/json"), vec![b"private", b"max-age=5"], store(b"x", 206, "application/json", "private, max-age=5")),
            (b"200", None, vec![b"no-\xffstore"], store(b"x", 200, "", "no-\u{fffd}store")),
        ] {
            let mut c = copying();
            c.on_response_headers(Some(status), content_type, &cache_control);
            assert_eq!(c.on_response_body(b"x", true, MAX), want, "{status:?} {content_type:?}");
        }
    }

    #[test]
    fn an_error_answer_is_never_stored() {
        for status in [&b"404"[..], b"500", b"199", b"300", b"429", b"", b"2OO", b" 200"] {
            let mut c = copying();
            c.on_response_headers(Some(status), Some(b"application/json"), &[]);
            assert_eq!(c, Capture::Done, "{status:?}");
            assert_eq!(c.on_response_body(b"{}", true, MAX), None);
        }
        let mut c = copying();
        c.on_response_headers(None, None, &[]);
        assert_eq!(c, Capture::Done, "no status at all");
        for ok in [&b"200"[..], b"201", b"299"] {
            let mut c = copying();
            c.on_response_headers(Some(ok), None, &[]);
            assert!(c.is_copying(), "{ok:?}: the sidecar decides");
        }
    }

    #[test]
    fn an_oversize_answer_is_not_stored() {
        let mut c = copying();
        c.on_response_headers(Some(b"200"), Some(b"application/json"), &[]);
        assert_eq!(c.on_response_body(&[b'a'; 10], false, MAX), None);
        assert_eq!(c.on_response_body(&[b'b'; 7], false, MAX), None, "10 + 7 > 16");
        assert_eq!(c, Capture::Done);
        assert_eq!(c.on_response_body(b"c", true, MAX), None);
        // Exactly at the limit is fine, and a single chunk over it is refused at once.
        let mut c = copying();
        c.on_response_headers(Some(b"200"), Some(b"application/json"), &[]);
        assert_eq!(c.on_response_body(&[b'a'; MAX], true, MAX), json(&[b'a'; MAX]));
        let mut c = copying();
        assert_eq!(c.on_response_body(&[b'a'; MAX + 1], true, MAX), None);
    }

    #[test]
    fn an_empty_last_chunk_completes_the_answer() {
        let mut c = copying();
        c.on_response_headers(Some(b"200"), Some(b"application/json"), &[]);
        c.on_response_body(b"{}", false, MAX);
        assert_eq!(c.on_response_body(b"", true, MAX), json(b"{}"));
    }

    #[test]
    fn without_a_ticket_nothing_is_copied_or_sent() {
        let mut c = Capture::new(None);
        assert!(!c.is_copying());
        c.on_response_headers(Some(b"200"), None, &[]);
        assert_eq!(c.on_response_body(b"x", true, MAX), None);
    }
}
