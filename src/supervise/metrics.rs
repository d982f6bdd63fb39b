//! `/metrics` in the Prometheus text format: files by outcome per channel, queue depth, runs by
//! state per model, run durations, the rule-set version, last arrival per channel, alerts and
//! pauses.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use crate::board::Board;
use crate::config::rules::RuleSet;
use crate::ledger::{Ledger, LedgerError, Traffic};

/// Upper bounds of the run-duration histogram, seconds.
pub const DURATION_BUCKETS: [f64; 10] = [
    1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0,
];

/// A label value, escaped as the format says.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders every metric; `slurm_calls` counts the calls made to Slurm (the executor's).
pub fn render(
    reader: &Ledger,
    rules: &RuleSet,
    board: &Board,
    now: DateTime<Utc>,
    slurm_calls: u64,
) -> Result<String, LedgerError> {
    let mut out = String::new();
    head(
        &mut out,
        "pom_files_total",
        "counter",
        "Files decided, by channel, outcome (archived, rejected, duplicate) and mode \
         (operational, replay).",
    );
    for traffic in [Traffic::Operational, Traffic::Replay] {
        for (channel, states) in board.decided_in(traffic) {
            for (state, n) in states {
                let _ = writeln!(
                    out,
                    "pom_files_total{{channel=\"{}\",outcome=\"{}\",mode=\"{}\"}} {n}",
                    label(&channel),
                    label(&state),
                    traffic.name()
                );
            }
        }
    }
    let overview = crate::supervise::view::overview(reader, rules, board, now)?;
    head(
        &mut out,
        "pom_disk_bytes",
        "gauge",
        "Disk space used by each area of the spool (its top-level folders: incoming, queue, \
         archive, rejected, runs, outgoing, replay, reports, state), as last measured.",
    );
    for (area, (bytes, _)) in &overview.disk.areas {
        let _ = writeln!(out, "pom_disk_bytes{{area=\"{}\"}} {bytes}", label(area));
    }
    head(
        &mut out,
        "pom_disk_files",
        "gauge",
        "Files in each area of the spool, as last measured.",
    );
    for (area, (_, files)) in &overview.disk.areas {
        let _ = writeln!(out, "pom_disk_files{{area=\"{}\"}} {files}", label(area));
    }
    head(
        &mut out,
        "pom_pruned_total",
        "counter",
        "Stored files and run folders removed by retention (their ledger rows are kept).",
    );
    let _ = writeln!(
        out,
        "pom_pruned_total{{kind=\"file\"}} {}",
        overview.pruned.files
    );
    let _ = writeln!(
        out,
        "pom_pruned_total{{kind=\"run\"}} {}",
        overview.pruned.runs
    );
    products(&mut out, &overview.products);
    head(
        &mut out,
        "pom_queue_depth",
        "gauge",
        "Files waiting in incoming/ or being examined, per channel.",
    );
    for c in &overview.channels {
        let _ = writeln!(
            out,
            "pom_queue_depth{{channel=\"{}\"}} {}",
            label(&c.name),
            c.queue_depth
        );
    }
    head(
        &mut out,
        "pom_last_arrival_timestamp_seconds",
        "gauge",
        "Time of the last file received, per channel.",
    );
    for c in &overview.channels {
        if let Some(t) = c
            .last_arrival
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        {
            let _ = writeln!(
                out,
                "pom_last_arrival_timestamp_seconds{{channel=\"{}\"}} {:.3}",
                label(&c.name),
                t.timestamp_micros() as f64 / 1e6
            );
        }
    }
    head(
        &mut out,
        "pom_channel_paused",
        "gauge",
        "1 if an operator paused the channel.",
    );
    for c in &overview.channels {
        let _ = writeln!(
            out,
            "pom_channel_paused{{channel=\"{}\"}} {}",
            label(&c.name),
            u8::from(c.paused.is_some())
        );
    }
    head(
        &mut out,
        "pom_runs_total",
        "counter",
        "Model runs, by model, state and mode (operational, replay).",
    );
    for (model, state, mode, n) in crate::supervise::view::run_counts(reader)? {
        let _ = writeln!(
            out,
            "pom_runs_total{{model=\"{}\",state=\"{}\",mode=\"{}\"}} {n}",
            label(&model),
            label(&state),
            label(&mode)
        );
    }
    head(
        &mut out,
        "pom_runs_running",
        "gauge",
        "Runs in progress, per model.",
    );
    for m in &overview.models {
        let _ = writeln!(
            out,
            "pom_runs_running{{model=\"{}\"}} {}",
            label(&m.name),
            m.running
        );
    }
    head(
        &mut out,
        "pom_model_paused",
        "gauge",
        "1 if the model is paused (by an operator or in its rules).",
    );
    for m in &overview.models {
        let _ = writeln!(
            out,
            "pom_model_paused{{model=\"{}\"}} {}",
            label(&m.name),
            u8::from(m.state == "paused")
        );
    }
    head(
        &mut out,
        "pom_model_pending_inputs",
        "gauge",
        "Files delivered to the model and waiting for a run.",
    );
    for m in &overview.models {
        let _ = writeln!(
            out,
            "pom_model_pending_inputs{{model=\"{}\"}} {}",
            label(&m.name),
            m.pending_inputs
        );
    }
    head(
        &mut out,
        "pom_run_duration_seconds",
        "histogram",
        "Duration of ended runs, per model.",
    );
    for (model, (count, sum, buckets)) in
        crate::supervise::view::run_durations(reader, &DURATION_BUCKETS)?
    {
        let m = label(&model);
        for (b, n) in DURATION_BUCKETS.iter().zip(&buckets) {
            let _ = writeln!(
                out,
                "pom_run_duration_seconds_bucket{{model=\"{m}\",le=\"{b}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "pom_run_duration_seconds_bucket{{model=\"{m}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "pom_run_duration_seconds_sum{{model=\"{m}\"}} {sum:.3}"
        );
        let _ = writeln!(
            out,
            "pom_run_duration_seconds_count{{model=\"{m}\"}} {count}"
        );
    }
    head(
        &mut out,
        "pom_rules_info",
        "gauge",
        "The rule set in force (version is its SHA-256).",
    );
    let _ = writeln!(
        out,
        "pom_rules_info{{version=\"{}\"}} 1",
        label(&rules.version)
    );
    head(
        &mut out,
        "pom_rules_refused",
        "gauge",
        "1 while a refused rule edit is pending (the previous rules stay in force).",
    );
    let _ = writeln!(
        out,
        "pom_rules_refused {}",
        u8::from(overview.rules.refused.is_some())
    );
    head(
        &mut out,
        "pom_alert",
        "gauge",
        "Alerts in force, by kind and subject.",
    );
    for a in &overview.alerts {
        let _ = writeln!(
            out,
            "pom_alert{{kind=\"{}\",subject=\"{}\"}} 1",
            label(&a.kind),
            label(&a.subject)
        );
    }
    head(
        &mut out,
        "pom_alerts",
        "gauge",
        "Number of alerts in force, by kind.",
    );
    for kind in ["late_feed", "failed_run", "refused_rules", "low_disk"] {
        let n = overview.alerts.iter().filter(|a| a.kind == kind).count();
        let _ = writeln!(out, "pom_alerts{{kind=\"{kind}\"}} {n}");
    }
    head(
        &mut out,
        "pom_slurm_job",
        "gauge",
        "The Slurm job id of each run on the cluster still pending or running.",
    );
    for (run, model, job) in reader.slurm_jobs_running()? {
        let _ = writeln!(
            out,
            "pom_slurm_job{{model=\"{}\",run=\"{}\"}} {job}",
            label(&model),
            label(&run)
        );
    }
    head(
        &mut out,
        "pom_slurm_calls_total",
        "counter",
        "Calls made to Slurm (sbatch, squeue, sacct, scancel, scontrol): one poll for all jobs.",
    );
    let _ = writeln!(out, "pom_slurm_calls_total {slurm_calls}");
    Ok(out)
}

/// Each product's next deadline, its predicted issue time and chance of missing, and its state.
fn products(out: &mut String, products: &[crate::supervise::products::ProductView]) {
    let unix = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .map(|t| t.timestamp_millis() as f64 / 1000.0)
            .ok()
    };
    let current = |p: &crate::supervise::products::ProductView| p.cycles.last().cloned();
    head(
        out,
        "pom_product_deadline_seconds",
        "gauge",
        "The deadline of each product's current issue, Unix time.",
    );
    for p in products {
        if let Some(t) = current(p).and_then(|c| unix(&c.deadline)) {
            let _ = writeln!(
                out,
                "pom_product_deadline_seconds{{product=\"{}\"}} {t}",
                label(&p.name)
            );
        }
    }
    head(
        out,
        "pom_product_predicted_seconds",
        "gauge",
        "When each product's current issue is predicted to be ready (median), Unix time.",
    );
    for p in products {
        if let Some(t) = current(p).and_then(|c| c.predicted).and_then(|t| unix(&t)) {
            let _ = writeln!(
                out,
                "pom_product_predicted_seconds{{product=\"{}\"}} {t}",
                label(&p.name)
            );
        }
    }
    head(
        out,
        "pom_product_miss_probability",
        "gauge",
        "The predicted chance that each product's current issue misses its deadline.",
    );
    for p in products {
        if let Some(m) = current(p).and_then(|c| c.miss) {
            let _ = writeln!(
                out,
                "pom_product_miss_probability{{product=\"{}\"}} {m}",
                label(&p.name)
            );
        }
    }
    head(
        out,
        "pom_product_state",
        "gauge",
        "Each product's current issue: 1 for its state (issued, issued late, on track, at risk, late, learning, not issued).",
    );
    for p in products {
        if let Some(c) = current(p) {
            let _ = writeln!(
                out,
                "pom_product_state{{product=\"{}\",state=\"{}\",degraded=\"{}\"}} 1",
                label(&p.name),
                label(&c.state),
                c.degraded
            );
        }
    }
    head(
        out,
        "pom_product_punctuality_ratio",
        "gauge",
        "The share of each product's past issues (up to 30) that were on time.",
    );
    for p in products {
        if let Some(r) = p.punctuality {
            let _ = writeln!(
                out,
                "pom_product_punctuality_ratio{{product=\"{}\"}} {r}",
                label(&p.name)
            );
        }
    }
}
