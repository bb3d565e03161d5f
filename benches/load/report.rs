//! The tables: medians over the runs of each scenario and placement, the HSM bound beside them,
//! the open loop at 80% and the overload run; once as text, once as markdown for the README.

use crate::common::{Machine, median, range};
use crate::scenarios::{OverloadReport, Sample};
use crate::{Bench, Def, Placement};

#[derive(Debug)]
pub struct Row {
    pub def: Def,
    pub placement: Placement,
    pub samples: Vec<Sample>,
}

#[derive(Debug)]
pub struct OpenLoopRow {
    pub offered: f64,
    /// Scenario 1's maximum the offered rate is 80% of (measured right before the run).
    pub max: f64,
    pub sample: Sample,
}

fn med(v: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = v.filter(|x| x.is_finite()).collect();
    median(&v).unwrap_or(f64::NAN)
}

fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    let n = x.round() as i64;
    let digits: Vec<char> = n.abs().to_string().chars().rev().collect();
    let groups: Vec<String> = digits
        .chunks(3)
        .map(|c| c.iter().rev().collect())
        .rev()
        .collect();
    let out = groups.join(",");
    if n < 0 { format!("-{out}") } else { out }
}

/// The figures of one row, as strings.
struct Cells {
    rate: String,
    p50: String,
    p99: String,
    max: String,
    cpu: String,
    gen_cpu: String,
    rss: String,
    others: String,
    errors: u64,
    hsm: String,
    sigs: String,
    bound: String,
    ratio: String,
}

fn cells(bench: &Bench, row: &Row) -> Cells {
    let s = &row.samples;
    let rates: Vec<f64> = s.iter().map(|x| x.rate).collect();
    let rate = median(&rates).unwrap_or(f64::NAN);
    let (lo, hi) = range(&rates);
    let rate_s = if s.len() > 1 {
        format!("{} ({}-{})", thousands(rate), thousands(lo), thousands(hi))
    } else {
        thousands(rate)
    };
    let ok = |f: fn(&Sample) -> f64| med(s.iter().filter(|x| x.ok > 0).map(f));
    let srv = ok(|x| x.server_cpu * 1000.0 / x.ok as f64);
    let wrk = ok(|x| x.worker_cpu * 1000.0 / x.ok as f64);
    let generator = ok(Sample::gen_cpu_ms_per_unit);
    let rss_srv = s.iter().map(|x| x.rss_server_kib).max().unwrap_or(0) as f64 / 1024.0;
    let rss_wrk = s.iter().map(|x| x.rss_workers_kib).max().unwrap_or(0) as f64 / 1024.0;
    let workers = s.iter().map(|x| x.workers).max().unwrap_or(0);
    let hsm = bench
        .hsm
        .get(&(row.def.alg, row.placement))
        .and_then(|v| median(v))
        .unwrap_or(f64::NAN);
    let bound = hsm / row.def.sigs;
    Cells {
        rate: rate_s,
        p50: format!("{:.1}", ok(|x| x.pct_ms(0.5))),
        p99: format!("{:.1}", ok(|x| x.pct_ms(0.99))),
        max: format!(
            "{:.0}",
            s.iter().map(Sample::max_ms).fold(f64::NAN, f64::max)
        ),
        cpu: format!("{srv:.2}+{wrk:.2}={:.2}", srv + wrk),
        gen_cpu: format!("{generator:.2}"),
        rss: format!("{rss_srv:.0} / {rss_wrk:.0} ({workers})"),
        others: format!("{:.2}", med(s.iter().map(Sample::other_cores))),
        errors: s.iter().map(Sample::error_count).sum(),
        hsm: thousands(hsm),
        sigs: format!("{}", row.def.sigs),
        bound: thousands(bound),
        ratio: if bound.is_finite() && bound > 0.0 {
            format!("{:.0}%", rate / bound * 100.0)
        } else {
            "n/a".into()
        },
    }
}

/// Prints every table; returns the number of errors (503s of the overload run excluded).
pub fn print(bench: &Bench, machine: &Machine) -> u64 {
    let mut errors = 0u64;
    let mut rows: Vec<&Row> = bench.rows.iter().collect();
    let order = |id: &str| {
        crate::DEFS
            .iter()
            .position(|d| d.id == id)
            .unwrap_or(usize::MAX)
    };
    rows.sort_by_key(|r| (r.placement, order(r.def.id)));
    println!(
        "\n\nToken issuance: medians of {} run(s); CPU = server + its HSM worker processes, per \
         token or flow; gen = the generator's CPU ms per unit; other = cores other processes of \
         the machine used meanwhile; RSS = peak (VmHWM) of the server / its workers summed \
         (their number); bound = raw HSM signatures/s of the same token and key with the \
         server's cores / signatures per unit",
        bench.s.runs
    );
    let header = format!(
        "{:<4} {:<54} {:<6} {:<5} {:>22} {:>6} {:>6} {:>5} {:>17} {:>5} {:>5} {:>12} {:>4} {:>7} {:>4} {:>6} {:>5}",
        "id",
        "scenario",
        "place",
        "alg",
        "units/s (min-max)",
        "p50 ms",
        "p99",
        "max",
        "CPU ms srv+wrk",
        "gen",
        "other",
        "RSS MiB",
        "err",
        "HSM/s",
        "sig",
        "bound",
        "ratio"
    );
    println!("{header}");
    println!("{}", "-".repeat(header.len()));
    for row in &rows {
        let c = cells(bench, row);
        errors += c.errors;
        println!(
            "{:<4} {:<54} {:<6} {:<5} {:>22} {:>6} {:>6} {:>5} {:>17} {:>5} {:>5} {:>12} {:>4} {:>7} {:>4} {:>6} {:>5}",
            row.def.id,
            format!("{} [{}]", row.def.label, row.def.unit),
            row.placement.label(),
            row.def.alg,
            c.rate,
            c.p50,
            c.p99,
            c.max,
            c.cpu,
            c.gen_cpu,
            c.others,
            c.rss,
            c.errors,
            c.hsm,
            c.sigs,
            c.bound,
            c.ratio
        );
    }
    for row in &rows {
        for (i, s) in row.samples.iter().enumerate() {
            for (k, n) in &s.errors {
                println!(
                    "  errors {} {} run {}: {k}: {n}  e.g. {}",
                    row.def.id,
                    row.placement.label(),
                    i + 1,
                    s.examples.get(k).map_or("", String::as_str)
                );
            }
        }
    }
    for (alg, issued) in &bench.issued {
        println!(
            "{alg} instance: access token {}, ID token {}, TLS {}",
            issued.access_token, issued.id_token, issued.tls
        );
    }

    let open = open_loop_summary(bench);
    if let Some(o) = &open {
        println!(
            "\nLatency at 80% of scenario 1's maximum (open loop, shared placement, {} \
             connections; the maximum measured right before each run, median {:.0}/s): offered \
             {:.0}/s, answered {:.0}/s; p50 {:.1} ms, p99 {:.1} ms, p99/p50 {:.1} (target <= 4); \
             errors {}",
            bench.s.open_conns, o.max, o.offered, o.rate, o.p50, o.p99, o.ratio, o.errors
        );
        errors += o.errors;
    }
    if let Some(r) = &bench.overload {
        print_overload(r);
        errors += r.other.values().sum::<u64>();
    }

    // Markdown, for the README.
    println!("\n--- markdown ---\n");
    println!(
        "Machine: {} vCPU (`nproc` {}), {}, {} RAM, SoftHSM2 {}. Medians of {} runs of {:.0} s.\n",
        machine.nproc,
        machine.nproc,
        machine.cpu,
        machine.mem,
        machine.softhsm,
        bench.s.runs,
        bench.s.t.window.as_secs_f64()
    );
    println!(
        "| # | scenario | placement | alg | per second (min–max) | p50 ms | p99 ms | max ms | CPU ms per unit (server + workers) | peak RSS MiB server / workers | errors | HSM bound | ratio | other load (cores) |"
    );
    println!("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        let c = cells(bench, row);
        println!(
            "| {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({} sig/s ÷ {}) | {} | {} |",
            row.def.id,
            row.def.label,
            row.def.unit,
            row.placement.label(),
            row.def.alg,
            c.rate.replace('-', "–"),
            c.p50,
            c.p99,
            c.max,
            c.cpu.replace('+', " + ").replace('=', " = "),
            c.rss,
            c.errors,
            c.bound,
            c.hsm,
            c.sigs,
            c.ratio,
            c.others
        );
    }
    if let Some(o) = &open {
        println!(
            "\nOpen loop at 80% of scenario 1 (shared): {:.0}/s offered, {:.0}/s answered, p50 {:.1} ms, p99 {:.1} ms, p99/p50 = {:.1}, {} errors.",
            o.offered, o.rate, o.p50, o.p99, o.ratio, o.errors
        );
    }
    if let Some(r) = &bench.overload {
        println!(
            "\nOverload (queue_depth {}, {} connections for {:.0} s, then {}): {:.0}% of answers were 503 ({}/{} with Retry-After), 503 p50 {:.1} ms / p99 {:.1} ms / max {:.0} ms, 200 p50 {:.1} ms / p99 {:.1} ms at {:.0}/s; after the drop: {:.0}/s in the first 0.5 s, {:.0}/s after, {} 503s{}; first 200 after {}, back to 80% of the settled rate within {}.",
            r.queue_depth,
            r.burst_conns,
            r.phase_secs,
            r.low_conns,
            share(r) * 100.0,
            r.busy_with_retry_after,
            r.busy,
            r.busy_ms[0],
            r.busy_ms[1],
            r.busy_ms[2],
            r.ok_ms[0],
            r.ok_ms[1],
            r.ok_rate,
            r.low_ok_rate_first,
            r.low_ok_rate_rest,
            r.low_busy,
            r.last_busy_after_drop_ms
                .map(|m| format!(" (the last {m:.0} ms after the drop)"))
                .unwrap_or_default(),
            ms_or_never(r.first_ok_after_drop_ms),
            ms_or_never(r.recovered_after_ms)
        );
    }
    println!("\n--- end of markdown ---");
    println!("\nerrors: {errors}");
    errors
}

struct OpenSummary {
    offered: f64,
    max: f64,
    rate: f64,
    p50: f64,
    p99: f64,
    ratio: f64,
    errors: u64,
}

fn open_loop_summary(bench: &Bench) -> Option<OpenSummary> {
    let o = &bench.open_loop;
    if o.is_empty() {
        return None;
    }
    Some(OpenSummary {
        offered: med(o.iter().map(|r| r.offered)),
        max: med(o.iter().map(|r| r.max)),
        rate: med(o.iter().map(|r| r.sample.rate)),
        p50: med(o.iter().map(|r| r.sample.pct_ms(0.5))),
        p99: med(o.iter().map(|r| r.sample.pct_ms(0.99))),
        ratio: med(o
            .iter()
            .map(|r| r.sample.pct_ms(0.99) / r.sample.pct_ms(0.5))),
        errors: o.iter().map(|r| r.sample.error_count()).sum(),
    })
}

fn ms_or_never(v: Option<f64>) -> String {
    v.map_or_else(|| "never".into(), |m| format!("{m:.0} ms"))
}

fn share(r: &OverloadReport) -> f64 {
    let total = r.ok + r.busy + r.other.values().sum::<u64>();
    if total == 0 {
        return f64::NAN;
    }
    r.busy as f64 / total as f64
}

fn print_overload(r: &OverloadReport) {
    println!(
        "\nOverload (scenario 2's requests, shared placement, hsm.queue_depth = {}): {} \
         connections for {:.1} s, then {} of them for {:.1} s",
        r.queue_depth, r.burst_conns, r.phase_secs, r.low_conns, r.phase_secs
    );
    println!(
        "  burst:  200 {} ({:.0}/s, p50 {:.1} ms, p99 {:.1} ms, max {:.0} ms); 503 {} ({:.0}/s, \
         {:.1}% of answers; p50 {:.1} ms, p99 {:.1} ms, max {:.0} ms); Retry-After on {} of {} \
         503s",
        r.ok,
        r.ok_rate,
        r.ok_ms[0],
        r.ok_ms[1],
        r.ok_ms[2],
        r.busy,
        r.busy_rate,
        share(r) * 100.0,
        r.busy_ms[0],
        r.busy_ms[1],
        r.busy_ms[2],
        r.busy_with_retry_after,
        r.busy
    );
    println!(
        "  after the drop to {}: 200 at {:.0}/s in the first 0.5 s, {:.0}/s after, {:.0}/s in the \
         second half (p50 {:.1} ms, p99 {:.1} ms); {} 503s{}",
        r.low_conns,
        r.low_ok_rate_first,
        r.low_ok_rate_rest,
        r.low_ok_rate_steady,
        r.low_ms[0],
        r.low_ms[1],
        r.low_busy,
        r.last_busy_after_drop_ms
            .map(|m| format!(", the last {m:.0} ms after the drop"))
            .unwrap_or_default()
    );
    println!(
        "  recovery: first 200 to a request sent after the drop at {}; 200s back to >= 80% of \
         the second half's rate within {}",
        ms_or_never(r.first_ok_after_drop_ms),
        ms_or_never(r.recovered_after_ms)
    );
    for (k, n) in &r.other {
        println!(
            "  ERROR {k}: {n}  e.g. {}",
            r.examples.get(k).map_or("", String::as_str)
        );
    }
}
