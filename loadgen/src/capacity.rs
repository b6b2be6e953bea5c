//! Capacity search: the same scenario at growing load (more participants
//! per room, or more rooms) until a stated SLO breaks, and the largest load
//! that held, as participants and as egress packets per second per SFU
//! core (the figure LiveKit's published benchmark gives).
//!
//! A step holds when its run measured something (the window opened, most
//! joins connected), was valid (the load generator kept up: see
//! [`crate::run::health`]) and met every threshold. The search stops at the
//! first step that does not hold, or at the configured maximum. A step that
//! is invalid ends the search with "at least": the machine cannot tell what
//! the SFU would do beyond that load, because the clients ran out first.

use serde::Serialize;

use crate::error::LoadgenError;
use crate::report::meta::Meta;
use crate::report::{self, Outcome, Report};
use crate::run::RunOutcome;
use crate::scenario::Scenario;
use crate::slo::Slo;

/// The SLO a capacity search uses unless `--slo` gives another: one-way
/// latency p99 within 50 ms (a third of ITU-T G.114's 150 ms one-way budget,
/// for the SFU hop alone on loopback), under 1 % loss, and no W3C freeze in
/// the window.
pub const DEFAULT_SLO: &str = "p99_ms=50,loss=0.01,freezes=0";

/// What grows from step to step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Grow {
    /// Participants per room (one room unless `--rooms`).
    Participants,
    /// Rooms of `--participants` each.
    Rooms,
}

/// The search plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// What grows.
    pub grow: Grow,
    /// First value (participants per room, or rooms).
    pub start: usize,
    /// Added each step.
    pub step: usize,
    /// Last value tried at most.
    pub max: usize,
    /// The SLO each step must meet.
    pub slo: String,
}

impl Plan {
    /// The scenario of the step whose grown value is `value`.
    pub fn scenario(&self, base: &Scenario, value: usize) -> Scenario {
        let mut s = base.clone();
        match self.grow {
            Grow::Participants => s.participants = value,
            Grow::Rooms => s.rooms = value,
        }
        s.speakers = s.speakers.min(s.participants);
        s.slo = Some(self.slo.clone());
        s
    }

    /// The grown values in order.
    pub fn values(&self) -> Vec<usize> {
        let mut v = Vec::new();
        let mut x = self.start;
        while x <= self.max && v.len() < 1000 {
            v.push(x);
            x += self.step.max(1);
        }
        v
    }
}

/// Run the steps of `plan` on `base`, one run each (`run_one`), until a
/// step does not hold or the plan ends. `on_step` sees every finished step
/// (its index, grown value, row and full report) as it ends. An error of a
/// run ends the search with the value it failed at.
pub fn search(
    plan: &Plan,
    base: &Scenario,
    slo: &Slo,
    run_one: &mut dyn FnMut(&Scenario) -> Result<RunOutcome, LoadgenError>,
    on_step: &mut dyn FnMut(usize, usize, &Step, &Report),
) -> Result<CapacityReport, (usize, LoadgenError)> {
    let mut steps = Vec::new();
    for (i, v) in plan.values().into_iter().enumerate() {
        let s = plan.scenario(base, v);
        let mut meta = Meta::at_start();
        let outcome = run_one(&s).map_err(|e| (v, e))?;
        meta.finish();
        let mut report = report::build(&s, &outcome, meta);
        report.slo = slo.evaluate(&report);
        report.decide();
        let row = Step::of(&report);
        on_step(i, v, &row, &report);
        let held = row.held();
        steps.push(row);
        if !held {
            break;
        }
    }
    Ok(CapacityReport::new(plan.clone(), steps))
}

/// One step's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Rooms in the step.
    pub rooms: usize,
    /// Participants per room.
    pub participants_per_room: usize,
    /// All participants.
    pub participants: usize,
    /// The step's outcome (`passed` means it held).
    pub outcome: Outcome,
    /// Latency p99, ms.
    pub p99_ms: f64,
    /// Loss ratio in the window.
    pub loss_ratio: f64,
    /// Freezes in the window.
    pub freezes: u64,
    /// Packets the SFU forwarded per second.
    pub egress_pps: f64,
    /// SFU CPU, cores.
    pub sfu_cores: f64,
    /// Egress packets per second per SFU core.
    pub egress_pps_per_core: f64,
    /// Client timer lateness p99, ms (the load generator's health).
    pub client_lateness_p99_ms: f64,
    /// Why it did not hold (SLO violations, validity reasons), if it did not.
    pub why: Vec<String>,
}

impl Step {
    /// The row of a finished step's report.
    pub fn of(r: &Report) -> Self {
        let why = match r.outcome {
            Outcome::Passed => Vec::new(),
            Outcome::SloFailed => r.slo.violations.clone(),
            Outcome::Invalid => r.validity.reasons.clone(),
            Outcome::NotMeasured => {
                let mut v = vec![if r.measured_s <= 0.0 {
                    "the measurement window never opened".to_string()
                } else {
                    "most joins failed".to_string()
                }];
                v.extend(
                    r.join
                        .failures
                        .iter()
                        .take(3)
                        .map(|f| format!("{} x {}", f.count, f.reason)),
                );
                v
            }
        };
        Step {
            rooms: r.rooms,
            participants_per_room: r.participants_per_room,
            participants: r.rooms * r.participants_per_room,
            outcome: r.outcome,
            p99_ms: r.latency_us.p99 as f64 / 1000.0,
            loss_ratio: r.media.loss_ratio,
            freezes: r.media.freezes,
            egress_pps: r.media.egress_pps,
            sfu_cores: r.engine.cpu_cores,
            egress_pps_per_core: r.engine.egress_pps_per_core,
            client_lateness_p99_ms: r.validity.schedule_lateness.p99_ms,
            why,
        }
    }

    /// Whether the step held.
    pub fn held(&self) -> bool {
        self.outcome == Outcome::Passed
    }
}

/// The search's result.
#[derive(Debug, Clone, Serialize)]
pub struct CapacityReport {
    /// The plan.
    pub plan: Plan,
    /// Every step run, in order.
    pub steps: Vec<Step>,
    /// The largest step that held (`null`: not even the first).
    pub capacity: Option<Step>,
    /// Why the search stopped.
    pub stopped: String,
    /// True when the search ended because the load generator, not the SFU,
    /// ran out: the capacity is then a lower bound.
    pub lower_bound: bool,
}

impl CapacityReport {
    /// From the steps run (the last one may have broken the SLO).
    pub fn new(plan: Plan, steps: Vec<Step>) -> Self {
        let capacity = steps.iter().rev().find(|s| s.held()).cloned();
        let last = steps.last();
        let (stopped, lower_bound) = match last {
            None => ("no step ran".to_string(), false),
            Some(s) if s.held() => (
                format!(
                    "every step up to the maximum ({}) held; raise --capacity-max",
                    plan.max
                ),
                true,
            ),
            Some(s) if s.outcome == Outcome::Invalid => (
                format!(
                    "at {} participants the load generator became the bottleneck ({}); {}",
                    s.participants,
                    s.why.first().map_or("", String::as_str),
                    if capacity.is_some() {
                        "the SFU's capacity is at least the last step that held"
                    } else {
                        "this machine cannot measure the SFU at this load (free CPUs, give the load generator more --client-threads, or start smaller)"
                    }
                ),
                true,
            ),
            Some(s) => (
                format!(
                    "at {} participants the SLO broke: {}",
                    s.participants,
                    s.why.join("; ")
                ),
                false,
            ),
        };
        CapacityReport {
            plan,
            steps,
            capacity,
            stopped,
            lower_bound,
        }
    }

    /// The process exit code: 0 when some step held, else the first
    /// step's outcome's (3 SLO broken, 4 not measured, 5 invalid).
    pub fn exit_code(&self) -> u8 {
        match (&self.capacity, self.steps.last()) {
            (Some(_), _) => 0,
            (None, Some(s)) => s.outcome.exit_code().max(1),
            (None, None) => 1,
        }
    }

    /// The terminal table.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nCapacity search: {:?} from {} by {} up to {}, SLO {}",
            self.plan.grow, self.plan.start, self.plan.step, self.plan.max, self.plan.slo
        );
        let _ = writeln!(
            out,
            "  {:>5} {:>5} {:>12} {:>10} {:>10} {:>8} {:>11} {:>14} {:>10}  outcome",
            "rooms",
            "ppl",
            "p99 (ms)",
            "loss (%)",
            "freezes",
            "cores",
            "egress pps",
            "pps per core",
            "late (ms)"
        );
        for s in &self.steps {
            let _ = writeln!(
                out,
                "  {:>5} {:>5} {:>12.2} {:>10.3} {:>10} {:>8.2} {:>11.0} {:>14.0} {:>10.2}  {}",
                s.rooms,
                s.participants,
                s.p99_ms,
                s.loss_ratio * 100.0,
                s.freezes,
                s.sfu_cores,
                s.egress_pps,
                s.egress_pps_per_core,
                s.client_lateness_p99_ms,
                match s.outcome {
                    Outcome::Passed => "held".to_string(),
                    Outcome::SloFailed => "SLO broken".to_string(),
                    Outcome::Invalid => "INVALID (clients were the bottleneck)".to_string(),
                    Outcome::NotMeasured => "NOT MEASURED".to_string(),
                }
            );
        }
        match &self.capacity {
            Some(c) => {
                let _ = writeln!(
                    out,
                    "  capacity    {}{} participants ({} room(s) x {}): {:.0} egress packets/s on {:.2} SFU cores = {:.0} egress packets/s per SFU core",
                    if self.lower_bound { "at least " } else { "" },
                    c.participants,
                    c.rooms,
                    c.participants_per_room,
                    c.egress_pps,
                    c.sfu_cores,
                    c.egress_pps_per_core
                );
            }
            None => {
                let _ = writeln!(out, "  capacity    none: the first step did not hold");
            }
        }
        let _ = writeln!(out, "  stopped     {}", self.stopped);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(p: usize, outcome: Outcome) -> Step {
        Step {
            rooms: 1,
            participants_per_room: p,
            participants: p,
            outcome,
            p99_ms: 1.0,
            loss_ratio: 0.0,
            freezes: 0,
            egress_pps: p as f64 * 690.0,
            sfu_cores: 0.5,
            egress_pps_per_core: p as f64 * 1380.0,
            client_lateness_p99_ms: 0.1,
            why: vec!["p99_ms=50: latency p99 was 80 ms, above the threshold".into()],
        }
    }

    #[test]
    fn plan_values_and_scenarios() {
        let plan = Plan {
            grow: Grow::Participants,
            start: 10,
            step: 10,
            max: 35,
            slo: DEFAULT_SLO.into(),
        };
        assert_eq!(plan.values(), vec![10, 20, 30]);
        crate::slo::Slo::parse(DEFAULT_SLO).expect("the default SLO parses");
        let s = plan.scenario(&Scenario::default(), 20);
        assert_eq!(s.participants, 20);
        assert_eq!(s.slo.as_deref(), Some(DEFAULT_SLO));
    }

    #[test]
    fn capacity_is_the_last_step_that_held() {
        let plan = Plan {
            grow: Grow::Participants,
            start: 10,
            step: 10,
            max: 100,
            slo: DEFAULT_SLO.into(),
        };
        let r = CapacityReport::new(
            plan.clone(),
            vec![
                step(10, Outcome::Passed),
                step(20, Outcome::Passed),
                step(30, Outcome::SloFailed),
            ],
        );
        assert_eq!(r.capacity.as_ref().map(|c| c.participants), Some(20));
        assert!(!r.lower_bound);
        assert!(r.stopped.contains("SLO broke"), "{}", r.stopped);
        let r = CapacityReport::new(
            plan,
            vec![step(10, Outcome::Passed), step(20, Outcome::Invalid)],
        );
        assert_eq!(r.capacity.as_ref().map(|c| c.participants), Some(10));
        assert!(r.lower_bound);
        assert!(r.render().contains("at least 10 participants"));
        assert_eq!(r.exit_code(), 0);
        let none = CapacityReport::new(r.plan.clone(), vec![step(10, Outcome::Invalid)]);
        assert!(none.capacity.is_none());
        assert_eq!(none.exit_code(), 5);
    }
}
