//! POM: the gateway and scheduler for chains of flood-forecasting models.
//!
//! ```text
//! incoming/<channel>/ ─▶ settle ─▶ claim ─▶ identify ─▶ validate ─▶ archive | rejected
//!                        (intake thread)     (worker threads)        (ledger writer, filer)
//! ```
//!
//! Modules follow the pipeline. Decisions (settle) are pure functions with the clock passed in;
//! I/O stays in the loops of [`intake`], [`examine`], [`ledger`] and [`archive`].

pub mod fs;
pub mod health;
pub mod problems;
pub mod spool;

pub mod catalog;
pub mod model;
pub mod route;
pub mod rules;

pub mod archive;
pub mod claim;
pub mod examine;
pub mod identify;
pub mod ledger;
pub mod settle;
pub mod validate;

pub mod alerts;
pub mod board;
pub mod client;
pub mod clock;
pub mod compare;
pub mod control;
pub mod daemon;
pub mod dispatch;
pub mod intake;
pub mod pi;
pub mod process;
pub mod replay;
pub mod run;
pub mod track;
pub mod trigger;

pub mod listen;
pub mod metrics;
pub mod view;
pub mod watch;
pub mod web;
