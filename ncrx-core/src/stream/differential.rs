//! The differential test of the in-order fast path: the same inputs, with the fast path
//! on and off, give the same events, deadlines, responses and counts.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use netpoll_frame::Instant;
use proptest::prelude::*;

use super::Stream;
use crate::StreamConfig;

/// The fast path's switch (on unless `off`) and how many records it took.
#[derive(Debug, Clone, Default)]
pub(super) struct FastPath {
    pub(super) off: bool,
    pub(super) taken: u64,
}

/// A small deterministic generator (xorshift64*), so that one proptest case drives a long
/// scenario.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The datagrams of record `seq` of a sender: one, or fragments of a longer body.
fn record(rng: &mut Rng, seq: u64, ts_usec: u64, release: &str, ncemg: bool) -> Vec<Vec<u8>> {
    let emergency = if ncemg { ",ncemg=1" } else { "" };
    let release = if release.is_empty() {
        String::new()
    } else {
        format!("{release},")
    };
    if rng.chance(8) {
        let total = 20 + rng.below(60) as usize;
        let body: Vec<u8> = (0..total).map(|i| b'a' + (i % 26) as u8).collect();
        let chunk = 7 + rng.below(20) as usize;
        return body
            .chunks(chunk)
            .enumerate()
            .map(|(i, piece)| {
                let mut d = format!(
                    "{release}6,{seq},{ts_usec},-,ncfrag={}/{total}{emergency};",
                    i * chunk
                )
                .into_bytes();
                d.extend_from_slice(piece);
                d
            })
            .collect();
    }
    vec![format!("{release}6,{seq},{ts_usec},-{emergency};record {seq}\n").into_bytes()]
}

/// What both streams are compared on after each step.
fn observe(stream: &mut Stream, events: Vec<String>) -> (Vec<String>, String) {
    let mut buf = [0u8; 1000];
    let mut responses = Vec::new();
    let deadline = stream.poll_timeout();
    let transmit = stream.has_transmit();
    while let Some(len) = stream.poll_transmit(&mut buf) {
        responses.push(String::from_utf8_lossy(&buf[..len]).into_owned());
    }
    (
        events,
        format!(
            "deadline {deadline:?} transmit {transmit} responses {responses:?} window {:?} held {} stats {:?} answering {:?}",
            stream.window(),
            stream.held_bytes(),
            stream.stats(),
            stream.answering()
        ),
    )
}

/// A sender as the streams see it: records in order, lost, delayed, duplicated, sent
/// again, reboots, and the odd datagram that is no record.
struct Sender {
    rng: Rng,
    loss: u64,
    reorder: u64,
    next_seq: u64,
    ts_usec: u64,
    release: &'static str,
    delayed: Vec<Vec<u8>>,
    sent: Vec<(u64, u64)>,
}

/// What one step does besides its datagrams.
enum Also {
    Nothing,
    Tick(Duration),
    Unreachable,
}

impl Sender {
    fn step(&mut self, inputs: &mut Vec<Vec<u8>>) -> Also {
        let rng = &mut self.rng;
        match rng.below(100) {
            0..=69 => {
                let ncemg = rng.chance(2);
                let datagrams = record(rng, self.next_seq, self.ts_usec, self.release, ncemg);
                self.sent.push((self.next_seq, self.ts_usec));
                self.next_seq += 1;
                self.ts_usec += 1 + rng.below(5000);
                for d in datagrams {
                    if rng.chance(self.loss) {
                        continue;
                    }
                    if rng.chance(self.reorder) {
                        self.delayed.push(d);
                    } else {
                        if rng.chance(3) {
                            inputs.push(d.clone());
                        }
                        inputs.push(d);
                    }
                }
            }
            70..=79 if !self.delayed.is_empty() => {
                let at = rng.below(self.delayed.len() as u64) as usize;
                inputs.push(self.delayed.swap_remove(at));
            }
            80..=81 if !self.sent.is_empty() => {
                // A retransmission of an earlier record (as a sender that answers would).
                let (seq, ts) = self.sent[rng.below(self.sent.len() as u64) as usize];
                let ncemg = rng.chance(30);
                inputs.extend(record(rng, seq, ts, self.release, ncemg));
            }
            82 => {
                // A reboot: numbers from near 0, time from near 0, maybe another release.
                self.next_seq = rng.below(5);
                self.ts_usec = 1_000 + rng.below(100_000);
                self.release = ["", "6.1.0", "7.3.0-1"][rng.below(3) as usize];
                self.sent.clear();
            }
            83 => self.next_seq += 1 + rng.below(3000),
            84 => inputs.push(b"a plain line\n".to_vec()),
            85 => {
                let seq = self.next_seq;
                inputs.push(format!("ncrx{seq} {}", seq + 2).into_bytes());
            }
            86 => inputs.push(vec![rng.next() as u8; rng.below(40) as usize]),
            87 if rng.chance(20) => return Also::Unreachable,
            _ => return Also::Tick(Duration::from_millis(rng.below(1500))),
        }
        Also::Nothing
    }
}

/// Runs one scenario of `steps` steps into a stream with the fast path on and one with it
/// off; panics at the first difference. Returns how many records the fast path took (to
/// show the scenario exercised it) and how many events came out.
fn compare(seed: u64, config: &StreamConfig, steps: usize, loss: u64, reorder: u64) -> (u64, u64) {
    let mut rng = Rng(seed | 1);
    let mut fast = Stream::new(config.clone());
    let mut slow = Stream::new(config.clone());
    slow.fast.off = true;
    let mut now = Instant::from_millis(1000);
    let mut sender = Sender {
        next_seq: rng.below(3) * rng.below(100_000),
        ts_usec: 1_000_000 + rng.below(1_000_000_000),
        rng,
        loss,
        reorder,
        release: "",
        delayed: Vec::new(),
        sent: Vec::new(),
    };
    let mut events = 0;
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for step in 0..steps {
        inputs.clear();
        let also = sender.step(&mut inputs);
        now += Duration::from_millis(sender.rng.below(30));
        let mut got_fast = Vec::new();
        let mut got_slow = Vec::new();
        let drained = sender.rng.chance(50);
        for d in &inputs {
            if drained {
                fast.handle_datagram_and_drain(now, d, |e| got_fast.push(format!("{e:?}")));
                slow.handle_datagram_and_drain(now, d, |e| got_slow.push(format!("{e:?}")));
            } else {
                fast.handle_datagram(now, d);
                slow.handle_datagram(now, d);
            }
        }
        match also {
            Also::Tick(by) => {
                now += by;
                fast.handle_timeout(now);
                slow.handle_timeout(now);
            }
            Also::Unreachable => {
                fast.handle_unreachable(now);
                slow.handle_unreachable(now);
            }
            Also::Nothing => {}
        }
        if let Some(at) = fast.poll_timeout().filter(|&at| at <= now) {
            fast.handle_timeout(at);
            slow.handle_timeout(at);
        }
        got_fast.extend(all_events(&mut fast));
        got_slow.extend(all_events(&mut slow));
        events += got_fast.len() as u64;
        let a = observe(&mut fast, got_fast);
        let b = observe(&mut slow, got_slow);
        assert_eq!(a, b, "seed {seed}, step {step}, inputs {inputs:?}");
    }
    fast.flush(now);
    slow.flush(now);
    let events_fast = all_events(&mut fast);
    let events_slow = all_events(&mut slow);
    let a = observe(&mut fast, events_fast);
    let b = observe(&mut slow, events_slow);
    assert_eq!(a, b, "seed {seed}, flush");
    assert_eq!(slow.fast.taken, 0);
    (fast.fast.taken, events)
}

fn all_events(stream: &mut Stream) -> Vec<String> {
    let mut out = Vec::new();
    stream.drain_events(|e| out.push(format!("{e:?}")));
    out
}

fn configs() -> [StreamConfig; 3] {
    [
        StreamConfig::default(),
        StreamConfig::libncrx(),
        StreamConfig::daemon(),
    ]
}

/// A long scenario per configuration, at no loss and at heavy loss (a sender that answers
/// now and then, reboots, fragments, emergencies, plain text and garbage among the
/// records); each took the fast path for many records.
#[test]
fn fast_path_on_and_off_agree_over_long_runs() {
    for config in configs() {
        for (seed, loss, reorder, taken) in [
            (1, 0, 0, 600),
            (2, 1, 2, 600),
            (3, 20, 10, 60),
            (4, 50, 20, 10),
        ] {
            let (fast, events) = compare(seed, &config, 12_000, loss, reorder);
            assert!(fast >= taken, "the fast path took {fast} records");
            assert!(events > 3000, "{events} events");
        }
    }
}

/// Cases the proptest below found: a late `ncemg` record far behind the head, delivered by
/// one stream and counted as stale by the other, when only the fast path gave the larger
/// ring back at the shrink mark.
#[test]
fn fast_path_on_and_off_agree_on_found_cases() {
    compare(66_325_097_758_355_934, &configs()[2], 600, 20, 24);
    compare(37_476_144_037_555_064, &configs()[2], 600, 15, 29);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Many short scenarios, any seed, loss and reordering.
    #[test]
    fn fast_path_on_and_off_agree(
        seed in any::<u64>(),
        config in 0usize..3,
        loss in 0u64..60,
        reorder in 0u64..40,
    ) {
        compare(seed, &configs()[config], 600, loss, reorder);
    }
}
