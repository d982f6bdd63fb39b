//! Sample model of the POM chain: a rainfall-runoff model (a linear reservoir) that forecasts.
//!
//! Inputs: observed rainfall (`P.obs`, mm/h) and discharge (`Q.obs`, m3/s) in PI time series, as
//! named by the PI run file, up to the run's time0. Output: simulated discharge (`Q.sim`) in
//! `output/`, hourly from the first observation to the end of the run's period: over the
//! observations, then past time0 for the lead time the period gives (with no rain forecast: the
//! reservoir empties), with time0 as its `forecastDate`; and a PI diagnostics file. Not hydrology
//! to trust: a small program that honours the model contract.

#[path = "sample/pi.rs"]
mod pi;

use std::collections::HashMap;

fn main() {
    pi::main_with("rainfall-runoff", |run| {
        let mut rain = None;
        let mut flow = None;
        for f in &run.inputs {
            let s = pi::read_series(f)?;
            match s.parameter.as_str() {
                "P.obs" => rain = Some(s),
                "Q.obs" => flow = Some(s),
                _ => {}
            }
        }
        let rain = rain.ok_or("no rainfall series (P.obs) among the inputs")?;
        let flow = flow.ok_or("no discharge series (Q.obs) among the inputs")?;
        let start = rain
            .timed()
            .map(|(t, _)| t)
            .min()
            .ok_or("the rainfall series is empty")?;
        if start > run.time0 {
            return Err(format!(
                "the rainfall starts at {start}, after time0 {}",
                run.time0
            ));
        }
        // Observed rain up to time0; none after it (the sample has no rainfall forecast).
        let observed: HashMap<_, _> = rain.timed().filter(|(t, _)| *t <= run.time0).collect();
        let mut q = flow.timed().next().map(|e| e.1).unwrap_or(0.0);
        // The reservoir constant, which an operator may tune (`env` of the model's rule file).
        let k = std::env::var("RUNOFF_K")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.3);
        let area = 2.5;
        let mut events = Vec::new();
        let mut t = start;
        while t <= run.end {
            let p = observed
                .get(&t)
                .copied()
                .filter(|p| p.is_finite() && *p >= 0.0)
                .unwrap_or(0.0);
            q += k * (area * p - 0.1 * q);
            let (d, time) = pi::pi_time(t);
            events.push((d, time, q.max(0.0)));
            t += chrono::Duration::hours(1);
        }
        let out = pi::Series {
            location: flow.location.clone(),
            parameter: "Q.sim".into(),
            forecast: Some(run.time0),
            events,
        };
        let path = run.output_dir.join(format!("runoff_{}.xml", out.location));
        pi::write_series(&path, &out, "m3/s").map_err(|e| e.to_string())?;
        Ok(vec![format!(
            "simulated {} steps at {}, {} h past time0",
            out.events.len(),
            out.location,
            (run.end - run.time0).num_hours()
        )])
    });
}
