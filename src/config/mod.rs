//! Configuration: what operators edit (`rules/`) and the format catalog (`schemas/`), each parsed
//! then compiled.
//!
//! In: `rules/channels.toml`, `rules/models/*.toml`, `rules/routes.toml`, `rules/products.toml`,
//! `schemas/catalog.toml` and the XSDs it names. Out: a [`RuleSet`] (channels, models, routes,
//! products, with a version) and a
//! [`catalog::Catalog`], or every problem found, each with its file and line ([`problems`]).
//! Code further down trusts what is compiled here and never re-checks it. Never: reading the
//! spool, the ledger or the clock; a reload swaps a whole compiled value ([`Shared`]).

use std::sync::{Arc, RwLock};

pub mod catalog;
pub mod content;
pub mod model;
pub mod problems;
pub mod products;
pub mod routes;
pub mod rules;

pub use rules::RuleSet;

/// A value shared between threads and swapped whole on reload.
pub type Shared<T> = Arc<RwLock<Arc<T>>>;

/// Reads the current value of a shared, swappable value.
pub fn current<T>(s: &Shared<T>) -> Arc<T> {
    s.read()
        .map(|g| Arc::clone(&g))
        .unwrap_or_else(|p| Arc::clone(&p.into_inner()))
}
