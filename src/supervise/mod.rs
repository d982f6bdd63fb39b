//! Supervision: what operators see of the running chain, read from the ledger, the rules and the
//! board.
//!
//! In: the ledger (through its read functions), the compiled rules, the [`crate::board`]. Out:
//! the views of the web client and the CLI ([`view`]), hydrographs ([`series`]), stations and
//! their index ([`stations`]), `/metrics` ([`metrics`]) and alerts ([`alerts`]: a late feed, a
//! failed run, a refused rule edit, low disk space), and what the service manager is told
//! ([`systemd`]: readiness, the watchdog). Never: SQL (the ledger's), or changing the
//! chain (operators act through [`crate::control`]); the one thing written here is the station
//! index, derived from the archive and rebuilt from it at will.

pub mod alerts;
pub mod deadline;
pub mod impact;
pub mod metrics;
pub mod products;
pub mod series;
pub mod stations;
pub mod systemd;
pub mod view;
