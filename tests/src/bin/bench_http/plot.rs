//! The plot of a run (`--plot FILE`): an SVG of grouped bars, one group per scenario, one bar per
//! proxy, in two panels: requests per second and p99 latency, each relative to nginx in the same
//! scenario (nginx = 1.00, so scenarios of very different scales share an axis). Each bar is
//! labelled with its ratio. Plain SVG, no dependency: docs/benchmarks.md embeds the file.
use std::fmt::Write as _;

/// The medians of one proxy in one scenario.
#[derive(Clone, Debug)]
pub struct Bar {
    pub target: &'static str,
    pub rps: f64,
    pub p99_ms: f64,
}

/// One scenario's bars; the one named `baseline` is 1.00.
#[derive(Clone, Debug)]
pub struct Group {
    pub scenario: &'static str,
    pub bars: Vec<Bar>,
}

const COLORS: [(&str, &str); 3] = [
    ("xdp-ingress", "#2b6cb0"),
    ("nginx", "#38a169"),
    ("haproxy", "#dd6b20"),
];
const PANEL_W: f64 = 460.0;

/// A scenario and its bars: (target, req/s ratio, p99 ratio).
type Row<'a> = (&'a str, Vec<(&'a str, f64, f64)>);
const PANEL_H: f64 = 260.0;
const MARGIN: f64 = 40.0;

/// The SVG; groups without the baseline are left out.
pub fn svg(title: &str, groups: &[Group], baseline: &str) -> String {
    let rows: Vec<Row<'_>> = groups
        .iter()
        .filter_map(|g| {
            let base = g.bars.iter().find(|b| b.target == baseline)?;
            let bars = COLORS
                .iter()
                .filter_map(|(name, _)| g.bars.iter().find(|b| b.target == *name))
                .map(|b| (b.target, b.rps / base.rps, b.p99_ms / base.p99_ms))
                .collect();
            Some((g.scenario, bars))
        })
        .collect();
    let width = 2.0 * PANEL_W + 3.0 * MARGIN;
    let height = PANEL_H + 3.0 * MARGIN + 20.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{}" y="20" font-size="14" text-anchor="middle">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    let panels = [
        ("requests/s relative to nginx (higher is better)", 0usize),
        ("p99 latency relative to nginx (lower is better)", 1usize),
    ];
    for (i, (label, which)) in panels.into_iter().enumerate() {
        let x0 = MARGIN + i as f64 * (PANEL_W + MARGIN);
        panel(&mut out, x0, MARGIN, label, &rows, which);
    }
    // Legend.
    for (i, (name, color)) in COLORS.iter().enumerate() {
        let x = MARGIN + i as f64 * 120.0;
        let y = height - 18.0;
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="{}" width="12" height="12" fill="{color}"/><text x="{}" y="{y}">{name}</text>"#,
            y - 10.0,
            x + 16.0
        );
    }
    out.push_str("</svg>\n");
    out
}

fn panel(out: &mut String, x0: f64, y0: f64, label: &str, rows: &[Row<'_>], which: usize) {
    let value = |b: &(&str, f64, f64)| if which == 0 { b.1 } else { b.2 };
    let top = rows
        .iter()
        .flat_map(|(_, bars)| bars.iter().map(value))
        .fold(1.0f64, f64::max)
        * 1.15;
    let scale = PANEL_H / top;
    let base_y = y0 + PANEL_H;
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">{label}</text>"#,
        x0 + PANEL_W / 2.0,
        y0 - 6.0
    );
    let _ = writeln!(
        out,
        r##"<line x1="{x0}" y1="{base_y}" x2="{}" y2="{base_y}" stroke="#333"/>"##,
        x0 + PANEL_W
    );
    // The baseline (1.00).
    let one = base_y - scale;
    let _ = writeln!(
        out,
        r##"<line x1="{x0}" y1="{one}" x2="{}" y2="{one}" stroke="#999" stroke-dasharray="4 3"/><text x="{}" y="{}" fill="#666" text-anchor="end">1.00</text>"##,
        x0 + PANEL_W,
        x0 - 2.0,
        one + 4.0
    );
    let group_w = PANEL_W / rows.len().max(1) as f64;
    let bar_w = (group_w - 16.0) / COLORS.len() as f64;
    for (g, (scenario, bars)) in rows.iter().enumerate() {
        let gx = x0 + g as f64 * group_w + 8.0;
        for bar in bars {
            let slot = COLORS
                .iter()
                .position(|(n, _)| *n == bar.0)
                .unwrap_or_default();
            let v = value(bar);
            let h = v * scale;
            let x = gx + slot as f64 * bar_w;
            let _ = writeln!(
                out,
                r#"<rect class="bar" data-target="{}" data-scenario="{scenario}" x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{} {scenario}: {v:.2}</title></rect>"#,
                bar.0,
                base_y - h,
                bar_w - 2.0,
                COLORS[slot].1,
                bar.0
            );
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="9">{v:.2}</text>"#,
                x + bar_w / 2.0 - 1.0,
                base_y - h - 3.0
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{scenario}</text>"#,
            gx + (group_w - 16.0) / 2.0,
            base_y + 14.0
        );
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(scenario: &'static str, xdp: (f64, f64), nginx: (f64, f64)) -> Group {
        Group {
            scenario,
            bars: vec![
                Bar {
                    target: "xdp-ingress",
                    rps: xdp.0,
                    p99_ms: xdp.1,
                },
                Bar {
                    target: "nginx",
                    rps: nginx.0,
                    p99_ms: nginx.1,
                },
            ],
        }
    }

    /// (target, scenario, height) of every bar.
    fn bars(svg: &str) -> Vec<(String, String, f64)> {
        svg.lines()
            .filter(|l| l.contains(r#"class="bar""#))
            .map(|l| {
                let attr = |name: &str| {
                    let start = l.find(&format!(r#" {name}=""#)).unwrap() + name.len() + 3;
                    l[start..].split('"').next().unwrap().to_owned()
                };
                (
                    attr("data-target"),
                    attr("data-scenario"),
                    attr("height").parse().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn bars_are_relative_to_the_baseline_per_scenario() {
        let groups = [
            group("h1", (200.0, 2.0), (100.0, 4.0)),
            group("h1-1m", (3.0, 10.0), (3.0, 10.0)),
            // No baseline: left out.
            Group {
                scenario: "lonely",
                bars: vec![Bar {
                    target: "xdp-ingress",
                    rps: 1.0,
                    p99_ms: 1.0,
                }],
            },
        ];
        let out = svg("t <&>", &groups, "nginx");
        assert!(out.contains("t &lt;&amp;&gt;"));
        let b = bars(&out);
        // Two panels x two scenarios x two proxies.
        assert_eq!(b.len(), 8, "{out}");
        assert!(!b.iter().any(|(_, s, _)| s == "lonely"));
        let h = |t: &str, s: &str, nth: usize| {
            b.iter()
                .filter(|(bt, bs, _)| bt == t && bs == s)
                .nth(nth)
                .unwrap()
                .2
        };
        // Throughput panel: xdp at 2.00 is twice nginx's 1.00; h1-1m equal.
        assert!((h("xdp-ingress", "h1", 0) / h("nginx", "h1", 0) - 2.0).abs() < 0.01);
        assert!((h("xdp-ingress", "h1-1m", 0) - h("nginx", "h1-1m", 0)).abs() < 0.01);
        // Latency panel: xdp's p99 is half nginx's.
        assert!((h("xdp-ingress", "h1", 1) / h("nginx", "h1", 1) - 0.5).abs() < 0.01);
        assert!(out.contains(">2.00<") && out.contains(">0.50<"));
    }
}
