//! The upstream answer, copied for the cache as it streams by (never held back), and the `Store`
//! call that caches it when a 2xx answer completes within `max_response_bytes`. Any other end
//! (an error status, a truncated or oversized answer, a client gone) just drops the copy and
//! the ticket: the sidecar keeps nothing per ticket, so there is nothing to tell it. The host
//! feeds the response callbacks in and sends what comes out.

use vane_proto::v1::StoreRequest;

/// Where the copy of one answer is.
#[derive(Debug, Clone, PartialEq)]
pub enum Capture {
    /// Copying the answer for the ticket.
    Copying { ticket: Vec<u8>, sse: bool, body: Vec<u8> },
    /// Nothing (more) to do: no ticket, its Store was handed out, or the answer will not be stored.
    Done,
}

impl Capture {
    /// A forwarded request with a ticket copies its answer; one without has nothing to store.
    pub fn new(ticket: Option<Vec<u8>>) -> Capture {
        match ticket {
            Some(ticket) => Capture::Copying { ticket, sse: false, body: Vec::new() },
            None => Capture::Done,
        }
    }

    /// Whether the body is still wanted (the host reads chunks only then).
    pub fn is_copying(&self) -> bool {
        matches!(self, Capture::Copying { .. })
    }

    /// The response headers: an error (anything but 2xx, or an unreadable `:status`) is never
    /// cached. An SSE answer is one whose content-type says `text/event-stream`.
    pub fn on_response_headers(&mut self, status: Option<&[u8]>, content_type: Option<&[u8]>) {
        let Capture::Copying { sse, .. } = self else { return };
        let status = status.and_then(|s| std::str::from_utf8(s).ok()).and_then(|s| s.parse::<u32>().ok());
        if !status.is_some_and(|s| (200..300).contains(&s)) {
            *self = Capture::Done;
            return;
        }
        *sse = content_type.is_some_and(|ct| String::from_utf8_lossy(ct).contains("text/event-stream"));
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
            Capture::Copying { ticket, sse, body } => Some(StoreRequest { ticket, response: body, sse }),
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

    fn store(body: &[u8], sse: bool) -> Option<StoreRequest> {
        Some(StoreRequest { ticket: b"t1".to_vec(), response: body.to_vec(), sse })
    }

    #[test]
    fn a_whole_2xx_answer_is_stored_once() {
        let mut c = copying();
        c.on_response_headers(Some(b"200"), Some(b"application/json"));
        assert_eq!(c.on_response_body(b"{\"a\":", false, MAX), None);
        assert_eq!(c.on_response_body(b"1}", true, MAX), store(b"{\"a\":1}", false));
        assert_eq!(c, Capture::Done);
        assert_eq!(c.on_response_body(b"1}", true, MAX), None, "once");
    }

    #[test]
    fn sse_is_told_by_the_content_type() {
        for (content_type, sse) in [
            (Some(&b"text/event-stream"[..]), true),
            (Some(b"text/event-stream; charset=utf-8"), true),
            (Some(b"application/json"), false),
            (None, false),
        ] {
            let mut c = copying();
            c.on_response_headers(Some(b"200"), content_type);
            assert_eq!(c.on_response_body(b"x", true, MAX), store(b"x", sse), "{content_type:?}");
        }
    }

    #[test]
    fn an_error_answer_is_never_stored() {
        for status in [&b"404"[..], b"500", b"199", b"300", b"429", b"", b"2OO", b" 200"] {
            let mut c = copying();
            c.on_response_headers(Some(status), Some(b"application/json"));
            assert_eq!(c, Capture::Done, "{status:?}");
            assert_eq!(c.on_response_body(b"{}", true, MAX), None);
        }
        let mut c = copying();
        c.on_response_headers(None, None);
        assert_eq!(c, Capture::Done, "no status at all");
        for ok in [&b"200"[..], b"201", b"299"] {
            let mut c = copying();
            c.on_response_headers(Some(ok), None);
            assert!(c.is_copying(), "{ok:?}");
        }
    }

    #[test]
    fn an_oversize_answer_is_not_stored() {
        let mut c = copying();
        c.on_response_headers(Some(b"200"), None);
        assert_eq!(c.on_response_body(&[b'a'; 10], false, MAX), None);
        assert_eq!(c.on_response_body(&[b'b'; 7], false, MAX), None, "10 + 7 > 16");
        assert_eq!(c, Capture::Done);
        assert_eq!(c.on_response_body(b"c", true, MAX), None);
        // Exactly at the limit is fine, and a single chunk over it is refused at once.
        let mut c = copying();
        assert_eq!(c.on_response_body(&[b'a'; MAX], true, MAX), store(&[b'a'; MAX], false));
        let mut c = copying();
        assert_eq!(c.on_response_body(&[b'a'; MAX + 1], true, MAX), None);
    }

    #[test]
    fn an_empty_last_chunk_completes_the_answer() {
        let mut c = copying();
        c.on_response_headers(Some(b"200"), None);
        c.on_response_body(b"{}", false, MAX);
        assert_eq!(c.on_response_body(b"", true, MAX), store(b"{}", false));
    }

    #[test]
    fn without_a_ticket_nothing_is_copied_or_sent() {
        let mut c = Capture::new(None);
        assert!(!c.is_copying());
        c.on_response_headers(Some(b"200"), None);
        assert_eq!(c.on_response_body(b"x", true, MAX), None);
    }
}
