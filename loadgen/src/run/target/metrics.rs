//! Reading the server's `GET /metrics` page (Prometheus text format).

use std::time::Duration;

/// Samples of a Prometheus text page: (name with labels, value).
pub(super) struct Metrics(Vec<(String, f64)>);

impl Metrics {
    pub(super) fn parse(text: &str) -> Metrics {
        Metrics(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let (name, value) = l.rsplit_once(' ')?;
                    Some((name.to_string(), value.parse().ok()?))
                })
                .collect(),
        )
    }

    /// The sum over every series of `name` (any labels); `None` if absent.
    pub(super) fn sum(&self, name: &str) -> Option<f64> {
        let mut found = None;
        for (series, v) in &self.0 {
            let base = series.split('{').next().unwrap_or(series);
            if base == name {
                *found.get_or_insert(0.0) += v;
            }
        }
        found
    }

    /// The server's SFU latency histogram (`piazza_forward_latency_seconds`),
    /// summed over shards; `None` when it does not export one (an older
    /// server) or its buckets are not the engine's.
    pub(super) fn forward_latency(&self) -> Option<piazza::ForwardLatency> {
        const NAME: &str = "piazza_forward_latency_seconds";
        let mut cumulative: Vec<(Option<u64>, u64)> = Vec::new();
        for (series, v) in &self.0 {
            let Some(labels) = series
                .strip_prefix(NAME)
                .and_then(|r| r.strip_prefix("_bucket{"))
            else {
                continue;
            };
            let Some(le) = labels
                .split(',')
                .find_map(|l| l.trim_end_matches('}').strip_prefix("le=\""))
                .map(|l| l.trim_end_matches('"'))
            else {
                continue;
            };
            let le = match le {
                "+Inf" => None,
                secs => Some((secs.parse::<f64>().ok()? * 1e9).round() as u64),
            };
            match cumulative.iter_mut().find(|(b, _)| *b == le) {
                Some((_, c)) => *c += *v as u64,
                None => cumulative.push((le, *v as u64)),
            }
        }
        let sum = self.sum(&format!("{NAME}_sum"))?;
        let count = self.sum(&format!("{NAME}_count"))? as u64;
        piazza::ForwardLatency::from_cumulative(
            &cumulative,
            Duration::from_secs_f64(sum.max(0.0)),
            count,
        )
    }

    /// The sum over the series of `name` whose labels contain `label`.
    pub(super) fn sum_where(&self, name: &str, label: &str) -> f64 {
        self.0
            .iter()
            .filter(|(s, _)| s.starts_with(name) && s[name.len()..].starts_with('{'))
            .filter(|(s, _)| s.contains(label))
            .map(|(_, v)| v)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_sum_over_shards_and_labels() {
        let m = Metrics::parse(
            "# HELP x\n# TYPE x counter\n\
             piazza_shard_cpu_seconds_total{shard=\"0\"} 1.5\n\
             piazza_shard_cpu_seconds_total{shard=\"1\"} 2.25\n\
             piazza_drops_total{shard=\"0\",reason=\"send_error\"} 3\n\
             piazza_drops_total{shard=\"1\",reason=\"send_error\"} 4\n\
             piazza_drops_total{shard=\"1\",reason=\"malformed\"} 100\n\
             piazza_http_joins_total 7\n",
        );
        assert_eq!(m.sum("piazza_shard_cpu_seconds_total"), Some(3.75));
        assert_eq!(m.sum("piazza_http_joins_total"), Some(7.0));
        assert_eq!(m.sum("piazza_rooms"), None);
        assert_eq!(
            m.sum_where("piazza_drops_total", "reason=\"send_error\""),
            7.0
        );
    }

    #[test]
    fn the_forward_latency_histogram_is_summed_over_shards() {
        // As the server writes it: cumulative buckets per shard, in seconds.
        let bounds = piazza::ForwardLatency::bounds_ns();
        let mut text = String::new();
        let mut want = piazza::ForwardLatency::default();
        for (shard, us) in [(0, 95u64), (1, 95), (1, 4_000)] {
            want.record(Duration::from_micros(us));
            let mut h = piazza::ForwardLatency::default();
            h.record(Duration::from_micros(us));
            let mut c = 0;
            for (i, n) in h.buckets().iter().enumerate() {
                c += n;
                let le = bounds
                    .get(i)
                    .map_or("+Inf".to_string(), |b| (*b as f64 / 1e9).to_string());
                text += &format!(
                    "piazza_forward_latency_seconds_bucket{{shard=\"{shard}\",le=\"{le}\"}} {c}\n"
                );
            }
            text += &format!(
                "piazza_forward_latency_seconds_sum{{shard=\"{shard}\"}} {}\n",
                h.sum().as_secs_f64()
            );
            text += &format!("piazza_forward_latency_seconds_count{{shard=\"{shard}\"}} 1\n");
        }
        let got = Metrics::parse(&text).forward_latency().unwrap();
        assert_eq!(got.buckets(), want.buckets());
        assert_eq!(got.count(), 3);
        let diff = got.sum().abs_diff(want.sum());
        assert!(diff < Duration::from_micros(1), "{diff:?}");
        assert!(
            Metrics::parse("piazza_rooms{shard=\"0\"} 1\n")
                .forward_latency()
                .is_none()
        );
    }
}
