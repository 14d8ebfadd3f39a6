//! The embedded cache on disk, so a restart keeps it: a versioned little-endian file of entries
//! with their remaining TTL, written to a temporary file and renamed into place (a crash
//! mid-write leaves the previous snapshot). A file that does not parse, or was written for
//! embeddings of another size, is refused as a whole.
//!
//! Layout: `VANESNAP`, u32 version, u32 dim, u64 count, then per entry: tenant, model (u32
//! length + UTF-8), fingerprint (32 bytes), prompt text, completion (u32 length + bytes),
//! remaining TTL in ms (u64), `dim` f32.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::time::Duration;

use crate::{Fingerprint, Partition};

const MAGIC: &[u8; 8] = b"VANESNAP";
const VERSION: u32 = 1;

pub struct Saved {
    pub partition: Partition,
    pub fingerprint: Fingerprint,
    pub text: String,
    pub completion: Vec<u8>,
    pub remaining: Duration,
    pub embedding: Vec<f32>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a Vane cache snapshot (or version {0} unknown)")]
    Format(u32),
    #[error("written for {found}-d embeddings, the encoder makes {expected}-d")]
    Dim { found: usize, expected: usize },
    #[error("corrupt: {0}")]
    Corrupt(&'static str),
}

/// Writes `entries` (in the order they should be re-inserted) to `path` atomically.
pub fn write(path: &Path, dim: usize, count: usize, entries: impl Iterator<Item = Saved>) -> Result<(), SnapshotError> {
    let tmp = path.with_extension("tmp");
    let mut w = BufWriter::new(File::create(&tmp)?);
    w.write_all(MAGIC)?;
    w.write_all(&VERSION.to_le_bytes())?;
    w.write_all(&(dim as u32).to_le_bytes())?;
    w.write_all(&(count as u64).to_le_bytes())?;
    let mut written = 0;
    for e in entries {
        if e.embedding.len() != dim {
            return Err(SnapshotError::Dim { found: e.embedding.len(), expected: dim });
        }
        put_bytes(&mut w, e.partition.tenant.as_bytes())?;
        put_bytes(&mut w, e.partition.model.as_bytes())?;
        w.write_all(&e.fingerprint.bytes())?;
        put_bytes(&mut w, e.text.as_bytes())?;
        put_bytes(&mut w, &e.completion)?;
        w.write_all(&(e.remaining.as_millis() as u64).to_le_bytes())?;
        for x in &e.embedding {
            w.write_all(&x.to_le_bytes())?;
        }
        written += 1;
    }
    if written != count {
        return Err(SnapshotError::Corrupt("entry count changed while writing"));
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Reads a snapshot written for `dim`-dimensional embeddings.
pub fn read(path: &Path, dim: usize) -> Result<Vec<Saved>, SnapshotError> {
    let mut r = BufReader::new(File::open(path)?);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    let version = get_u32(&mut r)?;
    if &magic != MAGIC || version != VERSION {
        return Err(SnapshotError::Format(version));
    }
    let found = get_u32(&mut r)? as usize;
    if found != dim {
        return Err(SnapshotError::Dim { found, expected: dim });
    }
    let count = get_u64(&mut r)?;
    let mut out = Vec::new();
    for _ in 0..count {
        let partition = Partition { tenant: get_string(&mut r)?, model: get_string(&mut r)? };
        let mut fp = [0u8; 32];
        r.read_exact(&mut fp)?;
        let text = get_string(&mut r)?;
        let completion = get_bytes(&mut r)?;
        let remaining = Duration::from_millis(get_u64(&mut r)?);
        let mut raw = vec![0u8; dim * 4];
        r.read_exact(&mut raw)?;
        let embedding = raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        out.push(Saved { partition, fingerprint: Fingerprint::from_bytes(fp), text, completion, remaining, embedding });
    }
    if r.read(&mut [0u8; 1])? != 0 {
        return Err(SnapshotError::Corrupt("trailing bytes"));
    }
    Ok(out)
}

fn put_bytes(w: &mut impl Write, b: &[u8]) -> std::io::Result<()> {
    w.write_all(&(b.len() as u32).to_le_bytes())?;
    w.write_all(b)
}

fn get_u32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn get_u64(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Lengths are capped so a corrupt length cannot ask for gigabytes.
fn get_bytes(r: &mut impl Read) -> Result<Vec<u8>, SnapshotError> {
    let len = get_u32(r)? as usize;
    if len > 64 << 20 {
        return Err(SnapshotError::Corrupt("field longer than 64 MiB"));
    }
    let mut b = vec![0u8; len];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn get_string(r: &mut impl Read) -> Result<String, SnapshotError> {
    String::from_utf8(get_bytes(r)?).map_err(|_| SnapshotError::Corrupt("text is not UTF-8"))
}
