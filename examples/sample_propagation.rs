//! Sample model of the POM chain: propagation of a simulated discharge downstream (a lag of two
//! time steps and an attenuation), as a forecast.
//!
//! Input: simulated discharge (`Q.sim`). Output: the forecast downstream (`Q.fcst`) in `output/`,
//! from the run's time0 (the upstream forecast's, carried along the chain) to the end of its
//! upstream series, with time0 as its `forecastDate`; and a PI diagnostics file.

#[path = "sample/pi.rs"]
mod pi;

fn main() {
    pi::main_with("propagation", |run| {
        let input = run.inputs.first().ok_or("no input series")?;
        let up = pi::read_series(input)?;
        let timed: Vec<_> = up.timed().collect();
        if timed.is_empty() {
            return Err("the upstream series is empty".into());
        }
        let values: Vec<f64> = timed.iter().map(|e| e.1).collect();
        let events: Vec<_> = timed
            .iter()
            .enumerate()
            .filter(|(_, (t, _))| *t >= run.time0 && *t <= run.end)
            .map(|(i, (t, _))| {
                let lagged = values[i.saturating_sub(2)];
                let smooth = 0.7 * lagged + 0.3 * values[i.saturating_sub(3)];
                let (d, time) = pi::pi_time(*t);
                (d, time, smooth)
            })
            .collect();
        if events.is_empty() {
            return Err(format!(
                "the upstream series ends before time0 {}",
                run.time0
            ));
        }
        let out = pi::Series {
            location: format!("{}-downstream", up.location),
            parameter: "Q.fcst".into(),
            forecast: Some(run.time0),
            events,
        };
        let path = run
            .output_dir
            .join(format!("forecast_{}.xml", out.location));
        pi::write_series(&path, &out, "m3/s").map_err(|e| e.to_string())?;
        Ok(vec![format!(
            "forecast {} steps for {} from time0 {}",
            out.events.len(),
            out.location,
            run.time0
        )])
    });
}
