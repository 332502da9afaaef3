//! Medians, ratios, and the three outputs: a Markdown table (stdout), the raw numbers as
//! JSON and an SVG chart (both into the results folder).

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::{
    measure::{Kind, Scenario},
    world::{CONTENDERS, Contender},
};

/// What one contender gave for one scenario over all runs.
#[derive(Default)]
pub struct Cell {
    pub runs: Vec<Value>,
    pub errors: Vec<String>,
    /// Set when the contender cannot do what the scenario needs (the probe failed).
    pub unsupported: Option<String>,
}

pub struct ScenarioResult {
    pub scenario: &'static Scenario,
    /// Indexed like `CONTENDERS`.
    pub cells: [Cell; 3],
}

/// (key in the run JSON, unit, higher is better)
struct Metric {
    key: &'static str,
    unit: &'static str,
    higher_better: bool,
}

fn metrics(kind: Kind) -> &'static [Metric] {
    const TPUT: &[Metric] = &[Metric {
        key: "gbps",
        unit: "Gbit/s",
        higher_better: true,
    }];
    const RR: &[Metric] = &[
        Metric {
            key: "p50_us",
            unit: "RTT µs p50",
            higher_better: false,
        },
        Metric {
            key: "p99_us",
            unit: "RTT µs p99",
            higher_better: false,
        },
    ];
    const CRR: &[Metric] = &[Metric {
        key: "rate",
        unit: "conn/s",
        higher_better: true,
    }];
    match kind {
        Kind::Tput => TPUT,
        Kind::RrTcp | Kind::RrUdp => RR,
        Kind::Crr => CRR,
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[expect(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "small counts, index clamped into range"
    )]
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    }
}

impl Cell {
    fn median(&self, key: &str) -> Option<f64> {
        if self.unsupported.is_some() || self.runs.is_empty() {
            return None;
        }
        let vals: Vec<f64> = self.runs.iter().filter_map(|r| r[key].as_f64()).collect();
        Some(median(&vals))
    }

    fn show(&self, key: &str) -> String {
        if self.unsupported.is_some() {
            return "unsupported".into();
        }
        match self.median(key) {
            Some(v) if self.errors.is_empty() => fmt_num(v),
            Some(v) => format!("{} ({} failed)", fmt_num(v), self.errors.len()),
            None => "failed".into(),
        }
    }
}

fn fmt_num(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
        _ => None,
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "–".into(), |r| format!("{r:.2}×"))
}

/// The Markdown table of the data-path scenarios.
pub fn table(results: &[ScenarioResult]) -> String {
    let mut s = String::from(
        "| # | scenario | metric | limit | docker-iptables | netdriver | netdriver ÷ limit | netdriver ÷ docker | docker ÷ limit |\n\
         | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in results {
        for m in metrics(r.scenario.kind) {
            let med = |c: Contender| r.cells[idx(c)].median(m.key);
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.scenario.group,
                r.scenario.label,
                m.unit,
                r.cells[0].show(m.key),
                r.cells[1].show(m.key),
                r.cells[2].show(m.key),
                fmt_ratio(ratio(med(Contender::Netdriver), med(Contender::Limit))),
                fmt_ratio(ratio(med(Contender::Netdriver), med(Contender::Docker))),
                fmt_ratio(ratio(med(Contender::Docker), med(Contender::Limit))),
            );
        }
    }
    s
}

fn idx(c: Contender) -> usize {
    CONTENDERS
        .iter()
        .position(|x| *x == c)
        .expect("a contender")
}

/// Scale ÷ base connection rate per contender, for the pairs of scenarios that exist.
pub fn scale_table(results: &[ScenarioResult], other_ports: u16) -> String {
    let find = |key: &str| results.iter().find(|r| r.scenario.key == key);
    let mut s = format!(
        "| connection rate with {other_ports} other ports ÷ with 1 port | docker-iptables | netdriver |\n| --- | ---: | ---: |\n"
    );
    for (scale, base) in [
        ("scale_ext_crr", "ext_crr"),
        ("scale_lo_crr", "lo_crr"),
        ("scale_hostip_crr", "hostip_crr"),
    ] {
        let (Some(a), Some(b)) = (find(scale), find(base)) else {
            continue;
        };
        let r = |c: Contender| {
            let i = idx(c);
            fmt_ratio(ratio(a.cells[i].median("rate"), b.cells[i].median("rate")))
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            b.scenario.label,
            r(Contender::Docker),
            r(Contender::Netdriver)
        );
    }
    s
}

pub fn to_json(results: &[ScenarioResult]) -> Value {
    let rows: Vec<Value> = results
        .iter()
        .map(|r| {
            let mut by = json!({});
            for (i, c) in CONTENDERS.iter().enumerate() {
                let cell = &r.cells[i];
                let med: serde_json::Map<String, Value> = metrics(r.scenario.kind)
                    .iter()
                    .filter_map(|m| Some((m.key.to_string(), json!(cell.median(m.key)?))))
                    .collect();
                by[c.name()] = json!({
                    "unsupported": cell.unsupported,
                    "errors": cell.errors,
                    "median": med,
                    "runs": cell.runs,
                });
            }
            json!({
                "group": r.scenario.group,
                "key": r.scenario.key,
                "label": r.scenario.label,
                "kind": format!("{:?}", r.scenario.kind),
                "contenders": by,
            })
        })
        .collect();
    Value::Array(rows)
}

/// A horizontal bar chart: per scenario and metric, docker-iptables and netdriver relative
/// to the bare veth pair (1.0), oriented so that longer is better for every metric.
pub fn svg(results: &[ScenarioResult], title: &str) -> String {
    const ROW: f64 = 34.0;
    const LEFT: f64 = 420.0;
    const SCALE: f64 = 300.0; // pixels for 1.0
    let rows: Vec<(String, [Option<f64>; 2])> = results
        .iter()
        .flat_map(|r| {
            metrics(r.scenario.kind).iter().map(move |m| {
                let lim = r.cells[0].median(m.key);
                let rel = |i: usize| {
                    let v = r.cells[i].median(m.key);
                    if m.higher_better {
                        ratio(v, lim)
                    } else {
                        ratio(lim, v)
                    }
                };
                (
                    format!("{}. {} ({})", r.scenario.group, r.scenario.label, m.unit),
                    [rel(1), rel(2)],
                )
            })
        })
        .collect();
    #[expect(clippy::cast_precision_loss, reason = "a few dozen rows")]
    let height = 70.0 + ROW * rows.len() as f64 + 30.0;
    let width = LEFT + SCALE * 1.5 + 80.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">{}</text>\n\
         <text x=\"10\" y=\"38\">Relative to a bare veth pair (1.0 = limit; latency as limit ÷ value, so longer is better everywhere).</text>\n\
         <rect x=\"10\" y=\"46\" width=\"10\" height=\"10\" fill=\"#d9822b\"/><text x=\"24\" y=\"55\">docker-iptables</text>\n\
         <rect x=\"130\" y=\"46\" width=\"10\" height=\"10\" fill=\"#2b7bd9\"/><text x=\"144\" y=\"55\">netdriver</text>\n",
        xml(title)
    );
    let top = 70.0;
    for (i, (label, vals)) in rows.iter().enumerate() {
        #[expect(clippy::cast_precision_loss, reason = "a few dozen rows")]
        let y = top + ROW * i as f64;
        let _ = writeln!(s, "<text x=\"10\" y=\"{}\">{}</text>", y + 18.0, xml(label));
        for (j, (v, color)) in vals.iter().zip(["#d9822b", "#2b7bd9"]).enumerate() {
            #[expect(clippy::cast_precision_loss, reason = "0 or 1")]
            let by = y + 4.0 + 13.0 * j as f64;
            match v {
                Some(v) => {
                    let w = (v.min(1.5) * SCALE).max(1.0);
                    let _ = writeln!(
                        s,
                        "<rect x=\"{LEFT}\" y=\"{by}\" width=\"{w:.1}\" height=\"11\" fill=\"{color}\"/>\
                         <text x=\"{:.1}\" y=\"{:.1}\">{v:.2}</text>",
                        LEFT + w + 4.0,
                        by + 9.5
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        "<text x=\"{LEFT}\" y=\"{:.1}\" fill=\"{color}\">unsupported / no value</text>",
                        by + 9.5
                    );
                }
            }
        }
    }
    let x1 = LEFT + SCALE;
    let _ = writeln!(
        s,
        "<line x1=\"{x1}\" y1=\"{top}\" x2=\"{x1}\" y2=\"{}\" stroke=\"black\" stroke-dasharray=\"4 3\"/>\
         <text x=\"{}\" y=\"{}\">1.0 = bare veth</text>\n</svg>",
        height - 25.0,
        x1 - 30.0,
        height - 10.0
    );
    s
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_percentiles() {
        assert!((median(&[3.0, 1.0, 2.0]) - 2.0).abs() < 1e-9);
        assert!((median(&[4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < 1e-9);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!((percentile(&v, 0.5) - 50.0).abs() < 1e-9);
        assert!((percentile(&v, 0.99) - 99.0).abs() < 1e-9);
    }
}
