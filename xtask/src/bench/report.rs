//! The bench's results: one row per measured figure, printed as a table and written as
//! JSON to `target/bench/report.json`.

use std::path::Path;

use serde_json::{Value, json};

/// Whether a figure meets its goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The goal is met.
    Met,
    /// The goal is missed.
    Missed,
    /// A figure without a goal (context, e.g. the fake's own ceiling).
    Info,
    /// Not measured; the row's figure says why.
    Skipped,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "MISSED",
            Verdict::Info => "-",
            Verdict::Skipped => "skipped",
        }
    }

    /// `Met` when `ok`, else `Missed`.
    pub fn of(ok: bool) -> Self {
        if ok { Verdict::Met } else { Verdict::Missed }
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// Which issue item (1-6) the row belongs to.
    pub section: &'static str,
    /// What was measured.
    pub metric: String,
    /// The figure, formatted for people.
    pub figure: String,
    /// The goal, formatted for people ("" when none).
    pub goal: String,
    /// The verdict.
    pub verdict: Verdict,
}

/// Rows plus the raw figures of each section.
#[derive(Debug, Default)]
pub struct Report {
    rows: Vec<Row>,
    sections: serde_json::Map<String, Value>,
    notes: Vec<String>,
}

impl Report {
    /// Adds a row.
    pub fn row(
        &mut self,
        section: &'static str,
        metric: impl Into<String>,
        figure: impl Into<String>,
        goal: impl Into<String>,
        verdict: Verdict,
    ) {
        let row = Row {
            section,
            metric: metric.into(),
            figure: figure.into(),
            goal: goal.into(),
            verdict,
        };
        println!(
            "  => {}: {} (goal {}) {}",
            row.metric,
            row.figure,
            if row.goal.is_empty() { "-" } else { &row.goal },
            row.verdict.word()
        );
        self.rows.push(row);
    }

    /// A skipped row, with the reason as its figure.
    pub fn skip(
        &mut self,
        section: &'static str,
        metric: impl Into<String>,
        reason: impl Into<String>,
    ) {
        self.row(section, metric, reason, "", Verdict::Skipped);
    }

    /// Keeps the raw figures of a section for the JSON report.
    pub fn section(&mut self, name: &str, value: Value) {
        self.sections.insert(name.to_owned(), value);
    }

    /// A free-text note printed under the table (how something was measured, what failed).
    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        println!("  note: {note}");
        self.notes.push(note);
    }

    /// The table, in Markdown so it can be pasted into `docs/PERFORMANCE.md` as is.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| # | metric | figure | goal | verdict |\n| --- | --- | --- | --- | --- |\n",
        );
        for r in &self.rows {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                r.section,
                r.metric,
                r.figure.replace('|', "/"),
                if r.goal.is_empty() { "-" } else { &r.goal },
                r.verdict.word()
            ));
        }
        out
    }

    /// How many goals were missed.
    pub fn missed(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.verdict == Verdict::Missed)
            .count()
    }

    /// Writes `report.json` under `dir`.
    pub fn write_json(
        &self,
        dir: &Path,
        command: &str,
        elapsed_s: f64,
    ) -> std::io::Result<std::path::PathBuf> {
        std::fs::create_dir_all(dir)?;
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "section": r.section,
                    "metric": r.metric,
                    "figure": r.figure,
                    "goal": r.goal,
                    "verdict": r.verdict.word(),
                })
            })
            .collect();
        let report = json!({
            "command": command,
            "machine": machine(),
            "elapsed_seconds": elapsed_s,
            "rows": rows,
            "figures": Value::Object(self.sections.clone()),
            "notes": self.notes,
        });
        let path = dir.join("report.json");
        let text = serde_json::to_string_pretty(&report).map_err(std::io::Error::other)?;
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

/// The CPU model and core count, since ratios are only comparable on one machine.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    json!({ "cpu": model, "cores": cores })
}

/// The median (the mean of the middle two for an even count; NaN for none).
pub fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `median of 5 rounds`, or `one round`.
pub fn median_of(rounds: usize) -> String {
    if rounds == 1 {
        "one round".to_owned()
    } else {
        format!("median of {rounds} rounds")
    }
}

/// `0.81, 0.78, 0.90`: every round's figure, in the order run.
pub fn each(values: impl Iterator<Item = f64>) -> String {
    values
        .map(|v| format!("{v:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_counts_missed_goals_and_escapes_pipes() {
        let mut report = Report::default();
        report.row("1", "sign", "1,600/s | 0.99x", ">= 0.9x", Verdict::Met);
        report.row("3", "rps", "0.5x", ">= 0.8x", Verdict::Missed);
        report.skip("3", "nginx", "not installed");
        assert_eq!(report.missed(), 1);
        let table = report.table();
        assert!(table.contains("1,600/s / 0.99x"), "{table}");
        assert!(
            table.contains("| 3 | rps | 0.5x | >= 0.8x | MISSED |"),
            "{table}"
        );
        assert!(table.contains("skipped"));
    }

    #[test]
    fn json_report_holds_rows_and_figures() {
        let dir = tempfile::tempdir().unwrap();
        let mut report = Report::default();
        report.row("5", "lookups", "30,000/s", ">= 20,000/s", Verdict::Met);
        report.section("store", json!({ "lookups_per_s": 30000.0 }));
        let path = report
            .write_json(dir.path(), "cargo xtask bench", 1.5)
            .unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(v["rows"][0]["verdict"], "met");
        assert_eq!(v["figures"]["store"]["lookups_per_s"], 30000.0);
        assert_eq!(v["command"], "cargo xtask bench");
    }

    #[test]
    fn median_of_odd_even_and_no_rounds() {
        assert_eq!(median([0.9, 0.7, 0.8].into_iter()), 0.8);
        assert_eq!(median([2.0, 1.0, 4.0, 3.0].into_iter()), 2.5);
        assert!(median(std::iter::empty()).is_nan());
        assert_eq!(each([0.814, 2.0].into_iter()), "0.81, 2.00");
    }
}
