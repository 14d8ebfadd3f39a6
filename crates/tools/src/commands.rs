//! The subcommands: `train` fits a classifier head on labelled JSONL, `eval` measures one,
//! `eval-pii` measures the PII detector, `eval-cache` the semantic cache's hit rule on labelled
//! question pairs, `read` how much of a data set the encoder's vocabulary covers.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};

use vane_model::Encoder;
use vane_model::head::phrases::PhraseFeatures;
use vane_model::head::{Head, Kind, Meta, argmax};
use vane_model::onnx::OnnxEncoder;
use vane_routing::jailbreak::extra_windows;
use vane_sidecar::config::Config;

use crate::dataset::{self, Example};
use crate::report::Report;
use crate::train::{self as train_head, TrainConfig};

#[derive(Args)]
pub struct DataArgs {
    /// Labelled examples, one JSON object a line.
    #[arg(long)]
    data: PathBuf,
    /// The field(s) holding the text, comma-separated; they are joined with newlines (a list of
    /// strings, such as answer options, contributes one line each).
    #[arg(long = "text-field", visible_alias = "text-fields", value_delimiter = ',')]
    text_fields: Vec<String>,
    /// The field holding the label (a string, number or boolean).
    #[arg(long)]
    label_field: Option<String>,
    #[command(flatten)]
    encoder: EncoderArgs,
}

/// The configuration whose encoder embeds the texts, and how.
#[derive(Args)]
pub struct EncoderArgs {
    #[arg(long, env = "VANE_CONFIG", default_value = "config/vane.yaml")]
    config: PathBuf,
    /// Keep embeddings here (keyed by the texts and the encoder) so that re-runs skip the encoder.
    #[arg(long)]
    cache_embeddings: Option<PathBuf>,
    /// ONNX Runtime intra-op threads (overrides model.threads).
    #[arg(long)]
    threads: Option<usize>,
}

impl EncoderArgs {
    fn load_config(&self) -> anyhow::Result<Config> {
        // The encoder section is what the tools use: the heads it names may be the ones being
        // retrained, so they are not read.
        let mut config = Config::load_sections(&self.config)?;
        if let Some(t) = self.threads {
            config.model.threads = t.max(1);
        }
        Ok(config)
    }
}

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Where to write the head (JSON).
    #[arg(long)]
    out: PathBuf,
    /// Share of each class held out for the report (never trained on).
    #[arg(long, default_value_t = 0.2)]
    holdout: f64,
    /// Write the held-out rows (as read) here, for `eval --data`.
    #[arg(long)]
    holdout_out: Option<PathBuf>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// `auto` trains both and keeps the better on a validation split of the training rows.
    #[arg(long, value_enum, default_value_t = KindArg::Auto)]
    kind: KindArg,
    /// Use at most this many examples of each class.
    #[arg(long)]
    max_per_class: Option<usize>,
    /// Weight examples by inverse class frequency.
    #[arg(long, value_enum, default_value_t = ClassWeight::None)]
    class_weight: ClassWeight,
    /// L2 penalty on the weights [default: 1e-4].
    #[arg(long)]
    l2: Option<f32>,
    /// Passes over the data [default: 60]; the best epoch on validation is kept.
    #[arg(long)]
    epochs: Option<usize>,
    /// Adam learning rate [default: softmax 0.01, mlp 0.002].
    #[arg(long)]
    lr: Option<f32>,
    /// MLP hidden units [default: 256].
    #[arg(long)]
    hidden: Option<usize>,
    /// MLP dropout on the hidden layer [default: 0.5].
    #[arg(long)]
    dropout: Option<f32>,
    /// Examples per gradient step [default: 64].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Also feed the head the jailbreak phrase indicators of each text (head/phrases.rs), after
    /// the embedding; the head file lists them and the sidecar computes them the same way.
    #[arg(long)]
    phrase_features: bool,
}

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    data: DataArgs,
    /// The head to measure [default: routing.head of the configuration].
    #[arg(long)]
    head: Option<PathBuf>,
    /// Decide by one label's probability instead of the most probable label: predict it when its
    /// probability reaches --threshold (for binary heads: jailbreak, "the small model is right").
    #[arg(long, requires = "threshold")]
    positive: Option<String>,
    #[arg(long, requires = "positive")]
    threshold: Option<f32>,
    /// Write each example's label, prediction and probabilities here (JSONL, input order).
    #[arg(long)]
    predictions_out: Option<PathBuf>,
    /// Judge texts longer than the encoder window on overlapping windows and keep the one where
    /// --positive is most probable, as the sidecar does for jailbreaks.
    #[arg(long, requires = "positive")]
    windowed: bool,
}

#[derive(Args)]
pub struct EvalCacheArgs {
    /// Labelled question pairs, one JSON object a line.
    #[arg(long)]
    pairs: PathBuf,
    /// The field holding the question already in the cache.
    #[arg(long, default_value = "q1")]
    q1_field: String,
    /// The field holding the question asked.
    #[arg(long, default_value = "q2")]
    q2_field: String,
    /// The field saying whether the two ask the same (1/0, true/false).
    #[arg(long, default_value = "is_duplicate")]
    label_field: String,
    #[command(flatten)]
    encoder: EncoderArgs,
    /// Measure this many pairs, chosen by a seeded shuffle (the same ones on every run).
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Report the lowest threshold reaching this precision, guard off and on.
    #[arg(long, default_value_t = 0.9)]
    target_precision: f64,
    /// Write each pair's similarity, label and guard verdict here (JSONL, input order).
    #[arg(long)]
    scores_out: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
pub enum KindArg {
    Auto,
    Softmax,
    Mlp,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
pub enum ClassWeight {
    None,
    Balanced,
}


#[derive(Args)]
pub struct ReadArgs {
    /// JSONL files; each row's text fields are read separately.
    #[arg(long, required = true)]
    data: Vec<PathBuf>,
    /// The field(s) holding text, comma-separated (rows lacking one are skipped for it).
    #[arg(long = "text-field", value_delimiter = ',', required = true)]
    text_fields: Vec<String>,
    /// Also print the texts with the most unknown tokens, this many.
    #[arg(long, default_value_t = 0)]
    show: usize,
    #[command(flatten)]
    encoder: EncoderArgs,
}

/// How much of each text the encoder can read: the distribution of the share of tokens unknown
/// to its vocabulary, how many texts each bound (`cache.max_unknown_share`,
/// `routing.max_unknown_share`) would call unreadable, and how many run past the window.
/// Tokenises only.
pub fn read(args: ReadArgs) -> anyhow::Result<()> {
    let config = args.encoder.load_config()?;
    let tokenize = OnnxEncoder::load(&config.model).context("loading the encoder")?.tokenizer();
    let mut shares = Vec::new();
    let mut worst: Vec<(f32, String)> = Vec::new();
    let mut truncated = 0;
    for path in &args.data {
        let mut rows = Vec::new();
        dataset::for_each_row(path, |_, row, _| rows.push(row))?;
        for row in rows {
            for field in &args.text_fields {
                let Some(text) = row.get(field).and_then(serde_json::Value::as_str) else { continue };
                let reading = tokenize(text)?.reading;
                shares.push(reading.unknown_share());
                truncated += usize::from(reading.truncated);
                if args.show > 0 && reading.unknown > 0 {
                    worst.push((reading.unknown_share(), text.chars().take(160).collect()));
                }
            }
        }
    }
    anyhow::ensure!(!shares.is_empty(), "no texts in the fields {:?}", args.text_fields);
    shares.sort_by(f32::total_cmp);
    let n = shares.len();
    let at = |q: f64| shares[((n - 1) as f64 * q).round() as usize];
    let pct = |k: usize| 100.0 * k as f64 / n as f64;
    let any = shares.iter().filter(|&&s| s > 0.0).count();
    println!("texts={n} with_unknown_tokens={any} ({:.2}%) truncated={truncated} ({:.2}%)", pct(any), pct(truncated));
    println!("unknown share: p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3}", at(0.5), at(0.9), at(0.99), at(0.999), at(1.0));
    println!("max_unknown_share | unreadable texts");
    for bound in [0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5] {
        let above = shares.iter().filter(|&&s| s > bound).count();
        println!("{bound:17.2} | {above} ({:.2}%)", pct(above));
    }
    worst.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (share, text) in worst.iter().take(args.show) {
        println!("{share:.3} {text:?}");
    }
    Ok(())
}

pub fn eval_pii(data: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(data).with_context(|| format!("reading {}", data.display()))?;
    let report = crate::pii_eval::evaluate(&text).map_err(|e| anyhow::anyhow!("{}: {e}", data.display()))?;
    println!("{report}");
    Ok(())
}

pub fn eval_cache(args: EvalCacheArgs) -> anyhow::Result<()> {
    use crate::cache_eval::{self, Fields, Scored};
    let config = args.encoder.load_config()?;
    let fields = Fields { cached: &args.q1_field, asked: &args.q2_field, label: &args.label_field };
    let (all, skipped) = cache_eval::read_pairs(&args.pairs, &fields)?;
    let pairs: Vec<_> = cache_eval::subsample(all.len(), args.limit, args.seed).into_iter().map(|i| all[i].clone()).collect();
    eprintln!("{}: {} pairs ({} measured), {skipped} rows skipped (lacking {}, {} or {})", args.pairs.display(), all.len(), pairs.len(), args.q1_field, args.q2_field, args.label_field);
    anyhow::ensure!(!pairs.is_empty(), "{}: no pairs to measure", args.pairs.display());
    // Both sides in one list, so that one cache file holds the whole run.
    let texts: Vec<&str> = pairs.iter().map(|p| p.cached.as_str()).chain(pairs.iter().map(|p| p.asked.as_str())).collect();
    let (x, readings) = embed_and_read(&config, &texts, args.encoder.cache_embeddings.as_deref())?;
    let (cached, asked) = x.split_at(pairs.len());
    let max_unknown = config.cache.max_unknown_share;
    let scored: Vec<Scored> = (0..pairs.len())
        .map(|i| Scored::new(&pairs[i], vane_model::cosine(&cached[i], &asked[i]), (readings[i], readings[pairs.len() + i]), max_unknown))
        .collect();
    if let Some(out) = &args.scores_out {
        let mut text = String::new();
        for (p, s) in pairs.iter().zip(&scored) {
            let row = serde_json::json!({"similarity": s.similarity, "duplicate": s.duplicate, "conflict": s.refusal(), "q1": p.cached, "q2": p.asked});
            text.push_str(&row.to_string());
            text.push('\n');
        }
        std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("scores written to {}", out.display());
    }
    print!("{}", cache_eval::render(&scored, config.cache.threshold, args.target_precision));
    Ok(())
}

/// Embeds `texts` with the configured encoder, through the embedding cache when given one; also
/// returns the encoder's dimension.
fn embed_texts(config: &Config, texts: &[&str], cache_dir: Option<&Path>) -> anyhow::Result<(Vec<Vec<f32>>, usize)> {
    let (encoder, vectors) = load_and_embed_texts(config, texts, cache_dir)?;
    Ok((vectors, encoder.dim()))
}

/// Embeds `texts` as [`embed_texts`] does, with how much of each the encoder could read.
fn embed_and_read(config: &Config, texts: &[&str], cache_dir: Option<&Path>) -> anyhow::Result<(Vec<Vec<f32>>, Vec<vane_model::Reading>)> {
    let (encoder, vectors) = load_and_embed_texts(config, texts, cache_dir)?;
    let tokenize = encoder.tokenizer();
    let readings = texts.iter().map(|t| tokenize(t).map(|t| t.reading)).collect::<Result<Vec<_>, _>>()?;
    Ok((vectors, readings))
}

fn load_and_embed_texts(config: &Config, texts: &[&str], cache_dir: Option<&Path>) -> anyhow::Result<(OnnxEncoder, Vec<Vec<f32>>)> {
    let started = std::time::Instant::now();
    let mut encoder = OnnxEncoder::load(&config.model).context("loading the encoder")?;
    eprintln!("encoder {} ready in {} ms ({} threads)", config.model.onnx.display(), started.elapsed().as_millis(), config.model.threads);
    let salt = format!("max_tokens={}", config.model.max_tokens);
    let cache = cache_dir.map(|dir| (dir, config.model.onnx.as_path(), salt.as_str()));
    let vectors = dataset::embed_all(&mut encoder, texts, config.model.max_batch.min(32), cache)?;
    Ok((encoder, vectors))
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// Reads the examples and embeds their texts (through the cache when asked).
fn load_and_embed(args: &DataArgs, config: &Config, text_fields: &[String], label_field: &str, keep: impl FnOnce(&[Example]) -> Vec<usize>) -> anyhow::Result<(Vec<Example>, Vec<Vec<f32>>, usize)> {
    let loaded = dataset::read_jsonl(&args.data, text_fields, label_field)?;
    eprintln!(
        "{}: {} examples, {} rows skipped (lacking {} or {label_field})",
        args.data.display(),
        loaded.examples.len(),
        loaded.skipped,
        text_fields.join("/")
    );
    let chosen = keep(&loaded.examples);
    let examples: Vec<Example> = chosen.into_iter().map(|i| loaded.examples[i].clone()).collect();
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let (x, dim) = embed_texts(config, &texts, args.encoder.cache_embeddings.as_deref())?;
    Ok((examples, x, dim))
}

pub fn train(args: TrainArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let config = args.data.encoder.load_config()?;
    anyhow::ensure!(!args.data.text_fields.is_empty(), "give --text-field");
    let label_field = args.data.label_field.clone().context("give --label-field")?;
    anyhow::ensure!((0.0..0.9).contains(&args.holdout), "--holdout: must be in [0, 0.9)");
    let fields = args.data.text_fields.clone();
    let (max_per_class, seed) = (args.max_per_class, args.seed);
    let (examples, mut x, _) = load_and_embed(&args.data, &config, &fields, &label_field, |all| {
        let labels = label_indices(all).1;
        match max_per_class {
            Some(max) => train_head::cap_per_class(&labels, labels.iter().max().map_or(0, |m| m + 1), max, seed ^ 0x5eed),
            None => (0..all.len()).collect(),
        }
    })?;
    let phrases = args.phrase_features.then(PhraseFeatures::all);
    if let Some(phrases) = &phrases {
        for (v, e) in x.iter_mut().zip(&examples) {
            phrases.extend(&e.text, v);
        }
    }
    let (labels, y) = label_indices(&examples);
    anyhow::ensure!(labels.len() >= 2, "{}: need at least 2 distinct labels in {label_field}, found {:?}", args.data.data.display(), labels);
    let embedded = started.elapsed();
    let data = train_head::Data { x: &x, y: &y, classes: labels.len() };
    let (kept, held) = train_head::stratified_split(&y, labels.len(), args.holdout, seed);
    eprintln!("{} labels; {} examples to train on, {} held out", labels.len(), kept.len(), held.len());
    if let Some(path) = &args.holdout_out {
        let text: String = held.iter().map(|&i| examples[i].raw.clone() + "\n").collect();
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("held-out rows written to {}", path.display());
    }

    // Choose the kind (and the number of epochs) on a validation split of the training rows,
    // so the held-out rows stay unseen until the final report.
    let kept_y: Vec<usize> = kept.iter().map(|&i| y[i]).collect();
    let (fit, val) = train_head::stratified_split(&kept_y, labels.len(), 0.15, seed.wrapping_add(1));
    let (fit, val): (Vec<usize>, Vec<usize>) = (fit.iter().map(|&i| kept[i]).collect(), val.iter().map(|&i| kept[i]).collect());
    let kinds: &[Kind] = match args.kind {
        KindArg::Auto => &[Kind::Softmax, Kind::Mlp],
        KindArg::Softmax => &[Kind::Softmax],
        KindArg::Mlp => &[Kind::Mlp],
    };
    let mut best: Option<(f64, f64, TrainConfig, usize)> = None;
    for &kind in kinds {
        let d = TrainConfig::defaults(kind);
        let cfg = TrainConfig {
            hidden: args.hidden.unwrap_or(d.hidden),
            epochs: args.epochs.unwrap_or(d.epochs).max(1),
            batch: args.batch_size.unwrap_or(d.batch).max(1),
            lr: args.lr.unwrap_or(d.lr),
            l2: args.l2.unwrap_or(d.l2),
            dropout: args.dropout.unwrap_or(d.dropout).clamp(0.0, 0.95),
            class_weight: args.class_weight == ClassWeight::Balanced,
            seed,
            ..d
        };
        let t0 = std::time::Instant::now();
        let t = train_head::train(&cfg, &data, &fit, &val, None);
        let (acc, f1) = t.history.get(t.best_epoch.saturating_sub(1)).copied().unwrap_or_default();
        eprintln!(
            "{kind}: validation accuracy={acc:.4} macro_f1={f1:.4} (best epoch {}/{}, {:.1} s, {} train / {} validation)",
            t.best_epoch,
            cfg.epochs,
            t0.elapsed().as_secs_f64(),
            fit.len(),
            val.len()
        );
        if best.as_ref().is_none_or(|b| (acc, f1) > (b.0, b.1)) {
            best = Some((acc, f1, cfg, t.best_epoch));
        }
    }
    let (_, _, cfg, epochs) = best.context("no kind to train")?;
    let t0 = std::time::Instant::now();
    let trained = train_head::train(&cfg, &data, &kept, &[], Some(epochs));
    eprintln!("kept {}: retrained on all {} training examples for {epochs} epochs in {:.1} s", cfg.kind, kept.len(), t0.elapsed().as_secs_f64());

    let mut training = cfg.describe();
    training.insert("epochs_kept".into(), epochs.into());
    let mut meta = Meta {
        trained_on: Some(file_name(&args.data.data)),
        text_fields: fields,
        label_field: Some(label_field),
        examples: kept.len(),
        holdout_examples: held.len(),
        encoder: Some(config.model.encoder.clone()),
        seed,
        training,
        ..Meta::default()
    };
    if !held.is_empty() {
        let truth: Vec<usize> = held.iter().map(|&i| y[i]).collect();
        let predicted: Vec<usize> = held.iter().map(|&i| argmax(&trained.params.predict(&x[i])).0).collect();
        let report = Report::new(labels.clone(), &truth, &predicted);
        println!("held-out report ({} examples never trained on; head {}):\n", held.len(), cfg.kind);
        print!("{}", report.render());
        meta.holdout_accuracy = Some(round4(report.accuracy()));
        meta.holdout_macro_f1 = Some(round4(report.macro_f1()));
    }
    let mut head = Head::new(labels, trained.params, meta);
    if let Some(phrases) = phrases {
        head = head.with_phrases(phrases);
    }
    head.save(&args.out)?;
    eprintln!(
        "wrote {} ({} head, {} labels) in {:.1} s ({:.1} s embedding)",
        args.out.display(),
        head.kind(),
        head.labels().len(),
        started.elapsed().as_secs_f64(),
        embedded.as_secs_f64()
    );
    Ok(())
}

/// Replaces each long example's probabilities by those of its window where label `positive` is
/// most probable (see [`vane_routing::jailbreak::extra_windows`]).
fn most_suspicious_windows(args: &DataArgs, config: &Config, head: &Head, positive: usize, examples: &[Example], probabilities: &mut [Vec<f32>]) -> anyhow::Result<()> {
    let windows: Vec<(usize, String)> = examples.iter().enumerate().flat_map(|(i, e)| extra_windows(&e.text).into_iter().map(move |w| (i, w))).collect();
    let long = windows.iter().map(|(i, _)| i).collect::<std::collections::BTreeSet<_>>().len();
    eprintln!("{long} texts are longer than the first window: {} more windows to embed", windows.len());
    if windows.is_empty() {
        return Ok(());
    }
    let texts: Vec<&str> = windows.iter().map(|(_, w)| w.as_str()).collect();
    let (embedded, _) = embed_texts(config, &texts, args.encoder.cache_embeddings.as_deref())?;
    for ((i, w), e) in windows.iter().zip(&embedded) {
        let p = head.predict_text(e, w);
        if p[positive] > probabilities[*i][positive] {
            probabilities[*i] = p;
        }
    }
    Ok(())
}

/// The positive label when its probability reaches the threshold, else the most probable other.
fn decide_binary(p: &[f32], positive: usize, threshold: f32) -> usize {
    if p.get(positive).is_some_and(|&v| v >= threshold) {
        return positive;
    }
    p.iter().enumerate().filter(|&(i, _)| i != positive).max_by(|a, b| a.1.total_cmp(b.1)).map_or(positive, |(i, _)| i)
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// Sorted distinct labels, and each example's index into them.
fn label_indices(examples: &[Example]) -> (Vec<String>, Vec<usize>) {
    let mut labels: Vec<String> = examples.iter().map(|e| e.label.clone()).collect();
    labels.sort();
    labels.dedup();
    let y = examples.iter().map(|e| labels.binary_search(&e.label).expect("label listed")).collect();
    (labels, y)
}

pub fn eval(args: EvalArgs) -> anyhow::Result<()> {
    let config = args.data.encoder.load_config()?;
    let path = args.head.clone().or_else(|| config.routing.head.clone()).with_context(|| {
        format!("no head to evaluate: pass --head FILE or set routing.head in {}", args.data.encoder.config.display())
    })?;
    let head = Head::load(&path)?;
    let fields = if args.data.text_fields.is_empty() { head.meta.text_fields.clone() } else { args.data.text_fields.clone() };
    anyhow::ensure!(!fields.is_empty(), "give --text-field (the head does not record its own)");
    let label_field = args.data.label_field.clone().or_else(|| head.meta.label_field.clone()).context("give --label-field (the head does not record its own)")?;
    if let Some(why) = head.meta.refuses(&config.model.encoder) {
        anyhow::bail!("{}: {why}", path.display());
    }
    let (examples, x, dim) = load_and_embed(&args.data, &config, &fields, &label_field, |all| (0..all.len()).collect())?;
    anyhow::ensure!(head.dim() == dim, "{}: the head takes {}-value embeddings but the encoder makes {dim}", path.display(), head.dim());
    // Labels the head does not know are listed after its own: always counted as errors.
    let mut labels = head.labels().to_vec();
    let mut unknown: Vec<String> = examples.iter().map(|e| e.label.clone()).filter(|l| !labels.contains(l)).collect();
    unknown.sort();
    unknown.dedup();
    if !unknown.is_empty() {
        eprintln!("warning: labels the head does not know (always wrong): {unknown:?}");
    }
    labels.extend(unknown);
    let truth: Vec<usize> = examples.iter().map(|e| labels.iter().position(|l| *l == e.label).expect("label listed")).collect();
    let positive = match &args.positive {
        Some(p) => Some(head.labels().iter().position(|l| l == p).with_context(|| format!("--positive {p}: the head's labels are {:?}", head.labels()))?),
        None => None,
    };
    let t0 = std::time::Instant::now();
    let mut probabilities: Vec<Vec<f32>> = x.iter().zip(&examples).map(|(v, e)| head.predict_text(v, &e.text)).collect();
    let per_example = t0.elapsed().as_secs_f64() / x.len().max(1) as f64;
    eprintln!("head {} ({}): {:.1} µs per prediction", path.display(), head.kind(), per_example * 1e6);
    if let (true, Some(p)) = (args.windowed, positive) {
        most_suspicious_windows(&args.data, &config, &head, p, &examples, &mut probabilities)?;
    }
    let predicted: Vec<usize> = probabilities
        .iter()
        .map(|p| match (positive, args.threshold) {
            (Some(i), Some(t)) => decide_binary(p, i, t),
            _ => argmax(p).0,
        })
        .collect();
    if let Some(out) = &args.predictions_out {
        let mut text = String::new();
        for ((e, p), &k) in examples.iter().zip(&probabilities).zip(&predicted) {
            let scores: serde_json::Map<String, serde_json::Value> = head.labels().iter().zip(p).map(|(l, &v)| (l.clone(), f64::from(v).into())).collect();
            let row = serde_json::json!({"row": e.row, "label": e.label, "predicted": labels[k], "probabilities": scores});
            text.push_str(&row.to_string());
            text.push('\n');
        }
        std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("predictions written to {}", out.display());
    }
    let report = Report::new(labels, &truth, &predicted);
    print!("{}", report.render());
    Ok(())
}
