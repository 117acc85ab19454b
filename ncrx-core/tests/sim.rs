//! The deterministic simulator: invariants over many seeded runs, and the delivery figures.
//!
//! `NCRX_SIM_SEEDS=5000 cargo test -p ncrx-core --release --test sim` runs more seeds;
//! `cargo test -p ncrx-core --release --test sim -- --nocapture figures` prints the figures.

use core::time::Duration;

use ncrx_core::sim::{SimConfig, SimReport, run};

fn seeds() -> u64 {
    std::env::var("NCRX_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) { 300 } else { 2000 })
}

/// A varied scenario for one seed.
fn scenario(seed: u64) -> SimConfig {
    let pick = |n: u64, salt: u64| (seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt) % n;
    let mut c = SimConfig::default();
    c.seed = seed;
    c.sources = 1 + pick(3, 1) as u32;
    c.records = 150 + pick(250, 2);
    c.loss_to_receiver = [0.0, 0.1, 0.3, 0.5, 0.7][pick(5, 3) as usize];
    c.loss_to_sender = [0.0, 0.2, 0.5, 0.7][pick(4, 4) as usize];
    c.burst = [0.0, 0.2][pick(2, 5) as usize];
    c.burst_len = 8;
    c.reorder = [0.0, 0.2, 0.5][pick(3, 6) as usize];
    c.duplicate = [0.0, 0.05, 0.2][pick(3, 7) as usize];
    c.fragment_every = [0, 5, 17][pick(3, 8) as usize];
    c.reboot_after = [None, Some(60), Some(5)][pick(3, 9) as usize];
    c.retransmission = pick(5, 10) != 0;
    let stream = &mut c.receiver.stream;
    match pick(3, 11) {
        0 => {
            // A window that is not a power of two has a larger ring.
            stream.slots = [64, 100][pick(2, 13) as usize];
            stream.retransmit_stride = 16;
            stream.message_timeout = Duration::from_millis(300);
        }
        1 => {
            stream.slots = 512;
            stream.message_timeout = Duration::from_secs(2);
            stream.max_held_bytes = 16 * 1024;
        }
        _ => stream.message_timeout = Duration::from_secs(5),
    }
    if pick(4, 12) == 0 {
        c.sender.window = 32;
    }
    c
}

fn check_seeds(seeds: impl Iterator<Item = u64>) -> SimReport {
    let mut totals = SimReport::default();
    for seed in seeds {
        let config = scenario(seed);
        let report = run(&config);
        assert!(
            report.violations.is_empty(),
            "seed {seed}: {:?}\n{config:?}",
            report.violations
        );
        assert_eq!(
            report.delivered + report.late + report.lost + report.incomplete + report.unseen,
            report.sent,
            "seed {seed}"
        );
        if config.loss_to_receiver == 0.0 && config.reorder == 0.0 && config.reboot_after.is_none()
        {
            assert_eq!(report.delivered, report.sent, "seed {seed}: lossless");
        }
        totals.sent += report.sent;
        totals.delivered += report.delivered;
        totals.lost += report.lost;
        totals.late += report.late;
        totals.restarts += report.restarts;
        totals.unseen += report.unseen;
        totals.incomplete += report.incomplete;
    }
    totals
}

fn check_totals(totals: &SimReport) {
    // The scenarios do exercise loss, restarts, late and incomplete records.
    assert!(totals.lost > 0 && totals.restarts > 0 && totals.late > 0);
    assert!(totals.incomplete > 0 && totals.unseen > 0);
    assert!(totals.delivered > totals.sent / 2);
    println!("{totals:?}");
}

#[test]
fn invariants_hold_over_seeded_runs_even() {
    check_totals(&check_seeds((0..seeds()).filter(|s| s % 2 == 0)));
}

#[test]
fn invariants_hold_over_seeded_runs_odd() {
    check_totals(&check_seeds((0..seeds()).filter(|s| s % 2 == 1)));
}

fn headline(loss: f64, records: u64) -> SimReport {
    let mut c = SimConfig::default();
    c.seed = 42;
    c.records = records;
    c.loss_to_receiver = loss;
    c.loss_to_sender = loss;
    c.reorder = 0.2;
    c.duplicate = 0.05;
    c.retransmission = true;
    c.check_memory = false;
    let report = run(&c);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    report
}

#[test]
fn half_the_packets_lost_both_ways_everything_delivered() {
    let records = if cfg!(debug_assertions) {
        20_000
    } else {
        100_000
    };
    let report = headline(0.5, records);
    assert_eq!(report.sent, records);
    assert_eq!(report.delivered, records, "{report:?}");
}

#[test]
fn figures() {
    let records = if cfg!(debug_assertions) {
        5_000
    } else {
        100_000
    };
    for loss in [0.5, 0.7] {
        let started = std::time::Instant::now();
        let report = headline(loss, records);
        println!(
            "loss {loss} both ways, 20% reorder, 5% dup: {} of {} delivered in order ({:.4}%), {} late, {} lost, {} never heard of; {} datagrams, {} responses; {:?} virtual in {:?}",
            report.delivered,
            report.sent,
            report.delivered_ratio() * 100.0,
            report.late,
            report.lost,
            report.unseen,
            report.to_receiver,
            report.to_sender,
            report.virtual_time,
            started.elapsed(),
        );
    }
}

#[test]
fn interleaved_sources_fragments_and_a_reboot() {
    let mut c = SimConfig::default();
    c.seed = 7;
    c.sources = 3;
    c.records = 3000;
    c.loss_to_receiver = 0.3;
    c.loss_to_sender = 0.3;
    c.reorder = 0.2;
    c.duplicate = 0.05;
    c.fragment_every = 10;
    c.reboot_after = Some(1500);
    let report = run(&c);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert!(report.restarts >= 1, "{report:?}");
    assert_eq!(report.sent, 9000);
    assert!(report.delivered >= 8900, "{report:?}");
}

#[test]
#[ignore = "debugging aid"]
fn one_seed() {
    let seed = std::env::var("SEED").unwrap().parse().unwrap();
    let report = run(&scenario(seed));
    println!("{report:?}");
}

#[test]
fn delivery_delay_is_the_link_delay_without_loss_and_grows_with_it() {
    let mut c = SimConfig::default();
    c.seed = 3;
    c.records = 2000;
    let clean = run(&c);
    assert!(clean.violations.is_empty(), "{:?}", clean.violations);
    assert_eq!(clean.delivered, clean.sent);
    // Nothing lost or reordered: every record arrives one link delay after it was sent.
    assert_eq!(clean.delay_p50, c.delay, "{clean:?}");
    assert_eq!(clean.delay_p99, c.delay, "{clean:?}");
    assert_eq!(clean.delay_max, c.delay, "{clean:?}");
    assert_eq!(clean.retransmitted, 0);
    assert_eq!(clean.to_receiver, clean.sent);

    c.loss_to_receiver = 0.2;
    let lossy = run(&c);
    assert!(lossy.violations.is_empty(), "{:?}", lossy.violations);
    assert!(lossy.delay_p50 <= lossy.delay_p99);
    assert!(lossy.delay_p99 <= lossy.delay_max);
    // A record whose datagram was lost comes after at least a retransmission request and
    // the re-sent datagram: two more link delays; 20% loss puts such records in the top 1%.
    assert!(lossy.delay_p99 >= c.delay * 3, "{lossy:?}");
    assert!(lossy.delay_p50 >= c.delay, "{lossy:?}");
    // Every datagram beyond one per record was sent again.
    assert!(lossy.retransmitted > 0);
    assert_eq!(lossy.to_receiver, lossy.sent + lossy.retransmitted);
}

#[test]
fn progress_counts_increase_to_the_total() {
    let mut c = SimConfig::default();
    c.seed = 9;
    c.sources = 3;
    c.records = 1000;
    c.reboot_after = Some(400);
    let mut calls = Vec::new();
    let report = ncrx_core::sim::run_with_progress(&c, 250, |p| calls.push((p.done, p.total)));
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert!(calls.windows(2).all(|w| w[0].0 < w[1].0), "{calls:?}");
    assert!(
        calls
            .iter()
            .all(|&(done, total)| done <= total && total == 3000)
    );
    assert_eq!(calls.last(), Some(&(3000, 3000)));
    // Every 250 records: 250, 500, ..., 3000.
    assert_eq!(calls.len(), 12, "{calls:?}");
    // The callback does not change the simulation.
    let mut plain = run(&c);
    plain.violations.clear();
    let mut with = report;
    with.violations.clear();
    assert_eq!(plain, with);

    // A count that does not divide the total still ends with the total.
    let mut last = None;
    ncrx_core::sim::run_with_progress(&c, 7, |p| last = Some(p.done));
    assert_eq!(last, Some(3000));
}

/// The head of the stream: at 50% loss both ways, 20% reorder and 5% duplication, every
/// record of every seed is delivered in order, the head of the stream (record 0 included,
/// asked for with the ack that acknowledges nothing) as well as the rest.
/// `NCRX_HEAD_SEEDS` and `NCRX_HEAD_RECORDS` run more (`--release`: 1000 seeds of 20,000
/// records, as `ncrx sim --records 20000 --loss 0.5 --reverse-loss 0.5 --reorder 0.2 --dup
/// 0.05 --seed S` for S in 1..=1000).
#[test]
fn every_seed_delivers_every_record_at_half_loss_both_ways() {
    let env = |name: &str, debug: u64, release: u64| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(if cfg!(debug_assertions) {
                debug
            } else {
                release
            })
    };
    let seeds = env("NCRX_HEAD_SEEDS", 300, 1000);
    let records = env("NCRX_HEAD_RECORDS", 600, 20_000);
    for seed in 1..=seeds {
        let mut c = SimConfig::default();
        c.seed = seed;
        c.records = records;
        c.loss_to_receiver = 0.5;
        c.loss_to_sender = 0.5;
        c.reorder = 0.2;
        c.duplicate = 0.05;
        let report = run(&c);
        assert!(
            report.violations.is_empty(),
            "seed {seed}: {:?}",
            report.violations
        );
        assert_eq!(report.sent, records);
        assert_eq!(
            (report.late, report.unseen, report.incomplete),
            (0, 0, 0),
            "seed {seed}: {report:?}"
        );
        assert_eq!(
            (report.delivered, report.lost),
            (records, 0),
            "seed {seed}: {report:?}"
        );
    }
    println!("{seeds} seeds of {records} records: every record delivered in order");
}

/// The figures in the README: 70% loss both ways, 20% reorder, 5% duplication, over many
/// seeds (`NCRX_FIGURE_SEEDS`, default 100, of 20,000 records):
/// `cargo test -p ncrx-core --release --test sim -- --ignored --nocapture seventy`.
#[test]
#[ignore = "figures for the README, run in --release"]
fn seventy_percent_loss_both_ways_over_many_seeds() {
    let seeds: u64 = std::env::var("NCRX_FIGURE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let mut totals = SimReport::default();
    let (mut worst, mut all) = (f64::MAX, 0);
    for seed in 1..=seeds {
        let mut c = SimConfig::default();
        c.seed = seed;
        c.records = 20_000;
        c.loss_to_receiver = 0.7;
        c.loss_to_sender = 0.7;
        c.reorder = 0.2;
        c.duplicate = 0.05;
        c.check_memory = false;
        let report = run(&c);
        assert!(
            report.violations.is_empty(),
            "seed {seed}: {:?}",
            report.violations
        );
        worst = worst.min(report.delivered_ratio());
        all += u64::from(report.delivered == report.sent);
        totals.sent += report.sent;
        totals.delivered += report.delivered;
        totals.late += report.late;
        totals.lost += report.lost;
        totals.unseen += report.unseen;
        totals.incomplete += report.incomplete;
    }
    println!(
        "{seeds} seeds x 20000 records, 70% loss both ways: {} of {} delivered in order ({:.4}%), {} late, {} lost, {} unseen; lowest share {:.4}%; every record in {all} seeds",
        totals.delivered,
        totals.sent,
        totals.delivered_ratio() * 100.0,
        totals.late,
        totals.lost,
        totals.unseen,
        worst * 100.0,
    );
}
