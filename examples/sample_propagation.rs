//! Sample model of the POM chain: propagation of a simulated discharge downstream (a lag of two
//! time steps and an attenuation).
//!
//! Input: simulated discharge (`Q.sim`). Output: the forecast downstream (`Q.fcst`) in `output/`,
//! and a PI diagnostics file.

#[path = "sample/pi.rs"]
mod pi;

fn main() {
    pi::main_with("propagation", |run| {
        let input = run.inputs.first().ok_or("no input series")?;
        let up = pi::read_series(input)?;
        if up.events.is_empty() {
            return Err("the upstream series is empty".into());
        }
        let values: Vec<f64> = up.events.iter().map(|e| e.2).collect();
        let events = up
            .events
            .iter()
            .enumerate()
            .map(|(i, (d, t, _))| {
                let lagged = values[i.saturating_sub(2)];
                let smooth = 0.7 * lagged + 0.3 * values[i.saturating_sub(3)];
                (d.clone(), t.clone(), smooth)
            })
            .collect();
        let out = pi::Series {
            location: format!("{}-downstream", up.location),
            parameter: "Q.fcst".into(),
            events,
        };
        let path = run
            .output_dir
            .join(format!("forecast_{}.xml", out.location));
        pi::write_series(&path, &out, "m3/s").map_err(|e| e.to_string())?;
        Ok(vec![format!(
            "forecast {} steps for {}",
            out.events.len(),
            out.location
        )])
    });
}
