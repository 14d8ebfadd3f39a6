//! Tickets: what Route computed for a request that Store needs to cache its answer (partition,
//! the context's fingerprint under the cache epoch, the prompt, its embedding), sealed into the
//! ticket itself instead of kept here. The filter holds the ticket for the request and hands it
//! back with the answer, so Store never re-embeds and may reach any replica: the one that routed
//! the request, another one (Envoy spreads calls over the replicas, and cannot keep one
//! request's calls on one: a wasm filter's gRPC call takes no hash key), or one started since.
//! Nothing waits here for answers that never come, so there is nothing to bound or to release.
//!
//! Sealed with HMAC-SHA256 under a key the replicas share (`cache.tickets.key_file`, a
//! Kubernetes Secret), with an expiry (`cache.tickets.ttl_seconds`). Only a sidecar makes a
//! ticket that opens; only the filter receives one (no response carries it to the client); a
//! forged, altered or truncated one is refused, so no one can write an answer into another
//! tenant's partition through Store. It is not encrypted: it carries the prompt the filter
//! already had. Within its TTL a ticket would open twice; the filter sends each one once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use vane_cache::{Fingerprint, Partition};

#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub partition: Partition,
    pub fingerprint: Fingerprint,
    /// The prompt's text (the exact tier hashes it; the guard compares it).
    pub prompt: String,
    /// The semantic tier's key; `None` when the embedding does not stand for the whole prompt
    /// (the answer is then cached for the exact tier only).
    pub embedding: Option<Vec<f32>>,
}

impl Pending {
    /// What the entry would weigh: a prompt over `cache.max_entry_bytes` gets no ticket.
    pub fn bytes(&self) -> usize {
        let p = &self.partition;
        self.prompt.len() + self.embedding.as_ref().map_or(0, Vec::len) * size_of::<f32>() + p.tenant.len() + p.model.len()
    }
}

/// The secret tickets are sealed with (its bytes never appear in logs or `Debug`).
#[derive(Clone, PartialEq)]
pub struct TicketKey(Vec<u8>);

impl TicketKey {
    /// Fewer bytes than this is not a key worth the name (HMAC-SHA256's output size).
    pub const MIN_BYTES: usize = 32;

    /// `None` when shorter than [`Self::MIN_BYTES`].
    pub fn new(bytes: Vec<u8>) -> Option<TicketKey> {
        (bytes.len() >= Self::MIN_BYTES).then_some(TicketKey(bytes))
    }

    /// A key of this process alone: tickets then open only on the replica that sealed them.
    /// Std's `RandomState` is seeded from the OS's random source; its SipHash of a counter
    /// gives the bytes without another dependency.
    pub fn random() -> TicketKey {
        use std::hash::{BuildHasher, RandomState};
        let seed = RandomState::new();
        TicketKey((0..Self::MIN_BYTES / 8).flat_map(|i| seed.hash_one(i).to_le_bytes()).collect())
    }
}

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketKey(redacted)")
    }
}

/// Why a Store's ticket was refused: its `vane_cache_stores_total{result}` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not sealed with this key (forged, altered, truncated, or a key another deployment uses).
    #[error("invalid ticket")]
    Invalid,
    #[error("expired ticket")]
    Expired,
}

impl Refused {
    pub fn label(self) -> &'static str {
        match self {
            Refused::Invalid => "invalid_ticket",
            Refused::Expired => "expired_ticket",
        }
    }
}

/// The ticket format's version: a ticket of another version is invalid.
const VERSION: u8 = 1;
const TAG_BYTES: usize = 32;
/// Written as the embedding's length when there is none.
const NO_EMBEDDING: u32 = u32::MAX;

pub struct Sealer {
    key: TicketKey,
    ttl: Duration,
}

impl Sealer {
    pub fn new(key: TicketKey, ttl: Duration) -> Sealer {
        Sealer { key, ttl }
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key.0).expect("HMAC takes a key of any length")
    }

    /// The ticket: version, expiry (Unix seconds), the fields, then the tag over all of them.
    pub fn seal(&self, p: &Pending, now: SystemTime) -> Vec<u8> {
        let expires = now.checked_add(self.ttl).and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs());
        let mut out = Vec::with_capacity(p.bytes() + 128);
        out.push(VERSION);
        out.extend_from_slice(&expires.to_le_bytes());
        for field in [p.partition.tenant.as_bytes(), p.partition.model.as_bytes(), p.prompt.as_bytes()] {
            put(&mut out, field);
        }
        out.extend_from_slice(&p.fingerprint.bytes());
        match &p.embedding {
            Some(v) => {
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
            }
            None => out.extend_from_slice(&NO_EMBEDDING.to_le_bytes()),
        }
        let tag = self.mac().chain_update(&out).finalize().into_bytes();
        out.extend_from_slice(&tag);
        out
    }

    /// What a ticket sealed by this key carries, if it has not expired.
    pub fn open(&self, ticket: &[u8], now: SystemTime) -> Result<Pending, Refused> {
        let split = ticket.len().checked_sub(TAG_BYTES).ok_or(Refused::Invalid)?;
        let (body, tag) = ticket.split_at(split);
        // Constant-time comparison: a forger learns nothing from how long a refusal took.
        self.mac().chain_update(body).verify_slice(tag).map_err(|_| Refused::Invalid)?;
        let mut r = Reader(body);
        if r.take(1)? != [VERSION] {
            return Err(Refused::Invalid);
        }
        let expires = u64::from_le_bytes(r.array()?);
        if now.duration_since(UNIX_EPOCH).map_or(true, |d| d.as_secs() > expires) {
            return Err(Refused::Expired);
        }
        let (tenant, model, prompt) = (r.text()?, r.text()?, r.text()?);
        let fingerprint = Fingerprint::from_bytes(r.array()?);
        let embedding = match u32::from_le_bytes(r.array()?) {
            NO_EMBEDDING => None,
            n => Some((0..n).map(|_| r.array().map(f32::from_le_bytes)).collect::<Result<Vec<f32>, _>>()?),
        };
        if !r.0.is_empty() {
            return Err(Refused::Invalid);
        }
        Ok(Pending { partition: Partition { tenant, model }, fingerprint, prompt, embedding })
    }
}

fn put(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u32).to_le_bytes());
    out.extend_from_slice(field);
}

/// Reads a ticket's fields in order; running short is an invalid ticket (though a verified tag
/// means this sidecar's own code wrote it).
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Refused> {
        if self.0.len() < n {
            return Err(Refused::Invalid);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Refused> {
        self.take(N)?.try_into().map_err(|_| Refused::Invalid)
    }

    fn text(&mut self) -> Result<String, Refused> {
        let n = u32::from_le_bytes(self.array()?) as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| Refused::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(embedding: Option<Vec<f32>>) -> Pending {
        Pending { partition: Partition { tenant: "tenant-a".into(), model: "auto".into() }, fingerprint: Fingerprint::of("ctx"), prompt: "What is 2 + 2?".into(), embedding }
    }

    fn sealer(key: u8) -> Sealer {
        Sealer::new(TicketKey::new(vec![key; 32]).unwrap(), Duration::from_secs(600))
    }

    #[test]
    fn a_ticket_opens_on_any_sidecar_with_the_key_until_it_expires() {
        let now = SystemTime::now();
        for p in [pending(Some(vec![0.5, -1.25, 3.0])), pending(None), Pending { prompt: String::new(), embedding: Some(vec![]), ..pending(None) }] {
            let ticket = sealer(7).seal(&p, now);
            assert_eq!(sealer(7).open(&ticket, now + Duration::from_secs(599)), Ok(p.clone()), "another replica, same key");
            assert_eq!(sealer(7).open(&ticket, now + Duration::from_secs(602)), Err(Refused::Expired));
            assert_eq!(sealer(8).open(&ticket, now), Err(Refused::Invalid), "another key");
        }
    }

    #[test]
    fn forged_altered_and_truncated_tickets_are_refused() {
        let now = SystemTime::now();
        let s = sealer(7);
        let ticket = s.seal(&pending(Some(vec![1.0; 4])), now);
        for i in 0..ticket.len() {
            let mut altered = ticket.clone();
            altered[i] ^= 1;
            assert_eq!(s.open(&altered, now), Err(Refused::Invalid), "byte {i} flipped");
        }
        for n in 0..ticket.len() {
            assert_eq!(s.open(&ticket[..n], now), Err(Refused::Invalid), "cut to {n} bytes");
        }
        // Another tenant's partition cannot be written by rewriting the tenant and re-tagging
        // without the key: a ticket sealed under a guessed key does not open.
        let forged = Sealer::new(TicketKey::new(vec![0; 32]).unwrap(), Duration::from_secs(600)).seal(&Pending { partition: Partition { tenant: "tenant-b".into(), model: "auto".into() }, ..pending(None) }, now);
        assert_eq!(s.open(&forged, now), Err(Refused::Invalid));
        for junk in [&b""[..], b"nope", b"0-0123456789abcdef"] {
            assert_eq!(s.open(junk, now), Err(Refused::Invalid));
        }
    }

    #[test]
    fn keys_are_long_enough_and_never_printed() {
        assert!(TicketKey::new(vec![1; 31]).is_none());
        let key = TicketKey::new(b"a secret that is 32 bytes long!!".to_vec()).unwrap();
        assert_eq!(format!("{key:?}"), "TicketKey(redacted)");
        assert_ne!(TicketKey::random(), TicketKey::random());
        assert_eq!(TicketKey::random().0.len(), TicketKey::MIN_BYTES);
    }
}
