//! Test support shared by the workspace's tests and benches (not published).
//!
//! - [`captures`]: every capture folder under `shared/captures` beside the workspace
//!   (`<kernel>/<case>/frames.pcap` with its `kmsg.raw`), found by walking the folder, so a
//!   capture added there is checked by every test without a change here;
//!   [`captures_or_skip`] for the tests of the whole set: absent captures skip them with a
//!   note, but fail them under `CI=true`.
//! - [`read_pcap`]: the packets of a classic pcap file with their timestamps.
//! - [`kmsg_records`]: the records of a `kmsg.raw` file (separated by one 0x1e byte).
//! - [`workload_texts`]: the long texts the captures' workload wrote to `/dev/kmsg`, which
//!   Linux 7.3 cut at 2048 bytes once escaped (its console printed them whole).
//! - [`SplitMix64`]: a small seeded generator for losses, shuffles and bulk bytes.
//! - [`heap`]: what a counting global allocator (stats_alloc) says, for the tests that bound
//!   memory and allocations.
//! - [`run_tests`]: the runner of the test binaries declared `harness = false` (those that
//!   read [`heap`]): each test on the main thread, one after another, printed as libtest does.
//!
//! ```
//! let mut rng = testkit::SplitMix64::new(7);
//! let mut items = [1, 2, 3, 4];
//! rng.shuffle(&mut items);
//! items.sort_unstable();
//! assert_eq!(items, [1, 2, 3, 4]);
//! for capture in testkit::captures() {
//!     assert!(capture.pcap().is_file());
//! }
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The `shared/captures` folder beside the workspace, if it is there.
#[must_use]
pub fn shared_captures() -> Option<PathBuf> {
    let dir = shared_captures_path();
    dir.is_dir().then_some(dir)
}

/// Where [`shared_captures`] looks: `shared/captures` beside the workspace.
fn shared_captures_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/captures")
}

/// The capture folders every test knew of when it was written. [`captures`] returns these and
/// any others found; tests assert these are among them, so a moved folder is noticed.
pub const KNOWN: [(&str, &str); 9] = [
    ("linux-6.1", "configfs_userdata"),
    ("linux-6.1", "ext"),
    ("linux-6.1", "ipv6"),
    ("linux-6.1", "plain"),
    ("linux-7.3", "configfs_userdata"),
    ("linux-7.3", "ext"),
    ("linux-7.3", "ext_release"),
    ("linux-7.3", "ipv6"),
    ("linux-7.3", "plain"),
];

/// One capture folder: a boot of one kernel with one netconsole setup.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Capture {
    /// The kernel folder, e.g. `linux-7.3`.
    pub kernel: String,
    /// The setup folder, e.g. `ext_release`.
    pub case: String,
    /// The folder itself.
    pub dir: PathBuf,
}

impl Capture {
    /// `frames.pcap`: every frame the machine sent.
    #[must_use]
    pub fn pcap(&self) -> PathBuf {
        self.dir.join("frames.pcap")
    }

    /// `kmsg.raw`: the kernel's own records, the ground truth.
    #[must_use]
    pub fn kmsg(&self) -> PathBuf {
        self.dir.join("kmsg.raw")
    }

    /// `<kernel>/<case>`, for messages.
    #[must_use]
    pub fn name(&self) -> String {
        format!("{}/{}", self.kernel, self.case)
    }
}

/// Every capture folder under [`shared_captures`] (`<kernel>/<case>` holding a `frames.pcap`),
/// sorted; empty when the folder is not there.
///
/// # Panics
/// If one of the [`KNOWN`] folders is missing from a `shared/captures` that exists: the layout
/// changed under the tests.
#[must_use]
pub fn captures() -> Vec<Capture> {
    let Some(root) = shared_captures() else {
        return Vec::new();
    };
    let found = captures_in(&root);
    for (kernel, case) in KNOWN {
        assert!(
            found.iter().any(|c| c.kernel == kernel && c.case == case),
            "{}: {kernel}/{case} is missing",
            root.display()
        );
    }
    found
}

/// [`captures`] for a test that checks the whole set. When `shared/captures` is not beside the
/// workspace the list is empty and a line on stderr says the checks were skipped, except under
/// `CI=true`, where the captures are expected: there the test fails instead of passing without
/// having checked anything.
///
/// # Panics
/// Under `CI=true` when the folder is absent; and as [`captures`] does.
#[must_use]
#[track_caller]
pub fn captures_or_skip() -> Vec<Capture> {
    if shared_captures().is_none() {
        let expected = shared_captures_path();
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but {} is not there: the checks against the kernel captures cannot run",
            expected.display()
        );
        eprintln!("skipped: {} not found", expected.display());
    }
    captures()
}

/// Every `<kernel>/<case>` folder under `root` that holds a `frames.pcap`, sorted.
#[must_use]
pub fn captures_in(root: &Path) -> Vec<Capture> {
    let mut found = Vec::new();
    for kernel in sorted_dirs(root) {
        for case in sorted_dirs(&kernel) {
            if case.join("frames.pcap").is_file() {
                found.push(Capture {
                    kernel: file_name(&kernel),
                    case: file_name(&case),
                    dir: case,
                });
            }
        }
    }
    found
}

fn sorted_dirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// One packet of a pcap file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The capture's timestamp, from the epoch.
    pub timestamp: Duration,
    /// The frame's bytes as captured.
    pub data: Vec<u8>,
}

/// The packets of a classic pcap file, in order.
///
/// # Panics
/// With the path, on a read error: a test input that cannot be read is a broken test.
#[must_use]
pub fn read_pcap(path: &Path) -> Vec<Packet> {
    let file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = pcap_file::pcap::PcapReader::new(file)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut packets = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let packet = packet.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        packets.push(Packet {
            timestamp: packet.timestamp,
            data: packet.data.into_owned(),
        });
    }
    packets
}

/// The records of a `kmsg.raw` file: split at each 0x1e byte, empty pieces dropped.
///
/// # Panics
/// With the path, when the file cannot be read.
#[must_use]
pub fn kmsg_records(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .split(|&b| b == 0x1e)
        .filter(|record| !record.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// The texts of the captures' workload that Linux 7.3 cut at 2048 bytes (`rig-long-*`), whole,
/// without the syslog `<N>` prefix written with them: `data/manifest.hex` (one hex line per
/// text, taken from the captures' `workload-manifest.json` so that tests run without
/// `../shared`).
///
/// # Panics
/// If `data/manifest.hex` cannot be read or is not hex.
#[must_use]
pub fn workload_texts() -> Vec<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/manifest.hex");
    let lines =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    lines
        .lines()
        .map(|line| {
            let bytes = hex(line);
            match bytes.iter().position(|&b| b == b'>') {
                Some(end) if bytes.first() == Some(&b'<') => bytes[end + 1..].to_vec(),
                _ => bytes,
            }
        })
        .collect()
}

/// Reading a counting global allocator. A test binary declares it (safe code):
///
/// ```
/// use std::alloc::System;
/// use testkit::heap::{INSTRUMENTED_SYSTEM, StatsAlloc};
///
/// #[global_allocator]
/// static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;
///
/// let before = testkit::heap::allocations(GLOBAL);
/// let v = vec![1u8; 100];
/// assert!(testkit::heap::allocations(GLOBAL) > before);
/// # drop(v);
/// ```
///
/// The counters are global to the process: they count every thread's allocations. Running the
/// tests one at a time is not enough under libtest, whose main thread spawns each test on a
/// thread of its own and goes on with its own bookkeeping (allocating) while the test runs, so
/// an allocation it makes can land between a test's two readings (seen once in CI, under
/// load). The binaries that read these counters therefore run without libtest: their
/// `[[test]]` entry says `harness = false` and their `main` hands the tests to
/// [`run_tests`], which runs them on the main thread, the only thread in the process.
pub mod heap {
    use std::alloc::System;

    pub use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

    /// Heap bytes in use now. stats_alloc adds a reallocation's growth to `bytes_allocated`
    /// and its shrinking to `bytes_deallocated` (`bytes_reallocated` is the same change
    /// again, not to be added).
    #[must_use]
    pub fn in_use(alloc: &StatsAlloc<System>) -> i64 {
        let s = alloc.stats();
        i64::try_from(s.bytes_allocated).unwrap_or(i64::MAX)
            - i64::try_from(s.bytes_deallocated).unwrap_or(i64::MAX)
    }

    /// Allocations and reallocations so far.
    #[must_use]
    pub fn allocations(alloc: &StatsAlloc<System>) -> u64 {
        let s = alloc.stats();
        (s.allocations + s.reallocations) as u64
    }
}

/// Runs `tests` (name, function) one after another on the calling thread and prints them as
/// libtest does (`test <name> ... ok`, then a `test result:` line), for a test binary declared
/// `harness = false` whose `main` calls this. Those are the binaries that read the [`heap`]
/// counters: no thread but the caller's exists while a test runs, so nothing else allocates
/// between its readings.
///
/// The command line is what `cargo test --test <binary> -- <arguments>` passes:
///
/// - every argument that is not a flag is a filter: only the tests whose name contains one
///   of them run (all when there is none); with `--exact`, whose name is one of them;
/// - `--skip <text>` leaves out the tests whose name contains `text`;
/// - `--list` prints the names (`<name>: test`) and runs nothing; `--ignored` runs nothing
///   (none of these tests is ignored);
/// - every other flag (`--nocapture`, `-q`, `--test-threads 1`, ...) is accepted and ignored:
///   output is never captured and the tests always run one at a time. The value of a libtest
///   flag that takes one as the next argument (`--test-threads`, `--color`, `--format`,
///   `--logfile`, `--shuffle-seed`, `-Z`) is not taken for a filter.
///
/// A test fails by panicking. Its panic is caught (the panic hook has printed the message),
/// the test is reported `FAILED`, the tests after it still run, and then the process exits
/// with status 101, as libtest's does; when every test passed, this returns.
///
/// ```no_run
/// fn main() {
///     testkit::run_tests(&[("sums", sums), ("sorts", sorts)]);
/// }
///
/// fn sums() {
///     assert_eq!((1..=4).sum::<u32>(), 10);
/// }
///
/// fn sorts() {
///     let mut v = vec![3, 1, 2];
///     v.sort_unstable();
///     assert_eq!(v, [1, 2, 3]);
/// }
/// ```
pub fn run_tests(tests: &[(&str, fn())]) {
    let args = Args::parse(std::env::args().skip(1));
    let chosen: Vec<&(&str, fn())> = tests
        .iter()
        .filter(|(name, _)| !args.ignored && args.selects(name))
        .collect();
    if args.list {
        for (name, _) in &chosen {
            println!("{name}: test");
        }
        return;
    }

    let start = std::time::Instant::now();
    println!("\nrunning {} test{}", chosen.len(), plural(chosen.len()));
    let mut failed = Vec::new();
    for (name, test) in &chosen {
        print!("test {name} ... ");
        // The name is on the terminal before the test's own output or its panic message.
        std::io::Write::flush(&mut std::io::stdout()).ok();
        if std::panic::catch_unwind(test).is_ok() {
            println!("ok");
        } else {
            println!("FAILED");
            failed.push(*name);
        }
    }
    if !failed.is_empty() {
        println!("\nfailures:");
        for name in &failed {
            println!("    {name}");
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed; 0 ignored; 0 measured; {} filtered out; finished in {:.2}s\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        chosen.len() - failed.len(),
        failed.len(),
        tests.len() - chosen.len(),
        start.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        std::process::exit(101);
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// What [`run_tests`] reads of its command line.
#[derive(Debug, Default, PartialEq, Eq)]
struct Args {
    filters: Vec<String>,
    skip: Vec<String>,
    exact: bool,
    list: bool,
    ignored: bool,
}

impl Args {
    /// libtest's flags whose value may come as the next argument.
    const TAKE_VALUE: [&'static str; 7] = [
        "--test-threads",
        "--skip",
        "--color",
        "--format",
        "--logfile",
        "--shuffle-seed",
        "-Z",
    ];

    fn parse(args: impl IntoIterator<Item = String>) -> Self {
        let mut parsed = Self::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if !arg.starts_with('-') {
                parsed.filters.push(arg);
                continue;
            }
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) => (flag, Some(value.to_owned())),
                None => (arg.as_str(), None),
            };
            let value = if Self::TAKE_VALUE.contains(&flag) && inline.is_none() {
                args.next()
            } else {
                inline
            };
            match flag {
                "--skip" => parsed.skip.extend(value),
                "--exact" => parsed.exact = true,
                "--list" => parsed.list = true,
                "--ignored" => parsed.ignored = true,
                _ => {}
            }
        }
        parsed
    }

    fn selects(&self, name: &str) -> bool {
        let matches = |filter: &String| {
            if self.exact {
                name == filter
            } else {
                name.contains(filter.as_str())
            }
        };
        (self.filters.is_empty() || self.filters.iter().any(matches))
            && !self.skip.iter().any(|skip| name.contains(skip.as_str()))
    }
}

/// Bytes from hex digits, two per byte (frames and texts kept in tests as hex).
///
/// # Panics
/// On a character that is not a hex digit or an odd count.
#[must_use]
pub fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digits"))
        .collect()
}

/// SplitMix64 (Steele, Lea and Flood, 2014): a seeded generator, the same sequence for the same
/// seed on every machine, for the losses, shuffles and bytes of tests and benches.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n` > 0; the small modulo bias does not matter to tests).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// An index below `n` (`n` > 0).
    pub fn index(&mut self, n: usize) -> usize {
        usize::try_from(self.below(n as u64)).unwrap_or(0)
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Fisher-Yates shuffle of `items`.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.index(i + 1));
        }
    }

    /// Fills `out` with generated bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_values() {
        // The first outputs for seed 0 from the reference implementation (Vigna's splitmix64.c).
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(rng.next_u64(), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn workload_texts_are_the_manifest_without_prefixes() {
        let texts = workload_texts();
        assert_eq!(texts.len(), 3);
        assert!(
            texts
                .iter()
                .all(|t| t.starts_with(b"rig-long-") && t.len() > 800)
        );
    }

    #[test]
    fn shuffle_is_a_permutation_and_seeded() {
        let mut a: Vec<u32> = (0..100).collect();
        let mut b = a.clone();
        SplitMix64::new(3).shuffle(&mut a);
        SplitMix64::new(3).shuffle(&mut b);
        assert_eq!(a, b);
        assert_ne!(a, (0..100).collect::<Vec<_>>());
        a.sort_unstable();
        assert_eq!(a, (0..100).collect::<Vec<_>>());
    }

    fn args(line: &str) -> Args {
        Args::parse(line.split_whitespace().map(String::from))
    }

    #[test]
    fn run_tests_reads_cargo_test_command_lines() {
        let names = ["parsers_take_bytes", "sender_floods", "empty_datagrams"];
        let chosen = |line: &str| -> Vec<&str> {
            let args = args(line);
            names.into_iter().filter(|n| args.selects(n)).collect()
        };
        assert_eq!(chosen(""), names);
        assert_eq!(chosen("--nocapture -q"), names);
        assert_eq!(chosen("flood"), ["sender_floods"]);
        assert_eq!(chosen("--nocapture flood -q"), ["sender_floods"]);
        // The value of --test-threads is no filter; the filter after it is.
        assert_eq!(chosen("--test-threads 1 empty"), ["empty_datagrams"]);
        assert_eq!(chosen("--test-threads=1"), names);
        assert_eq!(chosen("--color never"), names);
        assert_eq!(chosen("flood empty"), ["sender_floods", "empty_datagrams"]);
        assert_eq!(chosen("--exact flood"), Vec::<&str>::new());
        assert_eq!(chosen("--exact sender_floods"), ["sender_floods"]);
        assert_eq!(
            chosen("--skip flood"),
            ["parsers_take_bytes", "empty_datagrams"]
        );
        assert_eq!(chosen("s --skip=empty --skip pars"), ["sender_floods"]);
        assert_eq!(chosen("nothing_like_it"), Vec::<&str>::new());
        let listing = args("--list --format terse");
        assert!(listing.list && !listing.ignored && listing.filters.is_empty());
        assert!(args("--ignored").ignored);
    }

    #[test]
    fn captures_found_in_a_made_up_tree() {
        let root = std::env::temp_dir().join(format!("testkit-{}", std::process::id()));
        for (kernel, case) in [("linux-9.9", "b"), ("linux-9.9", "a"), ("linux-1.0", "x")] {
            let dir = root.join(kernel).join(case);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("frames.pcap"), b"").unwrap();
        }
        std::fs::create_dir_all(root.join("linux-9.9/no-pcap")).unwrap();
        let names: Vec<String> = captures_in(&root).iter().map(Capture::name).collect();
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(names, ["linux-1.0/x", "linux-9.9/a", "linux-9.9/b"]);
    }
}
