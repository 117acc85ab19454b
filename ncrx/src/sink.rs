//! Where the listener's events go: JSON or text lines, to standard output or one file per
//! source, gathered in memory and written a batch at a time.
//!
//! Lines are written straight into reused buffers (no allocation per record): the JSON is the
//! schema of [`crate::json`], byte for byte what `serde_json` writes for it (a test checks
//! that), and the text lines are `ncrx decode`'s.
//!
//! A listener's output (standard output, or the files of `--dir`) is written by a thread of
//! its own ([`Writer`]), so that a write that stalls does not stop the receiving. Standard
//! output stops a listener only when its reader went away (a closed pipe). Any other failure
//! of it, or of a source's file (disk full, no permission, too many open files), counts the
//! lines as not written, is reported at most once a minute, and the listener goes on. A
//! command (`ncrx decode`) writes as it goes, and stops at the first failure of standard
//! output.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime};

use ncrx_core::{Event, IncompleteRecord, Record, RestartReason};
use netconsole_proto::{Body, Flag, received};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::cli::{Format, TimeShown};
use crate::error::Failure;
use crate::names::Names;

/// Bytes of lines gathered for standard output before they are written.
const BATCH: usize = 256 * 1024;
/// Bytes of lines gathered for the files of `--dir` before they are written, one write per
/// file.
const DIR_BATCH: usize = 1 << 20;
/// A listener hands its lines for the files of `--dir` to their thread at most this often
/// (unless [`DIR_BATCH`] are gathered): each hand-over costs one write per sender that sent
/// something, so that a thousand senders cost at most ten thousand writes a second. The
/// first lines after a quiet spell are handed over at once.
const DIR_LINGER: Duration = Duration::from_millis(100);
/// Files a sink keeps open at most with `--dir`; past it the least recently written is
/// closed. A listener gives each thread less when the open-file limit is low
/// ([`SinkOptions::max_open_files`]). With 1,000 senders and 256 (the limit before), every
/// write was an `openat` and a `close` too.
pub(crate) const MAX_OPEN_FILES: usize = 4096;
/// A `--dir` file not written for this long is closed (within a second more), giving back
/// its descriptor. Where inotify cannot watch the directory ([`Files::watch`]), this is also
/// when a file deleted meanwhile gives back its disk space and a file moved meanwhile is
/// opened again at its path; files written more often then need a SIGHUP for that.
const IDLE_CLOSE: Duration = Duration::from_secs(10);
/// How often a writer thread closes idle files when no lines come.
const IDLE_TICK: Duration = Duration::from_secs(1);
/// How often a wait for a writer thread looks whether the stop gave up on it
/// ([`SinkOptions::give_up`]).
const GIVE_UP_TICK: Duration = Duration::from_millis(5);
/// Write errors are reported on stderr at most this often.
const ERROR_REPORT_INTERVAL: Duration = Duration::from_secs(60);

/// What one source sent, for the closing counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) records: u64,
    pub(crate) lost: u64,
    pub(crate) out_of_order: u64,
    pub(crate) incomplete: u64,
    pub(crate) restarts: u64,
    pub(crate) plain: u64,
    pub(crate) malformed: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.records += o.records;
        self.lost += o.lost;
        self.out_of_order += o.out_of_order;
        self.incomplete += o.incomplete;
        self.restarts += o.restarts;
        self.plain += o.plain;
        self.malformed += o.malformed;
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} records, {} lost, {} out of order, {} incomplete, {} restarts, {} plain, {} bad datagrams",
            self.records,
            self.lost,
            self.out_of_order,
            self.incomplete,
            self.restarts,
            self.plain,
            self.malformed
        )
    }
}

/// Files of `--dir`, each written once per batch of lines ([`FileBatch`]). (`W` is a file; a
/// test's stand-in for one.)
struct Files<W = File> {
    dir: PathBuf,
    extension: &'static str,
    /// Open files, by file stem.
    open: HashMap<Arc<str>, OpenFile<W>>,
    /// `open` holds at most this many.
    max_open: usize,
    /// Opens a file for appending ([`open_append`]; a test's stand-in).
    opener: fn(&Path) -> io::Result<W>,
    /// The time of the batch being written.
    now: Instant,
    /// When files idle for [`IDLE_CLOSE`] were last closed.
    reaped: Instant,
    /// The rest of a line whose write failed part way, by file stem: written first next
    /// time (see [`write_lines`]), into the same file only.
    tails: HashMap<Arc<str>, Tail>,
    /// One file's lines of a batch, put together.
    scratch: Vec<u8>,
    /// The directory's device and inode when the last batch was written (`None`: it was not
    /// there): when they change, the open files are in a directory that was removed or
    /// replaced, and are opened again.
    dir_id: Option<(u64, u64)>,
    /// The directory was made again during this batch.
    made_dir: bool,
    /// Files moved or deleted in the directory (logrotate without SIGHUP, a clean-up job,
    /// a hand): a file open then is closed at the next batch, and made again at its path
    /// by the next line. `None` when inotify cannot watch it (its limits reached, no
    /// directory): such a file is then noticed only once idle ([`IDLE_CLOSE`]) or at
    /// SIGHUP.
    watch: Option<Inotify>,
}

/// A watch on `dir` for files moved or deleted in it, or onto its files' names
/// ([`Files::forget_moved`]); `None` when there is no `dir`, or when inotify refuses (its
/// limits reached), which is said on stderr once a process.
fn watch_dir(dir: &Path) -> Option<Inotify> {
    static SAID: AtomicBool = AtomicBool::new(false);
    let events = AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_ONLYDIR;
    let watched = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
        .and_then(|inotify| inotify.add_watch(dir, events).map(|_| inotify));
    match watched {
        Ok(inotify) => Some(inotify),
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => None,
        Err(error) => {
            if !SAID.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "ncrx: cannot watch {} for files moved or deleted ({error}; raise \
                     fs.inotify.max_user_instances or max_user_watches): such a file is \
                     made again at its path only after 10 s without lines, or at SIGHUP",
                    dir.display()
                );
            }
            None
        }
    }
}

/// The device and inode of `dir`, or `None` when it is not there.
fn dir_id(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

/// The longest stem of a `--dir` file, in bytes: with `.jsonl` the name fits the 255 bytes
/// file systems allow.
const MAX_STEM: usize = 240;

/// The stem of a sender's `--dir` file: its name or address, with any `/` (or NUL) of a name
/// from a hosts file made `_`, and a name longer than [`MAX_STEM`] bytes cut there (at a
/// character's start).
fn file_stem(host: &str) -> String {
    let mut stem = host.replace(['/', '\0'], "_");
    if stem.len() > MAX_STEM {
        let mut end = MAX_STEM;
        while !stem.is_char_boundary(end) {
            end -= 1;
        }
        stem.truncate(end);
    }
    stem
}

/// The rest of a line cut by a failed write, and the device and inode of the file it was
/// cut in (`None` when unknown): it may only finish the line in that file, never start a
/// new file that replaced it (rotated, deleted) with half a line.
#[derive(Debug, Default)]
struct Tail {
    bytes: Vec<u8>,
    file: Option<(u64, u64)>,
}

/// A file of `--dir` kept open.
struct OpenFile<W> {
    file: W,
    /// The time of the batch that last wrote it.
    written: Instant,
}

/// Lines gathered for the files of `--dir`: their bytes in the order they came, and whose
/// file each run of them goes to (consecutive lines of one sender make one run).
#[derive(Default)]
struct FileBatch {
    bytes: Vec<u8>,
    /// File stem (the sender's name, or its address), and where its lines are in `bytes`.
    runs: Vec<(Arc<str>, usize, usize)>,
}

impl FileBatch {
    fn push(&mut self, host: &Arc<str>, line: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(line);
        let end = self.bytes.len();
        match self.runs.last_mut() {
            Some((last, _, last_end)) if Arc::ptr_eq(last, host) && *last_end == start => {
                *last_end = end;
            }
            _ => self.runs.push((Arc::clone(host), start, end)),
        }
    }
}

/// What a sink gathers and a writer thread writes.
trait Batch: Send + 'static {
    /// An empty one, with room for [`BATCH`] bytes.
    fn fresh() -> Self;
    /// Its bytes.
    fn bytes(&self) -> usize;
    /// Its lines.
    fn lines(&self) -> u64;
    fn clear(&mut self);
}

impl Batch for Vec<u8> {
    fn fresh() -> Self {
        Vec::with_capacity(BATCH)
    }
    fn bytes(&self) -> usize {
        self.len()
    }
    fn lines(&self) -> u64 {
        newlines(self)
    }
    fn clear(&mut self) {
        Vec::clear(self);
    }
}

impl Batch for FileBatch {
    fn fresh() -> Self {
        FileBatch {
            bytes: Vec::with_capacity(BATCH),
            runs: Vec::new(),
        }
    }
    fn bytes(&self) -> usize {
        self.bytes.len()
    }
    fn lines(&self) -> u64 {
        newlines(&self.bytes)
    }
    fn clear(&mut self) {
        self.bytes.clear();
        self.runs.clear();
    }
}

/// Opens `path` for appending, creating it.
fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Failures to write a file, gathered between two reports.
#[derive(Debug, Default)]
pub(crate) struct WriteErrors {
    /// Lines that could not be written since the listener started.
    pub(crate) lines_lost: u64,
    /// Write errors since the listener started.
    pub(crate) errors: u64,
    since_report: u64,
    last_error: Option<String>,
    last_report: Option<Instant>,
}

/// Where a sink's lines go, and what it gathered for there.
enum Destination {
    /// Standard output: a listener's written by a thread of its own
    /// ([`SinkOptions::keep_going`]); a command's as it goes, and its first failure stops it.
    Stdout(Vec<u8>, Option<Writer<Vec<u8>>>),
    /// The files of `--dir`: a listener's written by a thread of its own; a command's as it
    /// goes.
    Dir(FileBatch, FilesOut),
}

/// Who writes the files of `--dir`.
enum FilesOut {
    Here(Files),
    Thread(Writer<FileBatch>),
}

/// How a [`Sink`] writes.
#[derive(Clone)]
pub(crate) struct SinkOptions {
    pub(crate) format: Format,
    pub(crate) format_limit: Option<usize>,
    /// One file per sender in this directory, instead of standard output.
    pub(crate) dir: Option<PathBuf>,
    /// The times text lines show.
    pub(crate) time: TimeShown,
    /// JSON lines carry `host` and `received` (a listener's lines; a capture's do not).
    pub(crate) stamp: bool,
    /// Senders' names.
    pub(crate) names: Names,
    /// Every line is also forwarded as an RFC 5424 message (`--syslog`).
    pub(crate) syslog: bool,
    /// With `dir`: files kept open at most ([`MAX_OPEN_FILES`], or a thread's share of the
    /// process's open-file limit).
    pub(crate) max_open_files: usize,
    /// A daemon's output (standard output or the files of `dir`), written by a thread of
    /// its own, so that a write that stalls does not stop the receiving: a write to standard
    /// output that fails for any reason but a closed pipe (a full disk, a quota) loses its
    /// lines, counted as for `dir`, and the sink goes on. Otherwise (a command's output) it
    /// is written as it goes, and every failure of standard output is returned.
    pub(crate) keep_going: bool,
    /// Set at stop once a stalled output had its time: a writer thread (`keep_going`) is
    /// no longer waited for, and what it was not able to write is given up and counted
    /// ([`Sink::given_up`]).
    pub(crate) give_up: Arc<AtomicBool>,
}

impl SinkOptions {
    /// A capture's lines (`ncrx decode`): the kernel's time only, no `host` or `received`,
    /// no names, no forwarding.
    pub(crate) fn capture(
        format: Format,
        format_limit: Option<usize>,
        dir: Option<PathBuf>,
    ) -> Self {
        SinkOptions {
            format,
            format_limit,
            dir,
            time: TimeShown::Kernel,
            stamp: false,
            names: Names::default(),
            syslog: false,
            max_open_files: MAX_OPEN_FILES,
            keep_going: false,
            give_up: Arc::default(),
        }
    }
}

/// A sender as its lines show it, formatted once.
#[derive(Debug, Default)]
struct Who {
    /// Its address and port, `IP:PORT`.
    source: Box<str>,
    /// Its name, or its address (without the port) when it has none.
    host: Arc<str>,
    /// `host` as a JSON string, quotes included.
    host_json: Box<[u8]>,
    named: bool,
}

impl Who {
    fn new(source: SocketAddr, name: Option<Arc<str>>) -> Self {
        let named = name.is_some();
        let host = name.unwrap_or_else(|| Arc::from(source.ip().to_canonical().to_string()));
        let mut host_json = Vec::with_capacity(host.len() + 2);
        json_string(&mut host_json, host.as_bytes());
        Who {
            source: source.to_string().into_boxed_str(),
            host,
            host_json: host_json.into_boxed_slice(),
            named,
        }
    }
}

/// A sender as the sink knows it.
struct SourceInfo {
    counts: Counts,
    who: Arc<Who>,
    /// [`Names::generation`] when the name was last looked for.
    generation: u64,
}

/// The event writer of one listener thread.
pub(crate) struct Sink {
    format: Format,
    format_limit: Option<usize>,
    time: TimeShown,
    stamp: bool,
    names: Names,
    /// The receive time of the datagrams being handled, as RFC 3339 UTC with microseconds.
    received: String,
    /// RFC 5424 messages gathered for `--syslog`, and the one being written.
    syslog: Option<crate::syslog::Batch>,
    message: Vec<u8>,
    destination: Destination,
    /// The line being written.
    line: Vec<u8>,
    /// Decoded strings of the current record, and where each one ends in `decoded`.
    decoded: Vec<u8>,
    ends: Vec<usize>,
    scratch: Vec<u8>,
    per_source: HashMap<SocketAddr, SourceInfo, foldhash::fast::RandomState>,
    /// The sender of the event being written.
    who: Arc<Who>,
    /// Counts of sources no longer tracked (evicted).
    gone: Counts,
    /// Evicted sources keep their own counts (at stop, when every source is flushed).
    closing: bool,
    pub(crate) write_errors: WriteErrors,
}

/// Batches of lines a listener may have handed to its writer thread and not yet seen
/// written: 64, and while the thread is behind at most [`QUEUE_BYTES`] of them (each full
/// then: [`BATCH`], [`DIR_BATCH`]). A write that stalls (a disk's journal, a slow reader, a
/// file on a hung network file system) holds up the writer, not the receiving thread, until
/// they are all queued: at 150,000 datagrams/s on ext4 single writes were measured taking
/// up to 32 ms, and a reader that stops for 0.4 s every second made 98,204 of 520,000
/// datagrams dropped by the kernel when the receiving thread wrote itself.
const WRITER_BATCHES: usize = 64;
/// Bytes a listener may have handed to its writer thread and not yet seen written (one batch
/// more may be queued when it is larger).
const QUEUE_BYTES: usize = 16 << 20;

/// Where a writer thread writes the batches it is handed.
trait Output: Send + 'static {
    type Batch: Batch;
    /// Writes `batch` (the sink empties it for the next lines), counting in `errors` what
    /// it could not write.
    fn write(&mut self, batch: &mut Self::Batch, errors: &mut WriteErrors);
    /// Closes what it keeps open (on SIGHUP: logrotate moved the files).
    fn reopen(&mut self);
    /// At the end: counts what it could not finish.
    fn end(&mut self, errors: &mut WriteErrors);
    /// Called every [`IDLE_TICK`] while no batch comes.
    fn tick(&mut self, _now: Instant) {}
    /// Its reader went away (a closed pipe): everything from now on is lost.
    fn broken(&self) -> bool;
}

/// A listener's standard output, as its writer thread writes it.
struct StandardOutput {
    /// A duplicate of descriptor 1, written unbuffered (what a write reports written is in
    /// the file, not kept in `std`'s line buffer to come out later, after lines counted as
    /// lost), or `std`'s `Stdout` when the descriptor cannot be duplicated.
    out: Box<dyn Write + Send>,
    /// The rest of a line cut by a failed write (see [`write_lines`]).
    tail: Vec<u8>,
    broken: bool,
}

impl StandardOutput {
    fn new() -> Self {
        let out: Box<dyn Write + Send> = match io::stdout().as_fd().try_clone_to_owned() {
            Ok(fd) => Box::new(File::from(fd)),
            Err(_) => Box::new(io::stdout()),
        };
        StandardOutput {
            out,
            tail: Vec::new(),
            broken: false,
        }
    }
}

impl Output for StandardOutput {
    type Batch = Vec<u8>;

    fn write(&mut self, batch: &mut Vec<u8>, errors: &mut WriteErrors) {
        if self.broken {
            errors.lines_lost += newlines(batch);
            return;
        }
        // Other threads' lines stay out of this batch.
        let locked = io::stdout().lock();
        let written = write_lines(&mut self.out, batch, &mut self.tail);
        drop(locked);
        if let Err((error, lost)) = written {
            errors.failed_lines(lost, "standard output", &error);
            self.broken = error.kind() == io::ErrorKind::BrokenPipe;
        }
    }

    fn reopen(&mut self) {}

    fn end(&mut self, errors: &mut WriteErrors) {
        errors.lines_lost += newlines(&self.tail);
    }

    fn broken(&self) -> bool {
        self.broken
    }
}

/// A file's device and inode, to tell whether the file at a path is still the one a line was
/// cut in (see [`Tail`]); `None` when unknown.
trait Identity {
    fn identity(&self) -> Option<(u64, u64)>;
}

impl Identity for File {
    fn identity(&self) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        self.metadata().ok().map(|m| (m.dev(), m.ino()))
    }
}

impl<W: Write + Identity + Send + 'static> Output for Files<W> {
    type Batch = FileBatch;

    fn write(&mut self, batch: &mut FileBatch, errors: &mut WriteErrors) {
        self.write_batch(batch, Instant::now(), errors);
    }

    fn reopen(&mut self) {
        self.open.clear();
    }

    fn end(&mut self, errors: &mut WriteErrors) {
        errors.lines_lost += self.unfinished();
        self.tails.clear();
    }

    fn tick(&mut self, now: Instant) {
        self.close_idle(now);
        self.forget_moved();
    }

    fn broken(&self) -> bool {
        false
    }
}

/// What a writer thread is asked to do.
enum Job<B> {
    /// Write a batch of this many bytes.
    Write(B, usize),
    /// [`Output::reopen`].
    Reopen,
}

/// An output written by a thread of its own: full batches go to it, and come back to be
/// emptied and filled again, so nothing is allocated once enough exist.
struct Writer<B> {
    to_write: mpsc::SyncSender<Job<B>>,
    written: mpsc::Receiver<B>,
    /// Batches back from the thread, to be filled again.
    spare: Vec<B>,
    /// Batches made so far (queued, being written or back): at most [`WRITER_BATCHES`].
    buffers: usize,
    state: Arc<WriterState>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// What of `state`'s counts was already added to the sink's [`WriteErrors`].
    seen_lost: u64,
    seen_errors: u64,
    /// A batch is handed over when it holds this many bytes, or once this long after the
    /// last one ([`Writer::flush`]).
    full: usize,
    linger: Duration,
    last_hand_over: Option<Instant>,
    /// What it does, for stderr ("writing standard output").
    what: &'static str,
    /// When a full queue was last said on stderr.
    stall_reported: Option<Instant>,
    /// [`SinkOptions::give_up`].
    give_up: Arc<AtomicBool>,
    /// Bytes of lines given up at stop (the thread was stuck on a stalled output).
    given_up: usize,
}

/// What a writer thread tells its sink.
#[derive(Default)]
struct WriterState {
    /// Bytes handed over and not yet written.
    queued: AtomicUsize,
    lines_lost: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// The output's reader is gone.
    broken: AtomicBool,
}

impl WriterState {
    /// Publishes the thread's counts.
    fn publish(&self, errors: &mut WriteErrors, broken: bool) {
        if errors.since_report > 0 {
            if let Ok(mut last) = self.last_error.lock() {
                last.clone_from(&errors.last_error);
            }
            errors.since_report = 0;
        }
        self.lines_lost.store(errors.lines_lost, Ordering::Release);
        self.errors.store(errors.errors, Ordering::Release);
        if broken {
            self.broken.store(true, Ordering::Release);
        }
    }
}

impl<B: Batch> Writer<B> {
    /// Starts the thread `name` that writes to `output` (`what` it is, for stderr), to be
    /// handed batches of `full` bytes, or at most once per `linger` ([`Writer::flush`]).
    fn start<O: Output<Batch = B>>(
        name: &str,
        what: &'static str,
        mut output: O,
        full: usize,
        linger: Duration,
        give_up: Arc<AtomicBool>,
    ) -> io::Result<Self> {
        let (to_write, jobs) = mpsc::sync_channel::<Job<B>>(WRITER_BATCHES);
        let (give_back, written) = mpsc::sync_channel(WRITER_BATCHES);
        let state = Arc::new(WriterState::default());
        let shared = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut errors = WriteErrors::default();
                loop {
                    let job = match jobs.recv_timeout(IDLE_TICK) {
                        Ok(job) => job,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            output.tick(Instant::now());
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    };
                    match job {
                        Job::Reopen => output.reopen(),
                        Job::Write(mut batch, bytes) => {
                            output.write(&mut batch, &mut errors);
                            shared.publish(&mut errors, output.broken());
                            shared.queued.fetch_sub(bytes, Ordering::AcqRel);
                            if give_back.try_send(batch).is_err() {
                                // The sink is gone (it stops): the batch is not needed.
                            }
                        }
                    }
                }
                output.end(&mut errors);
                shared.publish(&mut errors, output.broken());
            })?;
        Ok(Writer {
            to_write,
            written,
            spare: Vec::new(),
            buffers: 0,
            state,
            thread: Some(thread),
            seen_lost: 0,
            seen_errors: 0,
            full,
            linger,
            last_hand_over: None,
            what,
            stall_reported: None,
            give_up,
            given_up: 0,
        })
    }

    /// The stop gave up on a stalled output ([`SinkOptions::give_up`]).
    fn giving_up(&self) -> bool {
        self.give_up.load(Ordering::Acquire)
    }

    /// Bytes handed over and not yet written.
    fn queued(&self) -> usize {
        self.state.queued.load(Ordering::Acquire)
    }

    /// Hands `batch` over and leaves an empty one in its place, waiting for the thread only
    /// when its queue is full ([`WRITER_BATCHES`], [`QUEUE_BYTES`]).
    fn hand_over(&mut self, batch: &mut B) {
        let bytes = batch.bytes();
        while let Ok(back) = self.written.try_recv() {
            self.spare.push(back);
        }
        loop {
            let queued = self.queued();
            let no_batch = self.spare.is_empty() && self.buffers >= WRITER_BATCHES;
            if !no_batch && (queued == 0 || queued + bytes <= QUEUE_BYTES) {
                break;
            }
            if self.giving_up() {
                // The stop gave the output its time: these lines are given up.
                self.given_up += bytes;
                batch.clear();
                return;
            }
            self.say_stalled(queued);
            match self.written.recv_timeout(GIVE_UP_TICK) {
                Ok(back) => self.spare.push(back),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let mut next = self.spare.pop().unwrap_or_else(|| {
            self.buffers += 1;
            B::fresh()
        });
        // (Emptied here, not by the thread: the senders' names it holds were counted here.)
        next.clear();
        let full = std::mem::replace(batch, next);
        self.state.queued.fetch_add(bytes, Ordering::AcqRel);
        if let Err(mpsc::SendError(Job::Write(full, _))) =
            self.to_write.send(Job::Write(full, bytes))
        {
            // The thread is gone (it cannot be, but then the lines are lost, and counted).
            self.state.queued.fetch_sub(bytes, Ordering::AcqRel);
            self.state
                .lines_lost
                .fetch_add(full.lines(), Ordering::Relaxed);
        }
    }

    /// Says on stderr, at most once a minute, that the queue is full and the receiving waits
    /// for the output.
    fn say_stalled(&mut self, queued: usize) {
        let now = Instant::now();
        if self
            .stall_reported
            .is_some_and(|at| now.duration_since(at) < ERROR_REPORT_INTERVAL)
        {
            return;
        }
        self.stall_reported = Some(now);
        eprintln!(
            "ncrx: {} is not keeping up: {queued} bytes of lines wait to be written, the most \
             a thread queues; receiving waits for it, and the kernel drops what the socket \
             buffer cannot hold meanwhile",
            self.what
        );
    }

    /// Hands `batch` over when it is full, or when the thread is not behind and the last
    /// hand-over is `linger` old: while the thread is behind, lines gather into whole
    /// batches (the queue then holds its full [`QUEUE_BYTES`], not 64 batches of a
    /// millisecond each). Returns a failure when the output's reader is gone.
    fn flush(&mut self, batch: &mut B, errors: &mut WriteErrors) -> Result<(), Failure> {
        let bytes = batch.bytes();
        let now = Instant::now();
        let due = self
            .last_hand_over
            .is_none_or(|last| now.duration_since(last) >= self.linger);
        if bytes > 0 && (bytes >= self.full || (due && self.queued() == 0)) {
            self.hand_over(batch);
            self.last_hand_over = Some(now);
        }
        self.report_into(errors);
        if self.state.broken.load(Ordering::Acquire) {
            return Err(Failure::Stream {
                what: "cannot write to standard output",
                source: io::Error::from_raw_os_error(nix::libc::EPIPE),
            });
        }
        Ok(())
    }

    /// Asks the thread to close what it keeps open, after what it was handed.
    fn reopen(&mut self) {
        if self.to_write.send(Job::Reopen).is_err() {
            // The thread is gone: it keeps nothing open.
        }
    }

    /// Adds what the thread counted since the last call to `errors`.
    fn report_into(&mut self, errors: &mut WriteErrors) {
        let lost = self.state.lines_lost.load(Ordering::Acquire);
        let failed = self.state.errors.load(Ordering::Acquire);
        errors.lines_lost += lost - self.seen_lost;
        if failed > self.seen_errors {
            errors.errors += failed - self.seen_errors;
            errors.since_report += failed - self.seen_errors;
            if let Ok(last) = self.state.last_error.lock() {
                errors.last_error.clone_from(&last);
            }
        }
        self.seen_lost = lost;
        self.seen_errors = failed;
    }

    /// Hands `batch` over and waits until everything handed over is written (or counted
    /// lost), or until the stop gives up on a stalled output (what the thread holds is then
    /// given up, and the thread left to the process's exit); then adds the thread's counts
    /// to `errors`.
    fn finish(&mut self, batch: &mut B, errors: &mut WriteErrors) {
        if batch.bytes() > 0 {
            self.hand_over(batch);
        }
        let (closed, _) = mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.to_write, closed));
        if let Some(thread) = self.thread.take() {
            while !thread.is_finished() {
                if self.giving_up() {
                    self.given_up += self.queued();
                    self.report_into(errors);
                    return;
                }
                std::thread::sleep(GIVE_UP_TICK);
            }
            let _ = thread.join();
        }
        self.report_into(errors);
    }
}

impl Sink {
    /// Lines to standard output, or to one file per source under `dir` (checked to be a
    /// writable directory first).
    pub(crate) fn new(options: &SinkOptions) -> Result<Self, Failure> {
        let format = options.format;
        let destination = if let Some(dir) = &options.dir {
            check_dir(dir)?;
            let extension = match format {
                Format::Json => "jsonl",
                Format::Text => "log",
            };
            let files = Files::new(dir, extension, options.max_open_files, open_append);
            let out = if options.keep_going {
                let writer = Writer::start(
                    "ncrx-files",
                    "writing the --dir files",
                    files,
                    DIR_BATCH,
                    DIR_LINGER,
                    Arc::clone(&options.give_up),
                )
                .map_err(|source| Failure::Stream {
                    what: "cannot start the thread that writes the files",
                    source,
                })?;
                FilesOut::Thread(writer)
            } else {
                FilesOut::Here(files)
            };
            Destination::Dir(FileBatch::fresh(), out)
        } else {
            let writer = if options.keep_going {
                let writer = Writer::start(
                    "ncrx-stdout",
                    "writing standard output",
                    StandardOutput::new(),
                    BATCH,
                    Duration::ZERO,
                    Arc::clone(&options.give_up),
                )
                .map_err(|source| Failure::Stream {
                    what: "cannot start the thread that writes standard output",
                    source,
                })?;
                Some(writer)
            } else {
                None
            };
            Destination::Stdout(Vec::with_capacity(BATCH), writer)
        };
        let mut sink = Sink {
            format,
            format_limit: options.format_limit,
            time: options.time,
            stamp: options.stamp,
            names: options.names.clone(),
            received: String::with_capacity(32),
            syslog: options.syslog.then(crate::syslog::Batch::default),
            message: Vec::with_capacity(1024),
            destination,
            line: Vec::with_capacity(4096),
            decoded: Vec::with_capacity(4096),
            ends: Vec::with_capacity(16),
            scratch: Vec::with_capacity(4096),
            per_source: HashMap::default(),
            who: Arc::default(),
            gone: Counts::default(),
            closing: false,
            write_errors: WriteErrors::default(),
        };
        sink.set_received(SystemTime::now());
        Ok(sink)
    }

    /// Sets the receive time of the datagrams handled next (the events they release carry
    /// it).
    pub(crate) fn set_received(&mut self, at: SystemTime) {
        self.received.clear();
        let at = jiff::Timestamp::try_from(at).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let _ = write!(self.received, "{at:.6}");
    }

    /// Closes every file (the next line opens it again): after logrotate moved them. (A
    /// writer thread does so once it has written what it was handed before.)
    pub(crate) fn reopen(&mut self) {
        match &mut self.destination {
            Destination::Dir(_, FilesOut::Here(files)) => files.reopen(),
            Destination::Dir(_, FilesOut::Thread(writer)) => writer.reopen(),
            Destination::Stdout(..) => {}
        }
    }

    /// The lines gathered for standard output and not yet written.
    #[cfg(test)]
    pub(crate) fn stdout_lines(&self) -> Vec<String> {
        match &self.destination {
            Destination::Stdout(batch, _) => String::from_utf8_lossy(batch)
                .lines()
                .map(str::to_owned)
                .collect(),
            Destination::Dir(..) => Vec::new(),
        }
    }

    /// Bytes gathered and not yet written.
    pub(crate) fn pending(&self) -> usize {
        match &self.destination {
            Destination::Stdout(batch, _) => batch.len(),
            Destination::Dir(batch, _) => batch.bytes.len(),
        }
    }

    /// Drops what could not be written by the stop, counted as not written: for a command's
    /// standard output (it failed) the lines gathered; for a command's files, the rest of
    /// lines cut by a failed write. (A writer thread counts what it could not write itself:
    /// see [`Sink::finish`].)
    pub(crate) fn discard(&mut self) {
        match &mut self.destination {
            Destination::Stdout(batch, _) => {
                self.write_errors.lines_lost += newlines(batch);
                batch.clear();
            }
            Destination::Dir(_, FilesOut::Here(files)) => {
                Output::end(files, &mut self.write_errors);
            }
            Destination::Dir(_, FilesOut::Thread(_)) => {}
        }
    }

    /// Waits until the writer thread (a listener's output) has written everything handed to
    /// it, or counted it lost; then its counts are in [`Sink::write_errors`].
    pub(crate) fn finish(&mut self) {
        let errors = &mut self.write_errors;
        match &mut self.destination {
            Destination::Stdout(batch, Some(writer)) => writer.finish(batch, errors),
            Destination::Dir(batch, FilesOut::Thread(writer)) => writer.finish(batch, errors),
            Destination::Stdout(_, None) | Destination::Dir(_, FilesOut::Here(_)) => {}
        }
    }

    /// Bytes of lines given up at stop because the output was stalled
    /// ([`SinkOptions::give_up`]).
    pub(crate) fn given_up(&self) -> usize {
        match &self.destination {
            Destination::Stdout(_, Some(writer)) => writer.given_up,
            Destination::Dir(_, FilesOut::Thread(writer)) => writer.given_up,
            Destination::Stdout(_, None) | Destination::Dir(_, FilesOut::Here(_)) => 0,
        }
    }

    /// Bytes handed to the writer thread and not yet written, and bytes gathered.
    pub(crate) fn unwritten(&self) -> usize {
        let queued = match &self.destination {
            Destination::Stdout(_, Some(writer)) => writer.queued(),
            Destination::Dir(_, FilesOut::Thread(writer)) => writer.queued(),
            Destination::Stdout(_, None) | Destination::Dir(_, FilesOut::Here(_)) => 0,
        };
        queued + self.pending()
    }

    /// Whether enough is gathered that it should be written now.
    pub(crate) fn full(&self) -> bool {
        match &self.destination {
            Destination::Stdout(batch, _) => batch.len() >= BATCH,
            Destination::Dir(batch, _) => batch.bytes.len() >= DIR_BATCH,
        }
    }

    /// How long the lines gathered may still wait before [`Sink::flush`] hands them over,
    /// when it would not now (a listener waits for its sockets no longer). `None` while the
    /// writer thread is behind: they wait for it, however long.
    pub(crate) fn flush_due(&self) -> Option<Duration> {
        match &self.destination {
            Destination::Dir(batch, FilesOut::Thread(writer))
                if !batch.bytes.is_empty() && writer.queued() == 0 =>
            {
                let last = writer.last_hand_over?;
                Some(writer.linger.saturating_sub(last.elapsed()))
            }
            _ => None,
        }
    }

    /// Writes out everything gathered (a listener's output: hands it to its thread). Only a
    /// failure of standard output is returned (a listener's: only a closed pipe); the lines
    /// it lost and file errors are counted (see [`Sink::report_write_errors`]).
    pub(crate) fn flush(&mut self) -> Result<(), Failure> {
        let errors = &mut self.write_errors;
        match &mut self.destination {
            Destination::Stdout(batch, Some(writer)) => writer.flush(batch, errors),
            Destination::Dir(batch, FilesOut::Thread(writer)) => writer.flush(batch, errors),
            Destination::Stdout(batch, None) => {
                if batch.is_empty() {
                    return Ok(());
                }
                let mut stdout = io::stdout().lock();
                let written = stdout.write_all(batch).and_then(|()| stdout.flush());
                batch.clear();
                written.map_err(|source| Failure::Stream {
                    what: "cannot write to standard output",
                    source,
                })
            }
            Destination::Dir(batch, FilesOut::Here(files)) => {
                files.write_batch(batch, Instant::now(), errors);
                Batch::clear(batch);
                Ok(())
            }
        }
    }

    /// Reports file write errors on stderr, at most once a minute (and at once the first
    /// time), so that a full disk is seen without flooding the log.
    pub(crate) fn report_write_errors(&mut self, now: Instant) {
        let errors = &mut self.write_errors;
        if errors.since_report == 0 {
            return;
        }
        if errors
            .last_report
            .is_some_and(|last| now.duration_since(last) < ERROR_REPORT_INTERVAL)
        {
            return;
        }
        eprintln!(
            "ncrx: {} write errors, {} lines not written so far; last: {}",
            errors.errors,
            errors.lines_lost,
            errors.last_error.as_deref().unwrap_or("?")
        );
        errors.since_report = 0;
        errors.last_report = Some(now);
    }

    /// From now on evicted sources keep their counts: the listener is stopping and flushes
    /// every source, whose counts it reports.
    pub(crate) fn closing(&mut self) {
        self.closing = true;
    }

    /// The counts of every source seen, tracked or gone, summed.
    pub(crate) fn totals(&self) -> Counts {
        let mut total = self.gone;
        for info in self.per_source.values() {
            total += info.counts;
        }
        total
    }

    /// The counts of the sources still tracked.
    pub(crate) fn per_source(&self) -> impl Iterator<Item = (&SocketAddr, &Counts)> {
        self.per_source
            .iter()
            .map(|(source, info)| (source, &info.counts))
    }

    /// The `n` senders with the most records: host, address, counts.
    pub(crate) fn busiest(&self, n: usize) -> Vec<(String, SocketAddr, Counts)> {
        let mut all: Vec<(&SocketAddr, &SourceInfo)> = self.per_source.iter().collect();
        if all.len() > n {
            all.select_nth_unstable_by(n, |a, b| b.1.counts.records.cmp(&a.1.counts.records));
            all.truncate(n);
        }
        all.into_iter()
            .map(|(source, info)| (info.who.host.to_string(), *source, info.counts))
            .collect()
    }

    /// Counts a datagram from `source` that the receiver found malformed.
    pub(crate) fn malformed(&mut self, source: SocketAddr) {
        self.info(source).counts.malformed += 1;
    }

    /// Sets how many datagrams from `source` the receiver found malformed (its stream
    /// counts them; taken before the stream is flushed).
    pub(crate) fn set_malformed(&mut self, source: SocketAddr, malformed: u64) {
        self.info(source).counts.malformed = malformed;
    }

    /// Writes one event of `source`.
    pub(crate) fn event(&mut self, source: SocketAddr, event: &Event<'_>) {
        if let Event::SourceEvicted = event {
            if !self.closing {
                if let Some(info) = self.per_source.remove(&source) {
                    self.gone += info.counts;
                }
            }
            return;
        }
        if !self.count(source, event) {
            return;
        }
        self.line.clear();
        match event {
            Event::Record(record) => self.record(record, false),
            Event::Late(record) => self.record(record, true),
            Event::Incomplete(incomplete) => self.incomplete(incomplete),
            Event::Lost { seqs } => {
                let (first, last) = (seqs.start, seqs.end.saturating_sub(1));
                match self.format {
                    Format::Json => {
                        self.json_start("lost");
                        let _ = write!(
                            Line(&mut self.line),
                            ",\"first_seq\":{first},\"last_seq\":{last}}}"
                        );
                    }
                    Format::Text => {
                        self.text_start();
                        let _ = write!(Line(&mut self.line), " lost #{first}..#{last}");
                    }
                }
            }
            Event::Restart(restart) => {
                let reason = match restart.reason {
                    RestartReason::Release => "release",
                    RestartReason::Timestamp => "timestamp",
                    RestartReason::FarBack => "far_back",
                    RestartReason::OutOfOrder => "out_of_order",
                    _ => "other",
                };
                let seq = restart.seq;
                match self.format {
                    Format::Json => {
                        self.json_start("restart");
                        let _ = write!(
                            Line(&mut self.line),
                            ",\"reason\":\"{reason}\",\"seq\":{seq}}}"
                        );
                    }
                    Format::Text => {
                        self.text_start();
                        let _ = write!(Line(&mut self.line), " restart ({reason}) at #{seq}");
                    }
                }
            }
            Event::Plain(text) => match self.format {
                Format::Json => {
                    self.json_start("plain");
                    self.line.extend_from_slice(b",\"text\":");
                    let escaped = if let Ok(text) = std::str::from_utf8(text) {
                        json_string(&mut self.line, text.as_bytes());
                        false
                    } else {
                        self.scratch.clear();
                        self.scratch
                            .extend_from_slice(&netconsole_proto::escape(text));
                        json_lossy(&mut self.line, &self.scratch);
                        true
                    };
                    let _ = write!(Line(&mut self.line), ",\"escaped\":{escaped}}}");
                }
                Format::Text => {
                    self.text_start();
                    let _ = write!(
                        Line(&mut self.line),
                        " {}",
                        text.strip_suffix(b"\n").unwrap_or(text).escape_ascii()
                    );
                }
            },
            _ => return,
        }
        self.line.push(b'\n');
        self.emit();
        if self.syslog.is_some() {
            self.forward(event);
        }
    }

    /// Counts `event` for `source` and makes `source` the sender of the lines written next,
    /// in one look-up; `false` for an event that writes no line.
    fn count(&mut self, source: SocketAddr, event: &Event<'_>) -> bool {
        // One look-up per event: the counts, and the sender as its lines show it.
        let current = Arc::as_ptr(&self.who);
        let info = self.info(source);
        let counts = &mut info.counts;
        match event {
            Event::Record(_) => counts.records += 1,
            Event::Late(_) => {
                counts.records += 1;
                counts.out_of_order += 1;
            }
            Event::Incomplete(_) => counts.incomplete += 1,
            Event::Lost { seqs } => counts.lost += seqs.end - seqs.start,
            Event::Restart(_) => counts.restarts += 1,
            Event::Plain(_) => counts.plain += 1,
            // Kinds added later say nothing about the log itself.
            _ => return false,
        }
        // The same sender as the last event keeps its `who` (no reference count changed).
        if !std::ptr::eq(Arc::as_ptr(&info.who), current) {
            self.who = Arc::clone(&info.who);
        }
        true
    }

    /// The `--syslog` messages gathered since the last call.
    pub(crate) fn take_syslog(&mut self) -> Option<crate::syslog::Batch> {
        self.syslog.as_mut().map(std::mem::take)
    }

    /// Writes `event` as an RFC 5424 message (see [`crate::syslog`]).
    fn forward(&mut self, event: &Event<'_>) {
        self.message.clear();
        match event {
            Event::Record(record) | Event::Late(record) => {
                let split = self.body(record, record.body);
                self.syslog_head(
                    syslog_pri(record.fields.prefix()),
                    if matches!(event, Event::Late(_)) {
                        "late"
                    } else {
                        "-"
                    },
                );
                self.syslog_record_sd(record);
                let decoded = self.decode_all(&split);
                self.syslog_dict(&split, decoded);
                self.message.push(b' ');
                self.syslog_text(&split, decoded);
            }
            Event::Incomplete(incomplete) => {
                let record = &incomplete.record;
                self.syslog_head(syslog_pri(record.fields.prefix()), "incomplete");
                self.syslog_record_sd(record);
                self.message.push(b' ');
                let first = incomplete
                    .received()
                    .next()
                    .filter(|(offset, _)| *offset == 0)
                    .map(|(_, bytes)| bytes);
                if let Some(bytes) = first {
                    let split = self.body(record, bytes);
                    let decoded = self.decode_all(&split);
                    self.syslog_text(&split, decoded);
                }
                let _ = write!(
                    Line(&mut self.message),
                    " [incomplete: {} of {} bytes]",
                    incomplete.received_len(),
                    incomplete.total
                );
            }
            Event::Lost { seqs } => {
                let (first, last) = (seqs.start, seqs.end.saturating_sub(1));
                // kern.warning
                self.syslog_head(4, "lost");
                let _ = write!(
                    Line(&mut self.message),
                    "[{} source=\"{}\" first_seq=\"{first}\" last_seq=\"{last}\"] lost records #{first}..#{last}",
                    crate::syslog::SD_ID,
                    self.who.source
                );
            }
            Event::Restart(restart) => {
                // kern.notice
                self.syslog_head(5, "restart");
                let _ = write!(
                    Line(&mut self.message),
                    "[{} source=\"{}\" seq=\"{}\"] the sender restarted at #{}",
                    crate::syslog::SD_ID,
                    self.who.source,
                    restart.seq,
                    restart.seq
                );
            }
            Event::Plain(text) => {
                // kern.info: plain console text carries no level.
                self.syslog_head(6, "plain");
                let _ = write!(
                    Line(&mut self.message),
                    "[{} source=\"{}\"] ",
                    crate::syslog::SD_ID,
                    self.who.source
                );
                let text = text.strip_suffix(b"\n").unwrap_or(text);
                self.message
                    .extend_from_slice(String::from_utf8_lossy(text).as_bytes());
            }
            _ => return,
        }
        if let Some(batch) = &mut self.syslog {
            let _ = write!(Line(&mut batch.frames), "{} ", self.message.len());
            batch.frames.extend_from_slice(&self.message);
            batch.messages += 1;
        }
    }

    /// `<PRI>1 TIMESTAMP HOSTNAME kernel - MSGID `.
    fn syslog_head(&mut self, pri: u32, msgid: &str) {
        let host = Arc::clone(&self.who.host);
        let _ = write!(Line(&mut self.message), "<{pri}>1 {} ", self.received);
        // HOSTNAME: printable US-ASCII, at most 255.
        for &b in host.as_bytes().iter().take(255) {
            self.message
                .push(if (33..=126).contains(&b) { b } else { b'_' });
        }
        let _ = write!(Line(&mut self.message), " kernel - {msgid} ");
    }

    /// `[ncrx@32473 source=.. seq=.. ts_usec=.. flag=.. caller=..]`.
    fn syslog_record_sd(&mut self, record: &Record<'_>) {
        let _ = write!(
            Line(&mut self.message),
            "[{} seq=\"{}\" ts_usec=\"{}\" flag=\"{}\"",
            crate::syslog::SD_ID,
            record.fields.seq,
            record.fields.ts_usec,
            flag_str(record.fields.flag)
        );
        if let Some(caller) = record.fields.caller {
            let _ = write!(Line(&mut self.message), " caller=\"{caller}\"");
        }
        if syslog_pri(record.fields.prefix()) != u32::from(record.fields.prefix()) {
            let _ = write!(
                Line(&mut self.message),
                " facility=\"{}\"",
                record.fields.facility
            );
        }
        if let Some(release) = record.release {
            self.message.extend_from_slice(b" release=");
            sd_value(&mut self.message, &String::from_utf8_lossy(release));
        }
        self.message.push(b']');
    }

    /// `[dict@32473 KEY="VALUE"...]` when the record has dictionary, userdata or sysdata lines.
    fn syslog_dict(&mut self, split: &Body<'_>, decoded: bool) {
        if split.lines().next().is_none() {
            return;
        }
        let _ = write!(Line(&mut self.message), "[{}", crate::syslog::SD_DICT);
        if decoded {
            let mut start = self.ends.first().copied().unwrap_or(0);
            let mut pieces = self.ends.iter().skip(1).map(|&end| {
                let piece = start..end;
                start = end;
                piece
            });
            let mut pairs = Vec::new();
            while let (Some(key), Some(value)) = (pieces.next(), pieces.next()) {
                pairs.push((key, value));
            }
            for (key, value) in pairs {
                self.message.push(b' ');
                sd_name(&mut self.message, &self.decoded[key]);
                self.message.push(b'=');
                let value = String::from_utf8_lossy(&self.decoded[value]).into_owned();
                sd_value(&mut self.message, &value);
            }
        } else {
            for line in split.lines() {
                self.message.push(b' ');
                sd_name(&mut self.message, line.key());
                self.message.push(b'=');
                sd_value(&mut self.message, &String::from_utf8_lossy(line.value()));
            }
        }
        self.message.push(b']');
    }

    /// The record's text: decoded, or in wire form when it cannot be decoded exactly.
    fn syslog_text(&mut self, split: &Body<'_>, decoded: bool) {
        if decoded {
            let end = self.ends.first().copied().unwrap_or(0);
            self.message.extend_from_slice(&self.decoded[..end]);
        } else {
            self.message
                .extend_from_slice(String::from_utf8_lossy(split.text()).as_bytes());
        }
    }

    /// What the sink knows of `source`, its name looked for when new (and again when new
    /// names arrived since).
    fn info(&mut self, source: SocketAddr) -> &mut SourceInfo {
        let names = &self.names;
        let info = self.per_source.entry(source).or_insert_with(|| SourceInfo {
            counts: Counts::default(),
            generation: names.generation(),
            who: Arc::new(Who::new(source, names.lookup(source.ip()))),
        });
        if !info.who.named && info.generation != names.generation() {
            info.generation = names.generation();
            if let Some(name) = names.lookup(source.ip()) {
                info.who = Arc::new(Who::new(source, Some(name)));
            }
        }
        info
    }

    /// The start of a JSON line: `{"type":"<kind>","source":"<source>"` and, for a
    /// listener, `,"host":...,"received":...`.
    fn json_start(&mut self, kind: &str) {
        let line = &mut self.line;
        line.extend_from_slice(b"{\"type\":\"");
        line.extend_from_slice(kind.as_bytes());
        line.extend_from_slice(b"\",\"source\":\"");
        line.extend_from_slice(self.who.source.as_bytes());
        line.push(b'"');
        if self.stamp {
            line.extend_from_slice(b",\"host\":");
            line.extend_from_slice(&self.who.host_json);
            line.extend_from_slice(b",\"received\":\"");
            line.extend_from_slice(self.received.as_bytes());
            line.push(b'"');
        }
    }

    /// The start of a text line: the receive time (unless only the kernel's is shown) and
    /// the sender's name, or its address and port.
    fn text_start(&mut self) {
        if self.time != TimeShown::Kernel {
            self.line.extend_from_slice(self.received.as_bytes());
            self.line.push(b' ');
        }
        if self.who.named {
            self.line.extend_from_slice(self.who.host.as_bytes());
        } else {
            self.line.extend_from_slice(self.who.source.as_bytes());
        }
    }

    /// ` [<kernel time>]` when text lines show it.
    fn text_kernel_time(&mut self, ts_usec: u64) {
        if self.time != TimeShown::Received {
            let _ = write!(Line(&mut self.line), " [{}]", Timestamp(ts_usec));
        }
    }

    /// Hands the finished line to its destination.
    fn emit(&mut self) {
        match &mut self.destination {
            Destination::Stdout(batch, _) => batch.extend_from_slice(&self.line),
            Destination::Dir(batch, _) => batch.push(&self.who.host, &self.line),
        }
    }

    fn body<'b>(&self, record: &Record<'_>, body: &'b [u8]) -> Body<'b> {
        // Most records are short: their header is not parsed again.
        let limit = self
            .format_limit
            .unwrap_or(netconsole_proto::PRINTK_MESSAGE_MAX);
        if received::fits_format_limit(record.header.len(), body.len(), limit) {
            return Body::parse(body);
        }
        self.body_parsed(record, body)
    }

    /// [`Sink::body`] with the header parsed again for its printk length.
    fn body_parsed<'b>(&self, record: &Record<'_>, body: &'b [u8]) -> Body<'b> {
        match (self.format_limit, record.parse_header()) {
            (Some(limit), Ok(header)) => Body::parse_limited(body, header.kernel_len(), limit),
            // The sender's limit is not known: a Linux 6.3+ cut is recognised by what follows it.
            (None, Ok(header)) => received::split_body(body, header.kernel_len()),
            (_, Err(_)) => Body::parse(body),
        }
    }

    /// Decodes the text and every dictionary key and value of `split` into `decoded`
    /// (`ends` marks each string's end). `false` when one of them cannot be decoded
    /// without loss: then every string is written in wire form.
    fn decode_all(&mut self, split: &Body<'_>) -> bool {
        self.ends.clear();
        // The text straight into `decoded`, the keys and values through `scratch`.
        if !decode_utf8(split.text(), &mut self.decoded) {
            return false;
        }
        self.ends.push(self.decoded.len());
        for wire in split.lines().flat_map(|l| [l.key(), l.value()]) {
            if !decode_utf8(wire, &mut self.scratch) {
                return false;
            }
            self.decoded.extend_from_slice(&self.scratch);
            self.ends.push(self.decoded.len());
        }
        true
    }

    /// Writes `"text":...,"dict":[...]` (with `dict`) or just `"text":...`, decoded or in
    /// wire form; returns whether the wire form was written.
    fn json_strings(&mut self, split: &Body<'_>, with_dict: bool) -> bool {
        let decoded = self.decode_all(split);
        self.line.extend_from_slice(b"\"text\":");
        if decoded {
            let mut start = 0;
            let mut strings = self.ends.iter().map(|&end| {
                let s = &self.decoded[start..end];
                start = end;
                s
            });
            json_string(&mut self.line, strings.next().unwrap_or_default());
            if with_dict {
                self.line.extend_from_slice(b",\"dict\":[");
                let mut first = true;
                while let (Some(key), Some(value)) = (strings.next(), strings.next()) {
                    if !first {
                        self.line.push(b',');
                    }
                    first = false;
                    self.line.push(b'[');
                    json_string(&mut self.line, key);
                    self.line.push(b',');
                    json_string(&mut self.line, value);
                    self.line.push(b']');
                }
                self.line.push(b']');
            }
        } else {
            json_lossy(&mut self.line, split.text());
            if with_dict {
                self.line.extend_from_slice(b",\"dict\":[");
                for (n, line) in split.lines().enumerate() {
                    if n > 0 {
                        self.line.push(b',');
                    }
                    self.line.push(b'[');
                    json_lossy(&mut self.line, line.key());
                    self.line.push(b',');
                    json_lossy(&mut self.line, line.value());
                    self.line.push(b']');
                }
                self.line.push(b']');
            }
        }
        !decoded
    }

    /// `"type":"<kind>","source":...,"release":...` of a record or incomplete line.
    fn json_meta(&mut self, kind: &str, record: &Record<'_>) {
        self.json_start(kind);
        let line = &mut self.line;
        line.extend_from_slice(b",\"seq\":");
        number(line, record.fields.seq);
        line.extend_from_slice(b",\"facility\":");
        small_number(line, record.fields.facility);
        line.extend_from_slice(b",\"level\":");
        small_number(line, record.fields.level);
        line.extend_from_slice(b",\"ts_usec\":");
        number(line, record.fields.ts_usec);
        line.extend_from_slice(b",\"flag\":\"");
        line.extend_from_slice(flag_str(record.fields.flag).as_bytes());
        line.extend_from_slice(b"\",\"caller\":");
        match record.fields.caller {
            Some(caller) => {
                let _ = write!(Line(line), "\"{caller}\"");
            }
            None => line.extend_from_slice(b"null"),
        }
        line.extend_from_slice(b",\"release\":");
        match record.release {
            Some(release) => json_lossy(line, release),
            None => line.extend_from_slice(b"null"),
        }
        line.push(b',');
    }

    fn record(&mut self, record: &Record<'_>, out_of_order: bool) {
        let split = self.body(record, record.body);
        let truncated = split.text_cut();
        match self.format {
            Format::Json => {
                self.json_meta("record", record);
                let escaped = self.json_strings(&split, true);
                let line = &mut self.line;
                line.extend_from_slice(b",\"emergency\":");
                boolean(line, record.ncemg);
                line.extend_from_slice(b",\"out_of_order\":");
                boolean(line, out_of_order);
                line.extend_from_slice(b",\"truncated\":");
                boolean(line, truncated);
                line.extend_from_slice(b",\"escaped\":");
                boolean(line, escaped);
                line.push(b'}');
            }
            Format::Text => {
                self.text_start();
                let _ = write!(Line(&mut self.line), " #{}", record.fields.seq);
                self.text_kernel_time(record.fields.ts_usec);
                let _ = write!(Line(&mut self.line), " <{}> ", record.fields.level);
                push_wire_text(&mut self.line, split.text());
                for (mark, on) in [
                    (" [cut]", truncated),
                    (" [out of order]", out_of_order),
                    (" [emergency]", record.ncemg),
                ] {
                    if on {
                        self.line.extend_from_slice(mark.as_bytes());
                    }
                }
            }
        }
    }

    fn incomplete(&mut self, incomplete: &IncompleteRecord<'_>) {
        let record = &incomplete.record;
        // The text is known only when the first bytes of the body arrived.
        let first = incomplete
            .received()
            .next()
            .filter(|(offset, _)| *offset == 0)
            .map(|(_, bytes)| bytes);
        match self.format {
            Format::Json => {
                self.json_meta("incomplete", record);
                let escaped = if let Some(bytes) = first {
                    let split = self.body(record, bytes);
                    self.json_strings(&split, false)
                } else {
                    self.line.extend_from_slice(b"\"text\":null");
                    false
                };
                let _ = write!(
                    Line(&mut self.line),
                    ",\"escaped\":{escaped},\"total\":{},\"missing\":[",
                    incomplete.total
                );
                for (n, range) in incomplete.missing.iter().enumerate() {
                    let comma = if n > 0 { "," } else { "" };
                    let _ = write!(
                        Line(&mut self.line),
                        "{comma}[{},{}]",
                        range.start,
                        range.end - range.start
                    );
                }
                self.line.extend_from_slice(b"]}");
            }
            Format::Text => {
                self.text_start();
                let _ = write!(Line(&mut self.line), " #{}", record.fields.seq);
                self.text_kernel_time(record.fields.ts_usec);
                let _ = write!(Line(&mut self.line), " <{}> ", record.fields.level);
                // As a whole record's: the text as printk escapes it.
                if let Some(bytes) = first {
                    let split = self.body(record, bytes);
                    push_wire_text(&mut self.line, split.text());
                }
                let _ = write!(
                    Line(&mut self.line),
                    " [incomplete: {} of {} bytes]",
                    incomplete.received_len(),
                    incomplete.total
                );
            }
        }
    }
}

impl<W: Write + Identity> Files<W> {
    /// Files in `dir` named `<host>.<extension>`, at most `max_open` open at once, opened
    /// by `opener`.
    fn new(
        dir: &Path,
        extension: &'static str,
        max_open: usize,
        opener: fn(&Path) -> io::Result<W>,
    ) -> Self {
        Files {
            dir: dir.to_path_buf(),
            extension,
            open: HashMap::new(),
            max_open: max_open.max(1),
            opener,
            now: Instant::now(),
            reaped: Instant::now(),
            tails: HashMap::new(),
            scratch: Vec::new(),
            dir_id: dir_id(dir),
            made_dir: false,
            watch: watch_dir(dir),
        }
    }

    /// Writes each sender's lines of `batch` to its file in one write, in the order they
    /// came (the order of runs in `batch` is lost), at `now`.
    fn write_batch(&mut self, batch: &mut FileBatch, now: Instant, errors: &mut WriteErrors) {
        self.now = now;
        self.close_idle(now);
        // A directory removed or replaced (by hand, by a clean-up) since the last batch:
        // the files open are no longer in it, and are opened again (one `stat` a batch).
        let id = dir_id(&self.dir);
        if id != self.dir_id {
            self.open.clear();
            self.dir_id = id;
            self.watch = watch_dir(&self.dir);
        }
        self.forget_moved();
        // A line cut by a failed write is finished first, even when its sender sent nothing
        // since.
        if !self.tails.is_empty() {
            let cut: Vec<Arc<str>> = self.tails.keys().cloned().collect();
            for host in &cut {
                self.write(host, &[], errors);
            }
        }
        // Each file's runs together, in the order they came, also when two sources share a
        // file (one address, two ports): their names are then two `Arc`s with one text.
        batch
            .runs
            .sort_unstable_by(|(a, a_start, _), (b, b_start, _)| {
                if Arc::ptr_eq(a, b) {
                    a_start.cmp(b_start)
                } else {
                    a.cmp(b).then(a_start.cmp(b_start))
                }
            });
        let mut scratch = std::mem::take(&mut self.scratch);
        for runs in batch.runs.chunk_by(|a, b| a.0 == b.0) {
            let host = &runs[0].0;
            if let [(_, start, end)] = runs {
                self.write(host, &batch.bytes[*start..*end], errors);
            } else {
                scratch.clear();
                for (_, start, end) in runs {
                    scratch.extend_from_slice(&batch.bytes[*start..*end]);
                }
                self.write(host, &scratch, errors);
            }
        }
        self.scratch = scratch;
        if self.made_dir {
            self.made_dir = false;
            self.dir_id = dir_id(&self.dir);
            self.watch = watch_dir(&self.dir);
        }
    }

    /// Closes the open files that were moved or deleted since the last call, or that
    /// another file was moved onto; all of them when the kernel's queue of events overflowed
    /// (so none is missed). Their next lines make them again at their paths.
    fn forget_moved(&mut self) {
        let Some(watch) = &self.watch else {
            return;
        };
        // Until `EAGAIN`: nothing more happened.
        while let Ok(events) = watch.read_events() {
            if events.is_empty() {
                break;
            }
            for event in events {
                if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    self.open.clear();
                    continue;
                }
                let Some(stem) = event.name.as_ref().and_then(|name| {
                    name.to_str()?
                        .strip_suffix(self.extension)?
                        .strip_suffix('.')
                }) else {
                    continue;
                };
                // Else the stem may be a name made to fit a file name (see `file_stem`).
                if self.open.remove(stem).is_none() {
                    self.open.retain(|host, _| file_stem(host) != stem);
                }
            }
        }
    }

    /// Lines cut by a failed write and never finished.
    fn unfinished(&self) -> u64 {
        self.tails.values().map(|tail| newlines(&tail.bytes)).sum()
    }

    /// `DIR/<file_stem(host)>.<extension>`.
    fn path(&self, host: &str) -> PathBuf {
        self.dir
            .join(format!("{}.{}", file_stem(host), self.extension))
    }

    /// Closes the files not written for [`IDLE_CLOSE`], at most once per [`IDLE_TICK`].
    fn close_idle(&mut self, now: Instant) {
        if now.saturating_duration_since(self.reaped) < IDLE_TICK {
            return;
        }
        self.reaped = now;
        self.open
            .retain(|_, open| now.saturating_duration_since(open.written) < IDLE_CLOSE);
    }

    /// Closes the least recently written file; `false` when none is open.
    fn close_oldest(&mut self) -> bool {
        let oldest = self
            .open
            .iter()
            .min_by_key(|(_, open)| open.written)
            .map(|(host, _)| Arc::clone(host));
        oldest.is_some_and(|oldest| self.open.remove(&oldest).is_some())
    }

    /// Appends `lines` to `source`'s file, opening it (and closing the least recently
    /// written one when `max_open` are open) if needed. When the process is out of file
    /// descriptors (`EMFILE`, `ENFILE`: other threads' files, connections), the least
    /// recently written files are closed until it opens, rather than the lines lost; when
    /// the directory is gone, it is made again.
    fn write(&mut self, host: &Arc<str>, lines: &[u8], errors: &mut WriteErrors) {
        if lines.is_empty() && !self.tails.contains_key(host) {
            return;
        }
        let now = self.now;
        if !self.open.contains_key(host) {
            if self.open.len() >= self.max_open {
                self.close_oldest();
            }
            let path = self.path(host);
            let mut made_dir = false;
            let file = loop {
                match (self.opener)(&path) {
                    Ok(file) => break file,
                    Err(error)
                        if matches!(
                            error.raw_os_error(),
                            Some(nix::libc::EMFILE | nix::libc::ENFILE)
                        ) && self.close_oldest() => {}
                    // The directory was removed (by hand, by a clean-up): made again once.
                    Err(error)
                        if error.kind() == io::ErrorKind::NotFound
                            && !made_dir
                            && std::fs::create_dir_all(&self.dir).is_ok() =>
                    {
                        made_dir = true;
                        self.made_dir = true;
                    }
                    Err(error) => {
                        // (A retry only to finish a cut line is not counted again.)
                        if !lines.is_empty() {
                            errors.failed(lines, &path, &error);
                        }
                        return;
                    }
                }
            };
            // The file at the path now is not the one a line was cut in (moved by logrotate,
            // deleted): the rest of that line is dropped and the line counted, rather than
            // written at the start of this one.
            if let Some(tail) = self.tails.get(host) {
                if tail.file.is_some() && file.identity() != tail.file {
                    let lost = newlines(&tail.bytes);
                    self.tails.remove(host);
                    errors.failed_lines(
                        lost,
                        &path.display().to_string(),
                        &io::Error::other(
                            "the file was replaced before the rest of a line cut by a failed \
                             write could be written",
                        ),
                    );
                    if lines.is_empty() {
                        return;
                    }
                }
            }
            let open = OpenFile { file, written: now };
            self.open.insert(Arc::clone(host), open);
        }
        let Some(open) = self.open.get_mut(host) else {
            return;
        };
        open.written = now;
        let mut tail = self.tails.remove(host).unwrap_or_default();
        let written = write_lines(&mut open.file, lines, &mut tail.bytes);
        if let Err((error, lost)) = written {
            if !tail.bytes.is_empty() && tail.file.is_none() {
                tail.file = open.file.identity();
            }
            let path = self.path(host);
            if !lines.is_empty() {
                errors.failed_lines(lost, &path.display().to_string(), &error);
            }
            // Opened again next time (the disk may have room by then).
            self.open.remove(host);
        }
        if !tail.bytes.is_empty() {
            self.tails.insert(Arc::clone(host), tail);
        }
    }
}

impl WriteErrors {
    /// The last error, with the file it happened to.
    pub(crate) fn last(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    fn failed(&mut self, lines: &[u8], path: &Path, error: &io::Error) {
        self.failed_lines(newlines(lines), &path.display().to_string(), error);
    }

    fn failed_lines(&mut self, lines: u64, what: &str, error: &io::Error) {
        self.lines_lost += lines;
        self.errors += 1;
        self.since_report += 1;
        self.last_error = Some(format!("{what}: {error}"));
    }
}

/// How many lines `bytes` holds (its newlines).
fn newlines(bytes: &[u8]) -> u64 {
    bytes.split(|&b| b == b'\n').count() as u64 - 1
}

/// Writes as much of `bytes` as `out` takes: how many bytes, and the error that stopped it.
fn write_some(out: &mut impl Write, bytes: &[u8]) -> (usize, Option<io::Error>) {
    let mut written = 0;
    while written < bytes.len() {
        match out.write(&bytes[written..]) {
            Ok(0) => return (written, Some(io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (written, Some(e)),
        }
    }
    (written, None)
}

/// Writes `tail` (the rest of a line cut by the last failure), then `batch` (whole lines),
/// to `out`, and flushes it. When a write fails part way through a line, the rest of that
/// line is left in `tail` for next time. On failure, returns the error and how many lines
/// were not written (a line left in `tail` is not counted).
fn write_lines(
    out: &mut impl Write,
    batch: &[u8],
    tail: &mut Vec<u8>,
) -> Result<(), (io::Error, u64)> {
    if !tail.is_empty() {
        let (written, error) = write_some(out, tail);
        tail.drain(..written);
        if let Some(error) = error {
            return Err((error, newlines(batch)));
        }
    }
    let (written, error) = write_some(out, batch);
    if let Some(error) = error {
        let rest = &batch[written..];
        let cut = if written > 0 && batch[written - 1] != b'\n' {
            rest.iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |nl| nl + 1)
        } else {
            0
        };
        tail.extend_from_slice(&rest[..cut]);
        return Err((error, newlines(&rest[cut..])));
    }
    out.flush().map_err(|error| (error, 0))
}

/// Checks that `dir` is (or can be made) a directory this process can create files in.
fn check_dir(dir: &Path) -> Result<(), Failure> {
    let fail = |what, source| Failure::File {
        what,
        path: dir.to_path_buf(),
        source,
    };
    if dir.exists() && !dir.is_dir() {
        return Err(fail(
            "cannot write files in",
            io::Error::from(io::ErrorKind::NotADirectory),
        ));
    }
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|e| fail("cannot create directory", e))?;
        // Said, so that a mistyped path is seen at once, not found later as a new tree.
        eprintln!("ncrx: made the directory {}", dir.display());
    }
    let probe = dir.join(format!(".ncrx-write-test-{}", std::process::id()));
    File::create(&probe).map_err(|e| fail("cannot create files in directory", e))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// An RFC 5424 SD-NAME: printable US-ASCII but `=`, space, `]` and `"`, at most 32
/// (others become `_`).
fn sd_name(out: &mut Vec<u8>, name: &[u8]) {
    if name.is_empty() {
        out.push(b'_');
    }
    for &b in name.iter().take(32) {
        let ok = (33..=126).contains(&b) && !matches!(b, b'=' | b']' | b'"');
        out.push(if ok { b } else { b'_' });
    }
}

/// An RFC 5424 PARAM-VALUE in quotes, with `"`, `\` and `]` escaped.
fn sd_value(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    for &b in value.as_bytes() {
        if matches!(b, b'"' | b'\\' | b']') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// A `fmt::Write` over a byte buffer, for `write!` of numbers and addresses.
struct Line<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Line<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// `ts_usec` as dmesg shows it: seconds, 5 wide, and microseconds.
struct Timestamp(u64);

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:5}.{:06}", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

pub(crate) fn flag_str(flag: Flag) -> &'static str {
    match flag.as_byte() {
        b'c' => "c",
        b'+' => "+",
        _ => "-",
    }
}

/// Datagrams shown at most by `-v`, in bytes.
const SHOWN_BYTES: usize = 120;

/// Shows on stderr (`-v`) a datagram the receiver found malformed, its start escaped.
pub(crate) fn show_malformed(source: SocketAddr, payload: &[u8]) {
    eprintln!(
        "ncrx: malformed datagram from {source} ({} bytes): {}",
        payload.len(),
        payload[..payload.len().min(SHOWN_BYTES)].escape_ascii()
    );
}

/// The RFC 5424 PRI of a record with printk prefix `prefix`: the prefix itself when its
/// facility is one syslog has (0–23); else (a prefix written to `/dev/kmsg`, up to 2047) the
/// `user` facility with the record's level, the facility going in structured data.
fn syslog_pri(prefix: u16) -> u32 {
    if prefix <= 191 {
        u32::from(prefix)
    } else {
        8 + u32::from(prefix & 7)
    }
}

/// Decodes `wire` into `out` (cleared first) as [`received::decode_exact_into`] does;
/// whether it decoded exactly, to UTF-8. Decoding keeps the bytes printk leaves as they are
/// (printable ASCII) and makes one byte of each four-byte escape: bytes that come out as many
/// as went in held no escape and are ASCII, with no UTF-8 check needed.
fn decode_utf8(wire: &[u8], out: &mut Vec<u8>) -> bool {
    received::decode_exact_into(wire, out)
        && (out.len() == wire.len() || std::str::from_utf8(out).is_ok())
}

/// Writes the decimal digits of `n`.
fn number(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// [`number`] for a byte, one digit (the level, the kernel's facility) pushed at once.
fn small_number(out: &mut Vec<u8>, n: u8) {
    if n < 10 {
        out.push(b'0' + n);
    } else {
        number(out, n);
    }
}

/// Writes `true` or `false` (each a copy of known length, not a call to `memcpy`).
fn boolean(out: &mut Vec<u8>, b: bool) {
    if b {
        out.extend_from_slice(b"true");
    } else {
        out.extend_from_slice(b"false");
    }
}

/// What follows the `\` of each byte's JSON escape as `serde_json` writes it: `"`, `\`,
/// `b t n f r` by name, `u` for the other bytes below 0x20 (`\u00XX`); 0 for a byte written
/// as it is.
const JSON_ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// The `0x80` bits of the bytes of `word` (little-endian) that JSON escapes: below 0x20,
/// `"` or `\`. The lowest set bit marks the first such byte (bits above it may be false
/// hits).
#[inline]
fn json_escape_bits(word: u64) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const QUOTE: u64 = ONES.wrapping_mul(b'"' as u64);
    const BACKSLASH: u64 = ONES.wrapping_mul(b'\\' as u64);
    const BELOW_SPACE: u64 = ONES.wrapping_mul(0x20);
    // Each term's lowest set bit is exact; false hits only sit above a true one.
    let control = word.wrapping_sub(BELOW_SPACE) & !word;
    let quote = word ^ QUOTE;
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = word ^ BACKSLASH;
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    (control | quote | backslash) & HIGHS
}

/// The index of the first byte of `s` that JSON escapes, eight bytes at a time; the last
/// step re-reads the last eight bytes (those before the end of the words already read are
/// known clean) rather than going byte by byte.
#[inline]
fn find_json_escape(s: &[u8]) -> Option<usize> {
    let mut words = s.chunks_exact(8);
    let mut base = 0;
    for word in &mut words {
        let hits = json_escape_bits(u64::from_le_bytes(word.try_into().unwrap_or_default()));
        if hits != 0 {
            return Some(base + (hits.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    if words.remainder().is_empty() {
        return None;
    }
    match s.last_chunk::<8>() {
        Some(last) => {
            let hits = json_escape_bits(u64::from_le_bytes(*last));
            (hits != 0).then(|| s.len() - 8 + (hits.trailing_zeros() / 8) as usize)
        }
        None => s.iter().position(|&b| JSON_ESCAPE[usize::from(b)] != 0),
    }
}

/// Writes UTF-8 `s` as a JSON string, escaped as `serde_json` escapes: `"`, `\`, and the
/// bytes below 0x20 (`\b \t \n \f \r` by name, the others as `\u00XX`). Runs of bytes
/// that need no escape are found eight at a time and copied at once.
fn json_string(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len() + 2);
    out.push(b'"');
    let mut rest = s;
    while let Some(i) = find_json_escape(rest) {
        let b = rest[i];
        out.extend_from_slice(&rest[..i]);
        let short = JSON_ESCAPE[usize::from(b)];
        if short == b'u' {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        } else {
            out.extend_from_slice(&[b'\\', short]);
        }
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

/// [`json_string`] the straightforward way, byte by byte: what the tests compare it with.
#[cfg(test)]
fn json_string_reference(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in s {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x09 => b't',
            0x0a => b'n',
            0x0c => b'f',
            0x0d => b'r',
            0x00..=0x1f => b'u',
            _ => {
                out.push(b);
                continue;
            }
        };
        out.push(b'\\');
        out.push(short);
        if short == b'u' {
            out.extend_from_slice(&[
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        }
    }
    out.push(b'"');
}

/// Writes wire bytes as a JSON string, each byte that is not UTF-8 as printk escapes it
/// (`\xNN`: a kernel never sends such a byte raw; another sender's keeps its value).
fn json_lossy(out: &mut Vec<u8>, bytes: &[u8]) {
    if let Ok(s) = std::str::from_utf8(bytes) {
        json_string(out, s.as_bytes());
        return;
    }
    let mut whole = Vec::with_capacity(bytes.len() + 16);
    for chunk in bytes.utf8_chunks() {
        whole.extend_from_slice(chunk.valid().as_bytes());
        whole.extend_from_slice(&netconsole_proto::escape(chunk.invalid()));
    }
    json_string(out, &whole);
}

/// Writes an extended record's wire text for a text line: a byte a kernel never sends
/// raw there (from another sender: a terminal escape, a carriage return) is escaped as
/// printk would have, never written raw.
fn push_wire_text(out: &mut Vec<u8>, text: &[u8]) {
    out.extend_from_slice(&netconsole_proto::escape_stray(text));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::JsonLine;
    use ncrx_core::{Receiver, ReceiverConfig};
    use netpoll_frame::Instant;

    fn options(format: Format) -> SinkOptions {
        SinkOptions::capture(format, None, None)
    }

    /// A disk that takes `room` more bytes, then fails with `ENOSPC` until given more.
    struct Disk {
        bytes: Vec<u8>,
        room: usize,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::from_raw_os_error(nix::libc::ENOSPC));
            }
            let n = buf.len().min(self.room).min(7); // short writes too
            self.bytes.extend_from_slice(&buf[..n]);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A write that fails part way through a line loses the lines after it (counted) but
    /// not that line: its rest is written first once there is room, so every line that
    /// comes out is whole.
    #[test]
    fn a_full_disk_cuts_no_line_in_two() {
        let mut disk = Disk {
            bytes: Vec::new(),
            room: 20,
        };
        let mut tail = Vec::new();
        let batch = b"first line\nsecond line\nthird line\n";
        let (error, lost) = write_lines(&mut disk, batch, &mut tail).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(nix::libc::ENOSPC));
        // "first line\nsecond li" went out; "ne\n" is kept, the third line is lost.
        assert_eq!(lost, 1);
        assert_eq!(tail, b"ne\n");
        // Still full: the next batch is lost whole, the rest of the line kept.
        let (_, lost) = write_lines(&mut disk, b"fourth\nfifth\n", &mut tail).unwrap_err();
        assert_eq!((lost, tail.as_slice()), (2, &b"ne\n"[..]));
        // A little room: the line goes on before anything else.
        disk.room = 2;
        let (_, lost) = write_lines(&mut disk, b"sixth\n", &mut tail).unwrap_err();
        assert_eq!((lost, tail.as_slice()), (1, &b"\n"[..]));
        disk.room = 1000;
        write_lines(&mut disk, b"seventh\n", &mut tail).unwrap();
        assert!(tail.is_empty());
        assert_eq!(disk.bytes, b"first line\nsecond line\nseventh\n");
        // Cut just before a newline, then just after one (nothing kept back).
        disk.room = 4;
        let (_, lost) = write_lines(&mut disk, b"abcd\nefg\n", &mut tail).unwrap_err();
        assert_eq!((lost, tail.as_slice()), (1, &b"\n"[..]));
        disk.room = 1 + 5;
        let (_, lost) = write_lines(&mut disk, b"hijk\nlmn\n", &mut tail).unwrap_err();
        assert_eq!((lost, tail.len()), (1, 0));
        assert!(disk.bytes.ends_with(b"seventh\nabcd\nhijk\n"));
    }

    thread_local! {
        /// The disk of [`open_shared_disk`]'s files: their bytes by path, and the room left.
        static DISK: std::cell::RefCell<(HashMap<PathBuf, Vec<u8>>, usize)> =
            std::cell::RefCell::new((HashMap::new(), 0));
        /// How many times a path of [`DISK`] had its file replaced (see `Identity`).
        static GENERATION: std::cell::RefCell<HashMap<PathBuf, u64>> =
            std::cell::RefCell::new(HashMap::new());
    }

    /// A file on [`DISK`].
    struct DiskFile(PathBuf);

    impl Identity for DiskFile {
        fn identity(&self) -> Option<(u64, u64)> {
            // The file at a path is replaced (rotated) when its generation changes.
            Some((
                0,
                GENERATION.with_borrow(|g| g.get(&self.0).copied().unwrap_or(0)),
            ))
        }
    }

    impl Write for DiskFile {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            DISK.with_borrow_mut(|(files, room)| {
                if *room == 0 {
                    return Err(io::Error::from_raw_os_error(nix::libc::ENOSPC));
                }
                let n = buf.len().min(*room);
                files
                    .entry(self.0.clone())
                    .or_default()
                    .extend_from_slice(&buf[..n]);
                *room -= n;
                Ok(n)
            })
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[allow(
        clippy::unnecessary_wraps,
        reason = "the signature of Files::opener; this disk always opens"
    )]
    fn open_shared_disk(path: &Path) -> io::Result<DiskFile> {
        Ok(DiskFile(path.to_path_buf()))
    }

    /// `--dir` on a disk that fills up, then gets room again: a line cut by the full disk is
    /// finished first (even for a sender that sends nothing more), the lines of the batches
    /// that found no room are counted as not written, and every file holds whole lines only.
    #[test]
    fn dir_files_on_a_full_disk_keep_whole_lines() {
        let mut files = Files::new(Path::new("/d"), "log", 8, open_shared_disk);
        let mut errors = WriteErrors::default();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let mut batch = FileBatch::default();
        let mut flush = |files: &mut Files<DiskFile>, batch: &mut FileBatch| {
            files.write_batch(batch, std::time::Instant::now(), &mut errors);
            Batch::clear(batch);
            errors.lines_lost
        };
        DISK.with_borrow_mut(|(_, room)| *room = 9);
        batch.push(&a, b"a one\n");
        batch.push(&b, b"b one\n");
        batch.push(&a, b"a two\n");
        let lost = flush(&mut files, &mut batch);
        // 9 bytes of room, whichever sender goes first: one line out, one cut (its rest
        // kept), one lost.
        assert_eq!((lost, files.tails.len()), (1, 1));
        DISK.with_borrow_mut(|(_, room)| *room = 0);
        batch.push(&b, b"b two\n");
        let lost_while_full = flush(&mut files, &mut batch);
        // Room again; `a`, whose line was cut, sends nothing more.
        DISK.with_borrow_mut(|(_, room)| *room = 1000);
        batch.push(&b, b"b three\n");
        let lost = flush(&mut files, &mut batch);
        assert!(files.tails.is_empty(), "{:?}", files.tails);
        DISK.with_borrow(|(written, _)| {
            for (path, bytes) in written {
                let text = String::from_utf8(bytes.clone()).unwrap();
                assert!(text.ends_with('\n'), "{path:?}: {text:?}");
                // Each file's lines are whole, and in the order they came.
                let order = ["a one", "a two", "b one", "b two", "b three"];
                let at: Vec<usize> = text
                    .lines()
                    .map(|line| order.iter().position(|l| *l == line).unwrap())
                    .collect();
                assert!(at.is_sorted(), "{path:?}: {text:?}");
            }
            let lines: u64 = written.values().map(|b| newlines(b)).sum();
            // Five lines were gathered; those out plus those counted lost make five.
            assert_eq!(lines + lost_while_full, 5, "{written:?}");
        });
        assert_eq!(lost, lost_while_full);
        assert_eq!(lost_while_full, 2);
    }

    /// A line cut by a full disk in a file that is then rotated (moved away, the path given
    /// to a new file) is not finished at the start of the new file: its rest is dropped and
    /// the line counted, and the new file starts with the next whole line.
    #[test]
    fn the_rest_of_a_cut_line_never_starts_a_rotated_file() {
        let (path, rotated) = (PathBuf::from("/r/a.log"), PathBuf::from("/r/a.log.1"));
        DISK.with_borrow_mut(|(files, room)| {
            files.clear();
            *room = 8;
        });
        let mut files = Files::new(Path::new("/r"), "log", 8, open_shared_disk);
        let mut errors = WriteErrors::default();
        let a: Arc<str> = Arc::from("a");
        let mut batch = FileBatch::default();
        batch.push(&a, b"a one\n");
        batch.push(&a, b"a two\n");
        files.write_batch(&mut batch, std::time::Instant::now(), &mut errors);
        Batch::clear(&mut batch);
        assert_eq!((errors.lines_lost, files.unfinished()), (0, 1));
        // logrotate: the file moved away, a new one at its path; room again.
        DISK.with_borrow_mut(|(files, room)| {
            let bytes = files.remove(&path).unwrap();
            files.insert(rotated.clone(), bytes);
            *room = 1000;
        });
        GENERATION.with_borrow_mut(|g| *g.entry(path.clone()).or_default() += 1);
        files.reopen();
        batch.push(&a, b"a three\n");
        files.write_batch(&mut batch, std::time::Instant::now(), &mut errors);
        DISK.with_borrow(|(written, _)| {
            assert_eq!(written[&rotated], b"a one\na ");
            assert_eq!(written[&path], b"a three\n");
        });
        assert_eq!((errors.lines_lost, files.unfinished()), (1, 0));
        assert!(
            errors
                .last()
                .unwrap()
                .contains("replaced before the rest of a line"),
            "{:?}",
            errors.last()
        );
    }

    /// Two sources that share a file (one address, two ports: two names with one text) have
    /// their lines in it in the order they came, and another sender's go to its own file.
    #[test]
    fn two_sources_of_one_file_keep_the_order_of_their_lines() {
        DISK.with_borrow_mut(|(files, room)| {
            files.clear();
            *room = 1000;
        });
        let mut files = Files::new(Path::new("/e"), "log", 8, open_shared_disk);
        let mut errors = WriteErrors::default();
        let (port_a, port_b, other): (Arc<str>, Arc<str>, Arc<str>) =
            (Arc::from("h"), Arc::from("h"), Arc::from("g"));
        let mut batch = FileBatch::default();
        for (host, line) in [
            (&port_b, "1\n"),
            (&port_a, "2\n"),
            (&other, "x\n"),
            (&port_b, "3\n"),
            (&port_a, "4\n"),
            (&port_a, "5\n"),
        ] {
            batch.push(host, line.as_bytes());
        }
        files.write_batch(&mut batch, std::time::Instant::now(), &mut errors);
        DISK.with_borrow(|(written, _)| {
            assert_eq!(written[Path::new("/e/h.log")], b"1\n2\n3\n4\n5\n");
            assert_eq!(written[Path::new("/e/g.log")], b"x\n");
        });
        assert_eq!(errors.lines_lost, 0);
    }

    /// An empty directory of this process's, `ncrx-<name>-<pid>` in the temporary directory.
    fn empty_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ncrx-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A name longer than a file name may be (a `--hosts` name of 300 bytes; 253 is DNS's
    /// longest) gets a file cut to [`MAX_STEM`] bytes, at a character's start, and its lines
    /// are written; moved, it is made again like any other.
    #[test]
    fn a_long_name_gets_a_file_cut_to_fit() {
        let long = "n".repeat(300);
        assert_eq!(file_stem(&long), "n".repeat(MAX_STEM));
        // Two-byte characters: 120 of them, not 120 and a half.
        assert_eq!(file_stem(&"\u{e9}".repeat(200)), "\u{e9}".repeat(120));
        let odd = format!("a{}", "\u{e9}".repeat(200));
        assert_eq!(file_stem(&odd).len(), MAX_STEM - 1);
        let dir = empty_dir("long-name");
        let mut files = Files::new(&dir, "jsonl", 8, open_append);
        let mut errors = WriteErrors::default();
        let host: Arc<str> = Arc::from(long.as_str());
        let mut batch = FileBatch::default();
        batch.push(&host, b"one\n");
        files.write_batch(&mut batch, std::time::Instant::now(), &mut errors);
        Batch::clear(&mut batch);
        let path = dir.join(format!("{}.jsonl", "n".repeat(MAX_STEM)));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\n");
        std::fs::rename(&path, dir.join("rotated")).unwrap();
        batch.push(&host, b"two\n");
        files.write_batch(&mut batch, std::time::Instant::now(), &mut errors);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(errors.lines_lost, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A file not written for [`IDLE_CLOSE`] is closed (its descriptor and, deleted by a
    /// clean-up job, its disk space given back). Where inotify cannot watch the directory,
    /// this is how a file deleted or moved is made again at its path by the next line;
    /// before that, the open file is written where it is.
    #[test]
    fn a_file_idle_for_ten_seconds_is_closed() {
        let dir = empty_dir("idle");
        let mut files = Files::new(&dir, "log", 8, open_append);
        assert!(files.watch.is_some());
        files.watch = None;
        let mut errors = WriteErrors::default();
        let (gone, moved, busy): (Arc<str>, Arc<str>, Arc<str>) =
            (Arc::from("gone"), Arc::from("moved"), Arc::from("busy"));
        let mut batch = FileBatch::default();
        let mut write = |files: &mut Files, hosts: &[&Arc<str>], line: &str, at| {
            for host in hosts {
                batch.push(host, line.as_bytes());
            }
            files.write_batch(&mut batch, at, &mut errors);
            Batch::clear(&mut batch);
        };
        let start = std::time::Instant::now();
        write(&mut files, &[&gone, &moved, &busy], "one\n", start);
        std::fs::remove_file(dir.join("gone.log")).unwrap();
        std::fs::rename(dir.join("moved.log"), dir.join("moved.log.1")).unwrap();
        let second = start + Duration::from_secs(1);
        write(&mut files, &[&gone, &moved, &busy], "two\n", second);
        assert!(!dir.join("gone.log").exists());
        // Only `busy` is written for ten seconds: the others are closed.
        write(&mut files, &[&busy], "three\n", second + IDLE_CLOSE / 2);
        assert_eq!(files.open.len(), 3);
        let later = second + IDLE_CLOSE;
        files.tick(later);
        assert_eq!(files.open.keys().collect::<Vec<_>>(), [&busy]);
        write(&mut files, &[&gone, &moved], "four\n", later);
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
        assert_eq!(read("gone.log"), "four\n");
        assert_eq!(read("moved.log"), "four\n");
        assert_eq!(read("moved.log.1"), "one\ntwo\n");
        assert_eq!(read("busy.log"), "one\ntwo\nthree\n");
        assert_eq!(errors.lines_lost, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A file moved or deleted while it is open (logrotate without SIGHUP, a clean-up job,
    /// `rm` by hand), or that another file was moved onto, is closed at the next batch: the
    /// next line makes it again at its path, instead of going on into the moved file, or
    /// into a deleted one that nobody can read and whose space is never given back.
    #[test]
    fn a_file_moved_or_deleted_is_made_again_at_its_path() {
        let dir = empty_dir("moved");
        let mut files = Files::new(&dir, "log", 8, open_append);
        let mut errors = WriteErrors::default();
        let hosts: Vec<Arc<str>> = ["gone", "moved", "replaced", "a/b", "a_c", "busy"]
            .into_iter()
            .map(Arc::from)
            .collect();
        let mut batch = FileBatch::default();
        let mut write = |files: &mut Files, line: &str| {
            for host in &hosts {
                batch.push(host, line.as_bytes());
            }
            files.write_batch(&mut batch, std::time::Instant::now(), &mut errors);
            Batch::clear(&mut batch);
        };
        write(&mut files, "one\n");
        let at = |name: &str| dir.join(name);
        std::fs::remove_file(at("gone.log")).unwrap();
        std::fs::rename(at("moved.log"), at("moved.log.1")).unwrap();
        std::fs::write(at("new"), "new\n").unwrap();
        std::fs::rename(at("new"), at("replaced.log")).unwrap();
        // A host name with `/` (from a hosts file), and one with `_` not moved.
        std::fs::rename(at("a_b.log"), at("a_b.log.1")).unwrap();
        // Files of other names, and names not of this extension, change nothing.
        std::fs::write(at("busy.jsonl"), "").unwrap();
        std::fs::rename(at("busy.jsonl"), at("other")).unwrap();
        write(&mut files, "two\n");
        let read = |name: &str| std::fs::read_to_string(at(name)).unwrap();
        assert_eq!(read("gone.log"), "two\n");
        assert_eq!(read("moved.log"), "two\n");
        assert_eq!(read("moved.log.1"), "one\n");
        assert_eq!(read("replaced.log"), "new\ntwo\n");
        assert_eq!(read("a_b.log"), "two\n");
        assert_eq!(read("a_b.log.1"), "one\n");
        assert_eq!(read("a_c.log"), "one\ntwo\n");
        assert_eq!(read("busy.log"), "one\ntwo\n");
        assert_eq!(errors.lines_lost, 0);
        assert_eq!(files.open.len(), hosts.len());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// When more happened in the directory than the kernel queues for the watch, every file
    /// is closed: one moved among those events is not missed.
    #[test]
    fn a_full_queue_of_directory_events_closes_every_file() {
        let dir = empty_dir("overflow");
        let mut files = Files::new(&dir, "log", 8, open_append);
        let mut errors = WriteErrors::default();
        let (quiet, busy): (Arc<str>, Arc<str>) = (Arc::from("quiet"), Arc::from("busy"));
        let mut batch = FileBatch::default();
        batch.push(&quiet, b"one\n");
        batch.push(&busy, b"one\n");
        files.write_batch(&mut batch, std::time::Instant::now(), &mut errors);
        Batch::clear(&mut batch);
        let queued: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Two events a rename.
        std::fs::write(dir.join("x0"), "").unwrap();
        for n in 0..=queued / 2 {
            std::fs::rename(dir.join(format!("x{n}")), dir.join(format!("x{}", n + 1))).unwrap();
        }
        batch.push(&busy, b"two\n");
        files.write_batch(&mut batch, std::time::Instant::now(), &mut errors);
        assert_eq!(files.open.keys().collect::<Vec<_>>(), [&busy]);
        assert_eq!(
            std::fs::read_to_string(dir.join("busy.log")).unwrap(),
            "one\ntwo\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    proptest::proptest! {
        /// Whatever the senders, the order of their lines and how they fall into batches,
        /// each file holds exactly its senders' lines in the order they came. Senders 0
        /// and 1 share a file (two names with one text, as one address with two ports).
        #[test]
        fn every_file_holds_its_lines_in_order(
            lines in proptest::collection::vec((0usize..5, 0u16..1000, proptest::bool::ANY), 0..200),
        ) {
            DISK.with_borrow_mut(|(files, room)| {
                files.clear();
                *room = usize::MAX;
            });
            let names: Vec<Arc<str>> = ["h", "h", "a", "b", "c"].map(Arc::from).to_vec();
            let mut files = Files::new(Path::new("/p"), "log", 2, open_shared_disk);
            let mut errors = WriteErrors::default();
            let mut batch = FileBatch::default();
            let mut expected: HashMap<PathBuf, Vec<u8>> = HashMap::new();
            for (n, (sender, number, end_batch)) in lines.iter().enumerate() {
                let line = format!("{sender} {number} {n}\n");
                batch.push(&names[*sender], line.as_bytes());
                expected
                    .entry(PathBuf::from(format!("/p/{}.log", names[*sender])))
                    .or_default()
                    .extend_from_slice(line.as_bytes());
                if *end_batch {
                    files.write_batch(&mut batch, std::time::Instant::now(), &mut errors);
                    Batch::clear(&mut batch);
                }
            }
            files.write_batch(&mut batch, std::time::Instant::now(), &mut errors);
            let written = DISK.with_borrow(|(files, _)| files.clone());
            proptest::prop_assert_eq!(written, expected);
            proptest::prop_assert_eq!(errors.lines_lost, 0);
        }
    }

    /// Opens as `open_append` does, but fails with `EMFILE` every second call: as if the
    /// process were out of file descriptors until a file is closed.
    fn open_every_second(path: &Path) -> io::Result<File> {
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        if CALLS.fetch_add(1, Ordering::Relaxed) % 2 == 0 {
            return Err(io::Error::from_raw_os_error(nix::libc::EMFILE));
        }
        open_append(path)
    }

    /// Out of file descriptors, a sink closes its least recently written file and opens the
    /// one it needs; only with no file of its own to close are the lines lost (and counted).
    #[test]
    fn out_of_file_descriptors_closes_a_file_instead_of_losing_lines() {
        let dir = empty_dir("emfile");
        let mut files = Files::new(&dir, "log", 8, open_every_second);
        let mut errors = WriteErrors::default();
        // The first open fails with nothing to close: that one line is lost.
        let hosts: Vec<Arc<str>> = (0..6).map(|n| Arc::from(format!("h{n}"))).collect();
        files.write(&hosts[0], b"lost\n", &mut errors);
        assert_eq!((errors.lines_lost, errors.errors), (1, 1));
        assert!(errors.last().unwrap().contains("h0.log"));
        assert!(files.open.is_empty());
        // Then every failed open closes the oldest file and the next open succeeds.
        for (n, host) in hosts.iter().enumerate() {
            files.now += Duration::from_millis(1);
            files.write(host, format!("line {n}\n").as_bytes(), &mut errors);
        }
        assert_eq!((errors.lines_lost, errors.errors), (1, 1));
        for (n, host) in hosts.iter().enumerate() {
            let written = std::fs::read_to_string(dir.join(format!("{host}.log"))).unwrap();
            assert_eq!(written, format!("line {n}\n"));
        }
        // h0 opened at the second call; each later host's first open failed and closed the
        // one before it, so only the last host's file is still open.
        assert_eq!(files.open.len(), 1);
        assert!(files.open.contains_key(&hosts[5]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Datagrams that reach every shape of line: dictionaries, escapes (decodable or not),
    /// invalid UTF-8, quotes and control bytes that JSON must escape, a caller, a release, a
    /// cut record, fragments (one of them never completed), plain text, a hole, a restart.
    fn datagrams() -> Vec<Vec<u8>> {
        let mut all: Vec<Vec<u8>> = vec![
            b"6,1,1000,-;plain \"quoted\" text\n SUBSYSTEM=net\n DEVICE=n2\n".to_vec(),
            b"3,2,2000,c,caller=T123;tab\\x09 backslash\\x5c e\\xc3\\xa9\n".to_vec(),
            b"4,3,3000,+;bad utf8 \\xff\\xfe\n key=\\x01\n".to_vec(),
            b"6.1.0-rc1,6,4,4000,-;with release\n".to_vec(),
            b"6,5,5000,-,caller=C7;not the kernel's escaping a\\x41\n".to_vec(),
            b"6,6,6000,-;dangling \\".to_vec(),
            b"6,7,7000,-;raw control \x01\x1f\x7f and \xe2\x82\xac\n".to_vec(),
            b"6,8,8000,-,ncfrag=0/20;first half".to_vec(),
            b"6,8,8000,-,ncfrag=10/20;second hal".to_vec(),
            b"6,9,9000,-,ncfrag=5/30;middle only".to_vec(),
            b"6,11,11000,-;after a hole\n".to_vec(),
            b"link up \"eth0\" \x02\n".to_vec(),
            b"bad \xff plain\n".to_vec(),
            b"6,3,1,-;restarted\n".to_vec(),
        ];
        let long = format!("6,12,12000,-;{}\n", "y\\x0a".repeat(600));
        all.push(long.into_bytes());
        all
    }

    /// Every line is the exact bytes serde_json writes for the same values: each JSON line
    /// is parsed into the schema's types and written again by serde_json.
    #[test]
    fn json_lines_are_what_serde_json_writes() {
        json_lines_as_serde_json(false);
        json_lines_as_serde_json(true);
    }

    fn json_lines_as_serde_json(stamp: bool) {
        let mut rx: Receiver<SocketAddr> = Receiver::new(ReceiverConfig::libncrx());
        let mut sink = Sink::new(&SinkOptions {
            stamp,
            ..options(Format::Json)
        })
        .unwrap();
        let kernel: SocketAddr = "192.0.2.1:6665".parse().unwrap();
        let console: SocketAddr = "[2001:db8::1]:6665".parse().unwrap();
        let mut lines = Vec::new();
        for (n, datagram) in datagrams().iter().enumerate() {
            let source = if datagram[0].is_ascii_digit() {
                kernel
            } else {
                console
            };
            let now = Instant::from_millis(n as u64);
            rx.handle_datagram(now, &source, datagram);
            while let Some((source, event)) = rx.poll_event() {
                sink.line.clear();
                sink.event(source, &event);
                if !sink.line.is_empty() {
                    lines.push(String::from_utf8(sink.line.clone()).unwrap());
                }
            }
        }
        rx.handle_timeout(Instant::MAX);
        while let Some((source, event)) = rx.poll_event() {
            sink.line.clear();
            sink.event(source, &event);
            if !sink.line.is_empty() {
                lines.push(String::from_utf8(sink.line.clone()).unwrap());
            }
        }
        let mut kinds = std::collections::BTreeSet::new();
        for line in &lines {
            let line = line.strip_suffix('\n').expect("a whole line");
            let parsed: JsonLine = serde_json::from_str(line).expect(line);
            assert_eq!(serde_json::to_string(&parsed).unwrap(), line);
            kinds.insert(line.split('"').nth(3).unwrap().to_owned());
        }
        assert_eq!(
            kinds.into_iter().collect::<Vec<_>>(),
            ["incomplete", "lost", "plain", "record", "restart"],
            "{lines:#?}"
        );
        let values: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let record = |seq: u64| {
            values
                .iter()
                .find(|v| v["type"] == "record" && v["seq"] == seq)
                .unwrap_or_else(|| panic!("record {seq} in {lines:#?}"))
        };
        assert_eq!(record(1)["text"], "plain \"quoted\" text");
        assert_eq!(
            record(1)["dict"],
            serde_json::json!([["SUBSYSTEM", "net"], ["DEVICE", "n2"]])
        );
        assert_eq!(record(2)["text"], "tab\t backslash\\ e\u{e9}");
        assert_eq!(record(2)["caller"], "T123");
        assert_eq!(record(2)["flag"], "c");
        // Not UTF-8 once decoded: every string in wire form.
        assert_eq!(record(3)["text"], "bad utf8 \\xff\\xfe");
        assert_eq!(record(3)["dict"], serde_json::json!([["key", "\\x01"]]));
        assert_eq!(record(3)["escaped"], true);
        assert_eq!(record(4)["release"], "6.1.0-rc1");
        assert_eq!(record(5)["text"], "not the kernel's escaping a\\x41");
        assert_eq!(record(5)["escaped"], true);
        assert_eq!(record(6)["truncated"], true);
        assert_eq!(
            record(7)["text"],
            "raw control \u{1}\u{1f}\u{7f} and \u{20ac}"
        );
        assert_eq!(record(7)["escaped"], true);
        assert_eq!(record(8)["text"], "first halfsecond hal");
        assert_eq!(record(12)["text"], "y\n".repeat(600));
        for value in &values {
            if stamp {
                let host = if value["source"] == "192.0.2.1:6665" {
                    "192.0.2.1"
                } else {
                    "2001:db8::1"
                };
                assert_eq!(value["host"], host, "{value}");
                let received = value["received"].as_str().unwrap();
                assert_eq!(received.len(), 27, "{received}");
                assert!(received.parse::<jiff::Timestamp>().is_ok(), "{received}");
            } else {
                assert!(value.get("host").is_none() && value.get("received").is_none());
            }
        }
    }

    /// Wire strings of printk's escaping: escapes (of ASCII, of UTF-8 sequences, malformed,
    /// cut), raw bytes printk would have escaped, and plain text.
    fn wire_heavy() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        proptest::collection::vec(
            prop_oneof![
                Just(b"a".to_vec()),
                Just(b"\\x5c".to_vec()),
                Just(b"\\x0a".to_vec()),
                Just(b"\\xc3\\xa9".to_vec()),
                Just(b"\\xe2\\x82\\xac".to_vec()),
                Just(b"\\xff".to_vec()),
                Just(b"\\x41".to_vec()),
                Just(b"\\x0A".to_vec()),
                Just(b"\\x0".to_vec()),
                Just(b"\\".to_vec()),
                (0x80..=0xffu8).prop_map(|b| vec![b]),
                (0..0x20u8).prop_map(|b| vec![b]),
                (0x20..0x7fu8).prop_map(|b| vec![b]),
            ],
            0..30,
        )
        .prop_map(|pieces| pieces.concat())
    }

    proptest::proptest! {
        /// [`decode_utf8`] (no UTF-8 check when nothing was unescaped) answers as decoding
        /// then checking the whole result does, and decodes the same bytes.
        #[test]
        fn decode_utf8_is_decode_then_check(wire in wire_heavy()) {
            let mut slow = Vec::new();
            let expected = received::decode_exact_into(&wire, &mut slow)
                && std::str::from_utf8(&slow).is_ok();
            let mut fast = b"left over".to_vec();
            proptest::prop_assert_eq!(decode_utf8(&wire, &mut fast), expected);
            if expected {
                proptest::prop_assert_eq!(fast, slow);
            }
        }
    }

    /// The short cut of [`Sink::body`] (no second parse of the header for a body that fits
    /// the limit after the received header) splits every record as the header parse does:
    /// bodies around every limit, with a release, `caller=`, `ncemg=`, fragments, userdata
    /// after a cut, and no `\n` at all.
    #[test]
    fn body_short_cut_agrees_with_header_parse() {
        let heads: [&[u8]; 5] = [
            b"6,1,1,-;",
            b"6.1.0-rc1,6,1,1,-;",
            b"6,1,1,c,caller=T123,ncemg=1;",
            b"6.1.0,14,1,1,-,caller=C1,ncemg=1,foo=bar;",
            b"6,1,1,-,ncfrag=0/",
        ];
        let mut checked = 0;
        for limit in [None, Some(100), Some(2048), Some(8192)] {
            let sink = Sink::new(&SinkOptions::capture(Format::Json, limit, None)).unwrap();
            for head in heads {
                for len in (0..120).chain(1960..2100).chain(8100..8200) {
                    for tail in [&b""[..], b"\n", b" cpu=1\n", b"\n SUBSYSTEM=x\n a=b\n"] {
                        let mut text = vec![b'x'; len];
                        if len > 10 {
                            text[len / 2] = b'\\';
                        }
                        text.extend_from_slice(tail);
                        let mut datagram = head.to_vec();
                        if head.ends_with(b"/") {
                            datagram.extend_from_slice(format!("{};", text.len()).as_bytes());
                        }
                        datagram.extend_from_slice(&text);
                        let mut rx: Receiver<SocketAddr> = Receiver::new(ReceiverConfig::libncrx());
                        let source: SocketAddr = "192.0.2.1:6665".parse().unwrap();
                        rx.handle_datagram(Instant::from_millis(1), &source, &datagram);
                        rx.handle_timeout(Instant::MAX);
                        while let Some((_, event)) = rx.poll_event() {
                            if let Event::Record(record) = event {
                                assert_eq!(
                                    sink.body(&record, record.body),
                                    sink.body_parsed(&record, record.body),
                                    "{limit:?} {}",
                                    datagram.escape_ascii()
                                );
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 20_000, "{checked}");
    }

    #[test]
    fn text_lines_and_timestamps() {
        let mut sink = Sink::new(&options(Format::Text)).unwrap();
        let mut rx: Receiver<SocketAddr> = Receiver::new(ReceiverConfig::libncrx());
        let source: SocketAddr = "192.0.2.1:6665".parse().unwrap();
        rx.handle_datagram(
            Instant::from_millis(1),
            &source,
            b"3,7,12345678,-;disk \\x5c error\n",
        );
        let (source, event) = rx.poll_event().unwrap();
        sink.event(source, &event);
        assert_eq!(
            String::from_utf8_lossy(&sink.line),
            "192.0.2.1:6665 #7 [   12.345678] <3> disk \\x5c error\n"
        );
        // Bytes a kernel never sends raw (from another sender: a terminal escape, a carriage
        // return, a byte that is not ASCII) are escaped as printk would have, not written.
        rx.handle_datagram(
            Instant::from_millis(2),
            &source,
            b"6,8,12345679,-;esc \x1b[2J\x1b[31m cr\rX caf\xc3\xa9 \\x5c\n",
        );
        let (source, event) = rx.poll_event().unwrap();
        sink.line.clear();
        sink.event(source, &event);
        assert_eq!(
            String::from_utf8_lossy(&sink.line),
            "192.0.2.1:6665 #8 [   12.345679] <6> esc \\x1b[2J\\x1b[31m cr\\x0dX caf\\xc3\\xa9 \\x5c\n"
        );
        assert_eq!(Timestamp(5_123_456).to_string(), "    5.123456");
        assert_eq!(
            Timestamp(123_456_789_000_000).to_string(),
            "123456789.000000"
        );
    }

    /// Every byte at every position of strings up to 24 bytes long (across the eight-byte
    /// words and the re-read last word), written by [`json_string`] as the byte-by-byte
    /// reference writes it, and as serde_json writes it when the string is UTF-8.
    #[test]
    fn json_string_fast_path_agrees_with_reference() {
        for len in 0..=24 {
            for at in 0..len {
                for byte in 0..=255u8 {
                    for fill in [b'a', b'"', 0x1f, 0x80] {
                        let mut s = vec![fill; len];
                        s[at] = byte;
                        let (mut fast, mut slow) = (Vec::new(), Vec::new());
                        json_string(&mut fast, &s);
                        json_string_reference(&mut slow, &s);
                        assert_eq!(fast, slow, "{s:?}");
                        if let Ok(text) = std::str::from_utf8(&s) {
                            assert_eq!(fast, serde_json::to_vec(text).unwrap(), "{s:?}");
                        }
                    }
                }
            }
        }
    }

    /// Bytes that JSON escapes, bytes next to them in value, and any byte.
    fn json_heavy() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        proptest::collection::vec(
            prop_oneof![
                Just(b'"'),
                Just(b'\\'),
                Just(b'a'),
                Just(0x1f),
                Just(0x20),
                Just(0x21),
                Just(0x5b),
                Just(0x5d),
                0x00..0x20u8,
                any::<u8>(),
            ],
            0..80,
        )
    }

    proptest::proptest! {
        /// Random bytes: the fast path writes what the byte-by-byte reference writes.
        #[test]
        fn json_string_is_reference_on_random_bytes(s in json_heavy()) {
            let (mut fast, mut slow) = (b"prefix".to_vec(), b"prefix".to_vec());
            json_string(&mut fast, &s);
            json_string_reference(&mut slow, &s);
            proptest::prop_assert_eq!(fast, slow);
        }

        /// Random UTF-8 text (control characters, quotes, backslashes, non-ASCII): the exact
        /// bytes serde_json writes.
        #[test]
        fn json_string_is_serde_json_on_random_text(
            s in "[\\x00-\\x1f\"\\\\a-z\u{7f}-\u{a0}\u{20ac}\u{1f600}]{0,80}"
        ) {
            let mut out = Vec::new();
            json_string(&mut out, s.as_bytes());
            proptest::prop_assert_eq!(out, serde_json::to_vec(&s).unwrap());
        }
    }

    #[test]
    fn json_strings_escape_as_serde_json() {
        let all: Vec<u8> = (0u8..0x80).collect();
        let mut out = Vec::new();
        json_string(&mut out, &all);
        let expected = serde_json::to_string(std::str::from_utf8(&all).unwrap()).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        // Bytes that are not UTF-8 as printk escapes them, each keeping its value.
        let mut out = Vec::new();
        json_lossy(&mut out, b"a\xffb\xe2\x82 \xc3\xa9");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            serde_json::to_string("a\\xffb\\xe2\\x82 \u{e9}").unwrap()
        );
    }
}
