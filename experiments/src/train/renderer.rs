//! Plain line-based progress for logs and CI (burn-train's TUI is used only on a TTY with
//! `--tui`): one line every `every` optimizer steps and one per validation, and the same numbers
//! appended to `metrics.csv`. A train line reports the mean loss over the steps since the last
//! line, a validation line the mean over every validation batch (burn-train's metric entries
//! are per batch), each with its perplexity exp(loss).

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use burn::train::logger::{EvaluationProgressLogger, TrainingProgressLogger};
use burn::train::metric::{MetricDefinition, MetricId, NumericEntry};
use burn::train::renderer::{
    EvaluationName, MetricState, MetricsRenderer, MetricsRendererEvaluation, MetricsRendererTraining,
};
use pezoo_models::StepPlan;

pub struct LineRenderer {
    names: HashMap<MetricId, String>,
    latest: HashMap<String, f64>,
    csv: PathBuf,
    /// Items (sequences) per optimizer step, and tokens per item.
    items_per_step: usize,
    tokens_per_item: usize,
    every: usize,
    plan: StepPlan,
    /// The step the run (re)started at, and the one the current training epoch started at.
    first_step: usize,
    epoch_from: Option<usize>,
    /// Items reported per step (one per device), and how many of the current step arrived.
    events_per_step: usize,
    events: (usize, usize),
    split: String,
    split_items: usize,
    train_step: usize,
    last_print: (Instant, usize),
    tokens_per_s: f64,
    /// Σ loss·count and Σ count since the last line (per split).
    loss_sum: f64,
    loss_count: f64,
}

impl LineRenderer {
    pub fn new(
        csv: PathBuf,
        items_per_step: usize,
        tokens_per_item: usize,
        every: usize,
        plan: StepPlan,
        first_step: usize,
        events_per_step: usize,
    ) -> Self {
        if !csv.exists() {
            let _ = std::fs::write(&csv, format!("{}\n", crate::run::METRICS_HEADER));
        }
        let train_step = first_step;
        Self {
            names: HashMap::new(),
            latest: HashMap::new(),
            csv,
            items_per_step,
            tokens_per_item,
            every: every.max(1),
            plan,
            first_step,
            epoch_from: None,
            events_per_step: events_per_step.max(1),
            events: (usize::MAX, 0),
            split: String::new(),
            split_items: 0,
            train_step,
            last_print: (Instant::now(), 0),
            tokens_per_s: 0.0,
            loss_sum: 0.0,
            loss_count: 0.0,
        }
    }

    fn step(&self) -> usize {
        self.train_step
    }

    fn record(&mut self, state: MetricState) {
        if let MetricState::Numeric(entry, Some(value)) = state
            && let Some(name) = self.names.get(&entry.metric_id)
        {
            if name.to_lowercase().contains("loss") {
                let count = match value {
                    NumericEntry::Aggregated { count, .. } => count.max(1) as f64,
                    _ => 1.0,
                };
                self.loss_sum += value.current() * count;
                self.loss_count += count;
            }
            self.latest.insert(name.clone(), value.current());
        }
    }

    fn get(&self, key: &str) -> f64 {
        self.latest.iter().find(|(k, _)| k.to_lowercase().contains(key)).map_or(f64::NAN, |(_, v)| *v)
    }

    fn emit(&mut self, split: &str) {
        let loss = if self.loss_count > 0.0 { self.loss_sum / self.loss_count } else { f64::NAN };
        (self.loss_sum, self.loss_count) = (0.0, 0.0);
        let ppl = loss.exp();
        let step = self.step();
        let (line, lr) = if split == "train" {
            let lr = self.get("learning rate");
            let line = format!(
                "train step {step:>6}/{}  loss {loss:.4}  ppl {ppl:.3}  lr {lr:.2e}  tokens/s {:.0}",
                self.plan.steps, self.tokens_per_s
            );
            (line, format!("{lr}"))
        } else {
            (format!("valid step {step:>6}/{}  loss {loss:.4}  ppl {ppl:.3}", self.plan.steps), String::new())
        };
        println!("{line}");
        let tps = if split == "train" { format!("{:.1}", self.tokens_per_s) } else { String::new() };
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&self.csv) {
            let _ = writeln!(f, "{step},{split},{loss},{ppl},{lr},{tps}");
        }
    }
}

impl MetricsRendererTraining for LineRenderer {
    fn update_train(&mut self, state: MetricState) {
        self.record(state);
    }
    fn update_valid(&mut self, state: MetricState) {
        self.record(state);
    }
    fn on_train_end(
        &mut self,
        _summary: Option<burn::train::LearnerSummary>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        Ok(())
    }
}

impl MetricsRendererEvaluation for LineRenderer {
    fn update_test(&mut self, _name: EvaluationName, state: MetricState) {
        self.record(state);
    }
    fn on_test_end(
        &mut self,
        _summary: Option<burn::train::LearnerSummary>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        Ok(())
    }
}

impl TrainingProgressLogger for LineRenderer {
    fn start(&mut self, _total: usize, _starting_epoch: usize, _items: Option<usize>, _label: Option<&str>) {}
    fn update_epoch(&mut self, _epoch: usize) {}
    fn start_split(&mut self, split: &str, _total_items: usize) {
        self.split = split.to_lowercase();
        if self.split.starts_with("train") {
            // events arrive in order (if late): the run's first epoch starts where it resumed,
            // each next one where the plan ends the previous
            self.epoch_from = Some(self.epoch_from.map_or(self.first_step, |f| self.plan.epoch_end(f)));
        }
        self.split_items = 0;
        self.events = (usize::MAX, 0);
        self.last_print = (Instant::now(), 0);
        (self.loss_sum, self.loss_count) = (0.0, 0.0);
    }
    fn update_split(&mut self, items_processed: usize) {
        self.split_items = items_processed;
        if self.split.starts_with("train") {
            // epochs may start anywhere (a run stopped by a signal resumes mid-interval); lines
            // fall on multiples of `every`, as in an uninterrupted run
            self.train_step = self.epoch_from.unwrap_or(0) + items_processed / self.items_per_step.max(1);
            // with data parallelism each device reports the step (same progress): the line
            // waits for the last, so it holds every device's loss of its steps
            self.events = match self.events {
                (i, k) if i == items_processed => (i, k + 1),
                _ => (items_processed, 1),
            };
            let (t0, i0) = self.last_print;
            if items_processed > i0
                && self.events.1 == self.events_per_step
                && self.train_step.is_multiple_of(self.every)
            {
                let dt = t0.elapsed().as_secs_f64();
                self.tokens_per_s = ((items_processed - i0) * self.tokens_per_item) as f64 / dt.max(1e-9);
                self.last_print = (Instant::now(), items_processed);
                self.emit("train");
            }
        }
    }
    fn end_split(&mut self) {
        if self.split.starts_with("valid") {
            self.emit("valid");
        }
    }
    fn end(&mut self) {}
    fn log_event_training(&mut self, event: String) {
        if event != "Iteration" {
            println!("{event}");
        }
    }
}

impl EvaluationProgressLogger for LineRenderer {
    fn start_global_progress(&mut self, _total_tests: usize) {}
    fn start_test(&mut self, _name: &str, _total_items: usize) {}
    fn update_test_progress(&mut self, _items_processed: usize) {}
    fn end_test(&mut self) {}
    fn end_global_progress(&mut self) {}
    fn log_event_evaluation(&mut self, event: String) {
        println!("{event}");
    }
}

impl MetricsRenderer for LineRenderer {
    fn manual_close(&mut self) {}
    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names.insert(definition.metric_id.clone(), definition.name.to_string());
    }
}
