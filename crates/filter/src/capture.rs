//! The upstream answer, copied for the cache as it streams by (never held back), and the one
//! call that ends its ticket: `Store` when a 2xx answer completes within `max_response_bytes`,
//! else `Release`, so the sidecar frees the prompt it holds for the ticket now rather than at
//! its expiry. The host feeds the response callbacks in and sends what comes out.

use prost::Message;
use vane_proto::v1::{ReleaseRequest, StoreRequest};

/// A cache call for the root context to send (see `host` for why not the stream's context).
#[derive(Debug, Clone, PartialEq)]
pub enum CacheCall {
    Store(StoreRequest),
    Release(ReleaseRequest),
}

impl CacheCall {
    /// The `vane.v1.Router` method.
    pub fn method(&self) -> &'static str {
        match self {
            CacheCall::Store(_) => "Store",
            CacheCall::Release(_) => "Release",
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            CacheCall::Store(m) => m.encode_to_vec(),
            CacheCall::Release(m) => m.encode_to_vec(),
        }
    }
}

/// Where the copy of one answer is.
#[derive(Debug, Clone, PartialEq)]
pub enum Capture {
    /// Copying the answer for the ticket.
    Copying { ticket: String, sse: bool, body: Vec<u8> },
    /// Nothing (more) to do: no ticket, or its Store or Release was handed out.
    Done,
}

impl Capture {
    /// A forwarded request with a ticket copies its answer; one without has nothing to store.
    pub fn new(ticket: Option<String>) -> Capture {
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
    pub fn on_response_headers(&mut self, status: Option<&[u8]>, content_type: Option<&[u8]>) -> Option<CacheCall> {
        let Capture::Copying { sse, .. } = self else { return None };
        let status = status.and_then(|s| std::str::from_utf8(s).ok()).and_then(|s| s.parse::<u32>().ok());
        if !status.is_some_and(|s| (200..300).contains(&s)) {
            return self.release();
        }
        *sse = content_type.is_some_and(|ct| String::from_utf8_lossy(ct).contains("text/event-stream"));
        None
    }

    /// One chunk of the response body (each callback sees only the new bytes). An answer over
    /// `max_bytes` in all is not stored; a whole one is.
    pub fn on_response_body(&mut self, chunk: &[u8], end_of_stream: bool, max_bytes: usize) -> Option<CacheCall> {
        let Capture::Copying { body, .. } = self else { return None };
        if body.len() + chunk.len() > max_bytes {
            log::debug!("vane: answer larger than max_response_bytes; not cached");
            return self.release();
        }
        body.extend_from_slice(chunk);
        if !end_of_stream {
            return None;
        }
        match std::mem::replace(self, Capture::Done) {
            Capture::Copying { ticket, sse, body } => Some(CacheCall::Store(StoreRequest { ticket, response: body, sse })),
            Capture::Done => None,
        }
    }

    /// The stream is over. An answer that never reached its end (a client gone, an upstream
    /// reset, no body at all) will not be stored.
    pub fn on_end(&mut self) -> Option<CacheCall> {
        self.release()
    }

    fn release(&mut self) -> Option<CacheCall> {
        match std::mem::replace(self, Capture::Done) {
            Capture::Copying { ticket, .. } => Some(CacheCall::Release(ReleaseRequest { ticket })),
            Capture::Done => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 16;

    fn copying() -> Capture {
        Capture::new(Some("t1".into()))
    }

    fn store(body: &[u8], sse: bool) -> Option<CacheCall> {
        Some(CacheCall::Store(StoreRequest { ticket: "t1".into(), response: body.to_vec(), sse }))
    }

    fn release() -> Option<CacheCall> {
        Some(CacheCall::Release(ReleaseRequest { ticket: "t1".into() }))
    }

    #[test]
    fn a_whole_2xx_answer_is_stored_once() {
        let mut c = copying();
        assert_eq!(c.on_response_headers(Some(b"200"), Some(b"application/json")), None);
        assert_eq!(c.on_response_body(b"{\"a\":", false, MAX), None);
        assert_eq!(c.on_response_body(b"1}", true, MAX), store(b"{\"a\":1}", false));
        assert_eq!(c, Capture::Done);
        assert_eq!(c.on_end(), None, "no Release after a Store");
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
    fn an_error_answer_releases_its_ticket_and_is_never_stored() {
        for status in [&b"404"[..], b"500", b"199", b"300", b"429", b"", b"2OO", b" 200"] {
            let mut c = copying();
            assert_eq!(c.on_response_headers(Some(status), Some(b"application/json")), release(), "{status:?}");
            assert_eq!(c.on_response_body(b"{}", true, MAX), None);
            assert_eq!(c.on_end(), None, "released once");
        }
        let mut c = copying();
        assert_eq!(c.on_response_headers(None, None), release(), "no status at all");
        for ok in [&b"200"[..], b"201", b"299"] {
            assert_eq!(copying().on_response_headers(Some(ok), None), None, "{ok:?}");
        }
    }

    #[test]
    fn an_oversize_answer_is_released_not_stored() {
        let mut c = copying();
        c.on_response_headers(Some(b"200"), None);
        assert_eq!(c.on_response_body(&[b'a'; 10], false, MAX), None);
        assert_eq!(c.on_response_body(&[b'b'; 7], false, MAX), release(), "10 + 7 > 16");
        assert_eq!(c.on_response_body(b"c", true, MAX), None);
        assert_eq!(c.on_end(), None);
        // Exactly at the limit is fine, and a single chunk over it is refused at once.
        let mut c = copying();
        assert_eq!(c.on_response_body(&[b'a'; MAX], true, MAX), store(&[b'a'; MAX], false));
        let mut c = copying();
        assert_eq!(c.on_response_body(&[b'a'; MAX + 1], true, MAX), release());
    }

    #[test]
    fn an_answer_that_never_ends_is_released() {
        let mut c = copying();
        c.on_response_headers(Some(b"200"), Some(b"text/event-stream"));
        c.on_response_body(b"data: {}\n\n", false, MAX);
        assert_eq!(c.on_end(), release());
        assert_eq!(c.on_end(), None);
        assert_eq!(copying().on_end(), release(), "headers only, client gone");
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
        assert_eq!(c.on_response_headers(Some(b"500"), None), None);
        assert_eq!(c.on_response_body(b"x", true, MAX), None);
        assert_eq!(c.on_end(), None);
    }

    #[test]
    fn calls_encode_as_their_messages() {
        let call = store(b"x", true).unwrap();
        assert_eq!(call.method(), "Store");
        assert_eq!(StoreRequest::decode(call.encode().as_slice()).unwrap(), StoreRequest { ticket: "t1".into(), response: b"x".to_vec(), sse: true });
        let call = release().unwrap();
        assert_eq!(call.method(), "Release");
        assert_eq!(ReleaseRequest::decode(call.encode().as_slice()).unwrap().ticket, "t1");
    }
}
