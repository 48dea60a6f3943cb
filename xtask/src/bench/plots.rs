//! SVG plots of the same-generator runs (redis-benchmark against our Redis
//! listener and against Redis): throughput per configuration, ours beside
//! Redis, and latency percentiles. Drawn with plotters' SVG backend alone:
//! the text is SVG text, so no font or system library is needed.

use std::path::Path;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use super::report::{RedisRun, Results};

/// One configuration: its label, and a value per series (`None`: not
/// measured).
struct Group {
    label: String,
    values: Vec<Option<f64>>,
}

const OURS: RGBColor = RGBColor(31, 119, 180);
const OURS_LIGHT: RGBColor = RGBColor(158, 202, 225);
const REDIS: RGBColor = RGBColor(214, 39, 40);
const REDIS_LIGHT: RGBColor = RGBColor(252, 174, 145);

/// Each of our runs with Redis's run of the same configuration.
fn pairs(r: &Results) -> Vec<(&RedisRun, &RedisRun)> {
    r.ours_resp
        .iter()
        .filter_map(|mine| {
            r.redis
                .iter()
                .find(|x| {
                    x.test == mine.test
                        && x.connections == mine.connections
                        && x.pipeline == mine.pipeline
                })
                .map(|theirs| (mine, theirs))
        })
        .collect()
}

fn label(run: &RedisRun) -> String {
    format!(
        "{} {}×{}",
        run.test.to_ascii_uppercase(),
        run.connections,
        run.pipeline
    )
}

/// Writes `throughput.svg` and `latency.svg` into `dir` when the run has
/// same-generator rows; returns the file names written.
pub fn write(dir: &Path, r: &Results) -> Result<Vec<&'static str>, String> {
    let pairs = pairs(r);
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let throughput: Vec<Group> = pairs
        .iter()
        .map(|(mine, theirs)| Group {
            label: label(mine),
            values: vec![Some(mine.rps), Some(theirs.rps)],
        })
        .collect();
    grouped_bars(
        &dir.join("throughput.svg"),
        "redis-benchmark: ops/s (log scale; -d 100 -r 100000)",
        &throughput,
        &[
            ("ours (every SET fdatasynced)", OURS),
            ("Redis, appendfsync always", REDIS),
        ],
    )?;
    let latency: Vec<Group> = pairs
        .iter()
        .map(|(mine, theirs)| Group {
            label: label(mine),
            values: vec![mine.p50_ms, mine.p99_ms, theirs.p50_ms, theirs.p99_ms],
        })
        .collect();
    grouped_bars(
        &dir.join("latency.svg"),
        "redis-benchmark: latency in ms (log scale)",
        &latency,
        &[
            ("ours p50", OURS_LIGHT),
            ("ours p99", OURS),
            ("Redis p50", REDIS_LIGHT),
            ("Redis p99", REDIS),
        ],
    )?;
    Ok(vec!["throughput.svg", "latency.svg"])
}

/// A bar per series in each group, on a logarithmic value axis; the
/// group's label under its first bar.
fn grouped_bars(
    path: &Path,
    title: &str,
    groups: &[Group],
    series: &[(&str, RGBColor)],
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
    let values = || {
        groups
            .iter()
            .flat_map(|g| g.values.iter().flatten().copied())
    };
    let max = values().fold(f64::MIN, f64::max);
    let min = values().fold(f64::MAX, f64::min);
    if !(min > 0.0 && max.is_finite()) {
        return Err(err(&"no positive value to plot"));
    }
    // Whole decades around the values.
    let low = 10f64.powf(min.log10().floor());
    let high = 10f64.powf(max.log10().ceil());
    let per_group = series.len() + 1;
    let slots = groups.len() * per_group;
    let root = SVGBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d((0..slots).into_segmented(), (low..high).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(slots)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) if i % per_group == 0 => groups
                .get(i / per_group)
                .map_or_else(String::new, |g| g.label.clone()),
            _ => String::new(),
        })
        .y_label_formatter(&|v| {
            if *v >= 1000.0 {
                format!("{:.0}k", v / 1000.0)
            } else {
                format!("{v}")
            }
        })
        .draw()
        .map_err(|e| err(&e))?;
    for (s, (name, color)) in series.iter().enumerate() {
        let bars = groups.iter().enumerate().filter_map(|(g, group)| {
            let value = group.values.get(s).copied().flatten()?;
            let slot = g * per_group + s;
            Some(Rectangle::new(
                [
                    (SegmentValue::Exact(slot), low),
                    (SegmentValue::Exact(slot + 1), value),
                ],
                color.filled(),
            ))
        });
        let color = *color;
        chart
            .draw_series(bars)
            .map_err(|e| err(&e))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(test: &'static str, connections: u32, rps: f64) -> RedisRun {
        RedisRun {
            test,
            connections,
            pipeline: 16,
            rps,
            p50_ms: Some(0.4),
            p99_ms: Some(2.0),
        }
    }

    #[test]
    fn plots_name_every_configuration_and_series() {
        let dir = std::env::temp_dir().join(format!("xtask-plots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Results {
            ours_resp: vec![run("set", 1, 50_000.0), run("get", 64, 400_000.0)],
            redis: vec![run("set", 1, 38_000.0), run("get", 64, 590_000.0)],
            ..Results::default()
        };
        let written = write(&dir, &r).unwrap();
        assert_eq!(written, ["throughput.svg", "latency.svg"]);
        let svg = std::fs::read_to_string(dir.join("throughput.svg")).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        for text in [
            "SET 1×16",
            "GET 64×16",
            "Redis, appendfsync always",
            "ours (every SET",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
        let svg = std::fs::read_to_string(dir.join("latency.svg")).unwrap();
        assert!(svg.contains("Redis p99") && svg.contains("ours p50"));
        // Without Redis rows there is nothing to compare: no plot.
        r.redis.clear();
        assert!(write(&dir, &r).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
