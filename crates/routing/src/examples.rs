//! Category classification by example utterances: a prompt belongs to the category whose
//! examples it is most similar to (mean of its best `TOP_K` cosines, so one lucky example
//! does not decide). Works on the shared embedding, so it costs only dot products.

use vane_model::cosine;

const TOP_K: usize = 2;

pub struct Classifier {
    categories: Vec<(String, Vec<Vec<f32>>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    pub category: String,
    /// Mean cosine to the category's closest examples, in [-1, 1].
    pub score: f32,
}

impl Classifier {
    /// `categories`: each name with the embeddings of its examples.
    pub fn new(categories: Vec<(String, Vec<Vec<f32>>)>) -> Classifier {
        Classifier { categories }
    }

    /// The best category, or `None` when there are no categories.
    pub fn classify(&self, embedding: &[f32]) -> Option<Classification> {
        self.categories
            .iter()
            .map(|(name, examples)| {
                let mut sims: Vec<f32> = examples.iter().map(|e| cosine(embedding, e)).collect();
                sims.sort_by(|a, b| b.total_cmp(a));
                let k = sims.len().clamp(1, TOP_K);
                let score = sims.iter().take(k).sum::<f32>() / k as f32;
                Classification { category: name.clone(), score }
            })
            .max_by(|a, b| a.score.total_cmp(&b.score))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn picks_the_nearest_category_by_its_best_examples() {
        let c = Classifier::new(vec![
            ("math".into(), vec![unit(&[1.0, 0.0, 0.0]), unit(&[0.9, 0.1, 0.0]), unit(&[0.0, 0.0, 1.0])]),
            ("history".into(), vec![unit(&[0.0, 1.0, 0.0]), unit(&[0.1, 0.9, 0.0])]),
        ]);
        let r = c.classify(&unit(&[0.95, 0.05, 0.0])).unwrap();
        assert_eq!(r.category, "math");
        assert!(r.score > 0.95);
        assert_eq!(c.classify(&unit(&[0.0, 1.0, 0.05])).unwrap().category, "history");
        assert!(Classifier::new(vec![]).classify(&[1.0]).is_none());
    }
}
