//! POM: the gateway and scheduler for chains of flood-forecasting models.
//!
//! ```text
//!            config (rules/, schemas/)                 control (operators' actions)
//!                 │                                          │
//! incoming/ ─▶ intake ─▶ examine ─▶ route ─▶ ledger ─▶ archive ─▶ archive/ | rejected/ | outgoing/
//!           watch,settle, identify,   decide  (the only    filer,
//!           claim         validate    (pure)   SQL)        manifest
//!                                               │
//!                                               ▼
//!                                             chain ─▶ runs/<model>/<run>/ ─▶ outputs back to incoming/
//!                                     trigger (pure), contract, dispatch, executor
//!
//! replay: archived folders back in spool/replay/   supervise: views, metrics, alerts   web: API, pages
//! daemon: wires the stages, supervises them, reconciles the spool with the ledger at start
//! ```
//!
//! Each folder opens with its role: what comes in, what goes out, what it must never do.
//! Decisions (settle, route, trigger, retry) are pure functions with the clock passed in; I/O
//! stays at the edges; SQL lives only in [`ledger`]. See `docs/architecture.md`.

pub mod clock;
pub mod fs;
pub mod health;
pub mod id;
pub mod spool;

pub mod config;

pub mod examine;
pub mod intake;
pub mod route;

pub mod archive;
pub mod ledger;

pub mod chain;
pub mod replay;

pub mod board;
pub mod control;
pub mod supervise;

pub mod daemon;
pub mod web;
