//! Supervision: what operators see of the running chain, read from the ledger, the rules and the
//! board.
//!
//! In: the ledger (through its read functions), the compiled rules, the [`crate::board`]. Out:
//! the views of the web client and the CLI ([`view`]), hydrographs ([`series`]), `/metrics`
//! ([`metrics`]) and alerts
//! ([`alerts`]: a late feed, a failed run, a refused rule edit, low disk space). Never: SQL (the
//! ledger's), or changing anything (operators act through [`crate::control`]).

pub mod alerts;
pub mod metrics;
pub mod series;
pub mod view;
