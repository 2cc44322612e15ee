//! The initial catalog: the seven classic titles, a catalog file, or N
//! generated books.
//!
//! Sources are validated when the node starts (a bad catalog file is a
//! startup error naming the offending record) and produce the same books, with
//! the same ids, on every start, so that re-seeding after a crash is harmless.

use std::path::Path;

use anyhow::{Context, bail};
use bazar_api::model::CLASSICS;
use bazar_api::model::{MAX_INITIAL_STOCK, NewBook};
use bazar_api::{Book, isbn};
use serde::Deserialize;

/// Where the initial books come from.
#[derive(Debug, Clone)]
pub enum SeedSource {
    /// The seven classic titles of the Bazar/Pygmy lab.
    Classic,
    /// Books read from a file.
    Books(Vec<Book>),
    /// `n` generated books with ids 1..=n.
    Generated(u64),
}

/// Topics of generated books.
const TOPICS: [&str; 20] = [
    "distributed systems",
    "undergraduate school",
    "databases",
    "operating systems",
    "networking",
    "compilers",
    "algorithms",
    "cryptography",
    "machine learning",
    "graphics",
    "programming languages",
    "security",
    "formal methods",
    "storage",
    "concurrency",
    "theory",
    "history",
    "cooking",
    "travel",
    "poetry",
];

/// Largest number of generated books.
pub const MAX_GENERATED: u64 = 100_000_000;

fn classic() -> Vec<Book> {
    CLASSICS
        .iter()
        .enumerate()
        .map(|(i, (title, topic, price))| {
            let id = i as u64 + 1;
            Book {
                id,
                isbn: isbn::from_number(id),
                title: title.to_string(),
                topic: topic.to_string(),
                price_cents: *price,
                stock: 1000,
            }
        })
        .collect()
}

fn generated_book(id: u64) -> Book {
    Book {
        id,
        isbn: isbn::from_number(id),
        title: format!("Synthetic Volume {id}"),
        topic: TOPICS[(id % TOPICS.len() as u64) as usize].to_string(),
        price_cents: 500 + (id.wrapping_mul(7919) % 9500),
        stock: 1000,
    }
}

/// A record of a catalog file: a [`NewBook`] with an optional explicit id.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBook {
    #[serde(default)]
    id: Option<u64>,
    isbn: String,
    title: String,
    topic: String,
    price_cents: u64,
    #[serde(default = "default_stock")]
    stock: u64,
}

fn default_stock() -> u64 {
    1000
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum JsonCatalog {
    List(Vec<FileBook>),
    Wrapped { books: Vec<FileBook> },
}

impl SeedSource {
    /// `n` generated books.
    pub fn generated(n: u64) -> anyhow::Result<SeedSource> {
        if n == 0 || n > MAX_GENERATED {
            bail!("--generate-books must be between 1 and {MAX_GENERATED}");
        }
        Ok(SeedSource::Generated(n))
    }

    /// Books from a JSON (`[...]` or `{"books":[...]}`) or CSV file (header
    /// `isbn,title,topic,price_cents[,stock][,id]`), chosen by extension.
    pub fn from_file(path: &Path) -> anyhow::Result<SeedSource> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let records: Vec<FileBook> = match path.extension().and_then(|e| e.to_str()) {
            Some("json") => match serde_json::from_str::<JsonCatalog>(&text)
                .with_context(|| format!("parsing {} as a JSON catalog", path.display()))?
            {
                JsonCatalog::List(l) | JsonCatalog::Wrapped { books: l } => l,
            },
            Some("csv") => {
                let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(text.as_bytes());
                let mut records = Vec::new();
                for (i, row) in reader.deserialize::<FileBook>().enumerate() {
                    records.push(row.with_context(|| format!("{} record {}", path.display(), i + 1))?);
                }
                records
            }
            _ => bail!("{}: a catalog file must end in .json or .csv", path.display()),
        };
        if records.is_empty() {
            bail!("{}: the catalog is empty", path.display());
        }
        let mut books = Vec::with_capacity(records.len());
        let mut ids = std::collections::HashSet::new();
        let mut isbns = std::collections::HashSet::new();
        for (i, r) in records.into_iter().enumerate() {
            let at = || format!("{} record {}", path.display(), i + 1);
            let new =
                NewBook { isbn: r.isbn, title: r.title, topic: r.topic, price_cents: r.price_cents, stock: r.stock }
                    .validate()
                    .map_err(anyhow::Error::msg)
                    .with_context(at)?;
            if new.stock > MAX_INITIAL_STOCK {
                bail!("{}: stock above {MAX_INITIAL_STOCK}", at());
            }
            let id = r.id.unwrap_or(i as u64 + 1);
            if id == 0 || !ids.insert(id) {
                bail!("{}: id {id} is zero or repeated", at());
            }
            if !isbns.insert(new.isbn.clone()) {
                bail!("{}: ISBN {} is repeated", at(), new.isbn);
            }
            books.push(Book {
                id,
                isbn: new.isbn,
                title: new.title,
                topic: new.topic,
                price_cents: new.price_cents,
                stock: new.stock,
            });
        }
        books.sort_by_key(|b| b.id);
        Ok(SeedSource::Books(books))
    }

    /// How many books the source holds.
    pub fn len(&self) -> u64 {
        match self {
            SeedSource::Classic => 7,
            SeedSource::Books(b) => b.len() as u64,
            SeedSource::Generated(n) => *n,
        }
    }

    /// Whether the source is empty (never, for a validated source).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The books, `size` at a time, generated lazily.
    pub fn chunks(&self, size: usize) -> Box<dyn Iterator<Item = Vec<Book>> + Send + '_> {
        let size = size.max(1);
        match self {
            SeedSource::Classic => Box::new(std::iter::once(classic())),
            SeedSource::Books(books) => Box::new(books.chunks(size).map(<[Book]>::to_vec)),
            SeedSource::Generated(n) => {
                let n = *n;
                Box::new((0..n.div_ceil(size as u64)).map(move |c| {
                    let first = c * size as u64 + 1;
                    let last = (first + size as u64 - 1).min(n);
                    (first..=last).map(generated_book).collect()
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_catalog_has_seven_valid_books_with_ids_1_to_7() {
        let books: Vec<Book> = SeedSource::Classic.chunks(100).flatten().collect();
        assert_eq!(books.len(), 7);
        for (i, b) in books.iter().enumerate() {
            assert_eq!(b.id, i as u64 + 1);
            assert_eq!(isbn::normalize(&b.isbn).unwrap(), b.isbn);
            assert_eq!(b.stock, 1000);
        }
        assert_eq!(books[1].title, "RPCs for Noobs");
    }

    #[test]
    fn generated_books_are_chunked_without_gaps_and_are_valid() {
        let src = SeedSource::generated(10).unwrap();
        let chunks: Vec<Vec<Book>> = src.chunks(4).collect();
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 4, 2]);
        let ids: Vec<u64> = chunks.iter().flatten().map(|b| b.id).collect();
        assert_eq!(ids, (1..=10).collect::<Vec<_>>());
        for b in chunks.iter().flatten() {
            assert!(isbn::normalize(&b.isbn).is_ok());
            assert!(b.price_cents >= 500);
        }
        assert!(SeedSource::generated(0).is_err());
    }

    #[test]
    fn catalog_files_in_json_and_csv_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("c.json");
        std::fs::write(&json, r#"{"books":[{"isbn":"978-0-306-40615-7","title":"A","topic":"t","price_cents":100}]}"#)
            .unwrap();
        let SeedSource::Books(books) = SeedSource::from_file(&json).unwrap() else { panic!() };
        assert_eq!(books[0].id, 1);
        assert_eq!(books[0].isbn, "9780306406157");
        assert_eq!(books[0].stock, 1000);

        let csv = dir.path().join("c.csv");
        std::fs::write(&csv, "isbn,title,topic,price_cents,stock,id\n9780306406157,\"A, B\",t,100,5,9\n").unwrap();
        let SeedSource::Books(books) = SeedSource::from_file(&csv).unwrap() else { panic!() };
        assert_eq!((books[0].id, books[0].title.as_str(), books[0].stock), (9, "A, B", 5));

        let bad = dir.path().join("bad.csv");
        std::fs::write(&bad, "isbn,title,topic,price_cents\n123,A,t,100\n").unwrap();
        let err = format!("{:#}", SeedSource::from_file(&bad).unwrap_err());
        assert!(err.contains("record 1") && err.contains("isbn"), "{err}");
    }
}
