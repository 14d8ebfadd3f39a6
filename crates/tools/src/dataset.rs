//! Labelled text for training and evaluating heads: JSONL rows, the text taken from one or more
//! fields, and their embeddings (optionally cached on disk so that re-runs skip the encoder).

use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::Value;
use sha2::{Digest, Sha256};

use vane_model::Encoder;

/// One labelled example; `row` is its 1-based line number in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub row: usize,
    pub text: String,
    pub label: String,
    /// The original JSON line (written back out for held-out files).
    pub raw: String,
}

#[derive(Debug, Default)]
pub struct Loaded {
    pub examples: Vec<Example>,
    /// Rows without a usable text or label field.
    pub skipped: usize,
}

/// Reads a JSONL file. The text is the `text_fields` joined with newlines (a field holding a
/// list of strings contributes them one per line); the label may be a string, a number or a
/// boolean and is stringified (`0`, `true`). Rows lacking any of the fields (or with null,
/// empty or non-text values) are skipped and counted; a line that is not JSON is an error.
pub fn read_jsonl(path: &Path, text_fields: &[String], label_field: &str) -> anyhow::Result<Loaded> {
    let mut out = Loaded::default();
    for_each_row(path, |row, value, raw| {
        match (text_of(&value, text_fields), value.get(label_field).and_then(label_of)) {
            (Some(text), Some(label)) => out.examples.push(Example { row, text, label, raw: raw.to_string() }),
            _ => out.skipped += 1,
        }
    })?;
    Ok(out)
}

/// Calls `f` with each non-blank line of a JSONL file: its 1-based row, the parsed object and
/// the line as written. A line that cannot be read or is not JSON is an error naming the row.
pub fn for_each_row(path: &Path, mut f: impl FnMut(usize, Value, &str)) -> anyhow::Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}: cannot read", path.display(), n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(&line).with_context(|| format!("{}:{}: not JSON", path.display(), n + 1))?;
        f(n + 1, value, &line);
    }
    Ok(())
}

fn text_of(row: &Value, fields: &[String]) -> Option<String> {
    let mut parts = Vec::new();
    for f in fields {
        match row.get(f)? {
            Value::String(s) if !s.trim().is_empty() => parts.push(s.clone()),
            Value::Array(items) if !items.is_empty() => {
                for item in items {
                    match item {
                        Value::String(s) => parts.push(s.clone()),
                        Value::Number(_) | Value::Bool(_) => parts.push(item.to_string()),
                        _ => return None,
                    }
                }
            }
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("\n"))
}

fn label_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Embeds `texts` (in batches of `batch` texts of similar length), reporting progress and throughput on stderr. With a
/// `cache` directory, embeddings are stored there under a key of the texts themselves, the
/// encoder file's content and `salt` (e.g. the token limit), and read back next time.
pub fn embed_all(encoder: &mut dyn Encoder, texts: &[&str], batch: usize, cache: Option<(&Path, &Path, &str)>) -> anyhow::Result<Vec<Vec<f32>>> {
    let cache_file = match cache {
        Some((dir, model, salt)) => Some(cache_path(dir, texts, model, salt)?),
        None => None,
    };
    if let Some(path) = &cache_file
        && path.exists()
    {
        match read_cache(path, texts.len()) {
            Ok(v) => {
                eprintln!("embeddings: {} from cache {}", v.len(), path.display());
                return Ok(v);
            }
            Err(e) => eprintln!("embeddings: ignoring cache {}: {e:#}", path.display()),
        }
    }
    let started = Instant::now();
    let mut last_report = Instant::now();
    // A batch is padded to its longest text: batching texts of similar length wastes far less.
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| texts[i].len());
    let mut out = vec![Vec::new(); texts.len()];
    let mut done = 0;
    for chunk in order.chunks(batch.max(1)) {
        let batch_texts: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
        for (&i, v) in chunk.iter().zip(encoder.embed(&batch_texts)?) {
            out[i] = v;
        }
        done += chunk.len();
        if last_report.elapsed().as_secs_f64() >= 10.0 || done == texts.len() {
            last_report = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            eprintln!("embedded {done}/{} ({:.0} texts/s, {:.1} s)", texts.len(), done as f64 / secs.max(1e-9), secs);
        }
    }
    if let Some(path) = &cache_file {
        write_cache(path, &out).with_context(|| format!("writing the embedding cache {}", path.display()))?;
        eprintln!("embeddings: cached in {}", path.display());
    }
    Ok(out)
}

const MAGIC: &[u8; 8] = b"VANEEMB1";

fn cache_path(dir: &Path, texts: &[&str], model: &Path, salt: &str) -> anyhow::Result<PathBuf> {
    let mut h = Sha256::new();
    for t in texts {
        h.update((t.len() as u64).to_le_bytes());
        h.update(t.as_bytes());
    }
    let model_bytes = std::fs::read(model).with_context(|| format!("reading {} for the cache key", model.display()))?;
    h.update(Sha256::digest(&model_bytes));
    h.update(salt.as_bytes());
    let digest: String = h.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect();
    let name = model.file_stem().map_or("model".into(), |s| s.to_string_lossy().into_owned());
    Ok(dir.join(format!("{name}-{}-{digest}.f32", texts.len())))
}

/// Layout: magic, rows (u64 LE), dim (u64 LE), then rows * dim f32 LE.
fn write_cache(path: &Path, rows: &[Vec<f32>]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let dim = rows.first().map_or(0, Vec::len);
    let tmp = path.with_extension("tmp");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    w.write_all(MAGIC)?;
    w.write_all(&(rows.len() as u64).to_le_bytes())?;
    w.write_all(&(dim as u64).to_le_bytes())?;
    for r in rows {
        for x in r {
            w.write_all(&x.to_le_bytes())?;
        }
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn read_cache(path: &Path, expect_rows: usize) -> anyhow::Result<Vec<Vec<f32>>> {
    let bytes = std::fs::read(path)?;
    if bytes.len() < 24 || &bytes[..8] != MAGIC {
        bail!("not an embedding cache file");
    }
    let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes")) as usize;
    let (rows, dim) = (word(8), word(16));
    if rows != expect_rows || dim == 0 || bytes.len() != 24 + rows * dim * 4 {
        bail!("holds {rows} x {dim} values, expected {expect_rows} rows");
    }
    let floats: Vec<f32> = bytes[24..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
    Ok(floats.chunks(dim).map(<[f32]>::to_vec).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vane_model::ModelError;

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("vane-dataset-{}-{name}", std::process::id()))
    }

    #[test]
    fn reads_fields_stringifies_labels_and_counts_skipped_rows() {
        let path = tmp("rows.jsonl");
        let rows = [
            r#"{"q": "What is 2+2?", "opts": ["3", "4"], "cat": "math"}"#,
            r#"{"q": "Is it toxic?", "opts": ["a"], "cat": 1}"#,
            r#"{"q": "Flag?", "opts": ["b"], "cat": true}"#,
            "",
            r#"{"q": "no label", "opts": ["c"]}"#,
            r#"{"q": null, "opts": ["d"], "cat": "x"}"#,
            r#"{"q": "bad label", "opts": ["e"], "cat": {"a": 1}}"#,
        ];
        std::fs::write(&path, rows.join("\n")).unwrap();
        let one = read_jsonl(&path, &["q".into()], "cat").unwrap();
        let got: Vec<(&str, &str)> = one.examples.iter().map(|e| (e.text.as_str(), e.label.as_str())).collect();
        assert_eq!(got, vec![("What is 2+2?", "math"), ("Is it toxic?", "1"), ("Flag?", "true")]);
        assert_eq!(one.skipped, 3);
        assert_eq!(one.examples[1].row, 2);
        let two = read_jsonl(&path, &["q".into(), "opts".into()], "cat").unwrap();
        assert_eq!(two.examples[0].text, "What is 2+2?\n3\n4");
        std::fs::write(&path, "{\"q\": 1}\nnot json\n").unwrap();
        let e = format!("{:#}", read_jsonl(&path, &["q".into()], "cat").unwrap_err());
        assert!(e.contains(":2: not JSON"), "{e}");
        let _ = std::fs::remove_file(&path);
    }

    struct Counting(usize);

    impl Encoder for Counting {
        fn dim(&self) -> usize {
            2
        }
        fn tokenizer(&self) -> vane_model::Tokenizer {
            vane_model::byte_tokenizer()
        }
        fn encode(&mut self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, ModelError> {
            self.0 += batch.len();
            Ok(batch.iter().map(|ids| vec![ids.len() as f32, 0.5]).collect())
        }
    }

    #[test]
    fn the_cache_skips_the_encoder_on_a_rerun() {
        let dir = tmp("cache");
        let model = tmp("model.onnx");
        std::fs::write(&model, b"weights").unwrap();
        let texts = ["a", "bb", "ccc"];
        let mut enc = Counting(0);
        let first = embed_all(&mut enc, &texts, 2, Some((&dir, &model, "t256"))).unwrap();
        assert_eq!(enc.0, 3);
        let again = embed_all(&mut enc, &texts, 2, Some((&dir, &model, "t256"))).unwrap();
        assert_eq!((enc.0, &again), (3, &first));
        embed_all(&mut enc, &texts[..2], 2, Some((&dir, &model, "t256"))).unwrap();
        assert_eq!(enc.0, 5, "other texts: another cache entry");
        embed_all(&mut enc, &texts, 2, Some((&dir, &model, "t128"))).unwrap();
        assert_eq!(enc.0, 8, "another salt: another cache entry");
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(&model);
    }
}
