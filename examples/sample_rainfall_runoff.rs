//! Sample model of the POM chain: a rainfall-runoff model (a linear reservoir).
//!
//! Inputs: observed rainfall (`P.obs`, mm/h) and discharge (`Q.obs`, m3/s) in PI time series, as
//! named by the PI run file. Output: simulated discharge (`Q.sim`) in `output/`, and a PI
//! diagnostics file. Not hydrology to trust: a small program that honours the model contract.

#[path = "sample/pi.rs"]
mod pi;

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
        let mut q = flow.events.first().map(|e| e.2).unwrap_or(0.0);
        // The reservoir constant, which an operator may tune (`env` of the model's rule file).
        let k = std::env::var("RUNOFF_K")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.3);
        let area = 2.5;
        let events = rain
            .events
            .iter()
            .map(|(d, t, p)| {
                let p = if p.is_finite() && *p >= 0.0 { *p } else { 0.0 };
                q += k * (area * p - 0.1 * q);
                (d.clone(), t.clone(), q.max(0.0))
            })
            .collect();
        let out = pi::Series {
            location: flow.location.clone(),
            parameter: "Q.sim".into(),
            events,
        };
        let path = run.output_dir.join(format!("runoff_{}.xml", out.location));
        pi::write_series(&path, &out, "m3/s").map_err(|e| e.to_string())?;
        Ok(vec![format!(
            "simulated {} steps at {}",
            out.events.len(),
            out.location
        )])
    });
}
