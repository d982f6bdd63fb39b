//! The chain: from files delivered to model input slots to model runs and back.
//!
//! In: deliveries recorded by routing, the models of the rule set, the clock. Out: runs, created
//! in the ledger together with the deliveries they consume, laid out as the model contract says
//! ([`contract`]: run folder, PI run file, PI diagnostics), executed ([`executor`]), ended with
//! their exit code and diagnostics, and their outputs dropped back into the spool on the model's
//! output channel, where they are examined and routed like any file: that is how chains form.
//! [`trigger`] decides which runs to start, purely; [`dispatch`] carries the decisions out.
//! Never: computing anything of a model's (POM only runs it), or SQL (the ledger's).

pub mod contract;
pub mod dispatch;
pub mod executor;
pub mod merge;
pub mod pi;
pub mod process;
pub mod time0;
pub mod trigger;
