//! Host names of senders: from a hosts file (`--hosts`, `/etc/hosts` syntax) and, with
//! `--resolve`, from reverse DNS looked up off the receive path.
//!
//! A listener thread asks [`Names::lookup`] once per new sender and again only when new
//! names arrived since ([`Names::generation`]). Reverse lookups run on their own threads from
//! a bounded queue; until one answers, the sender is shown by its address. Answers are
//! cached (at most [`CACHE_MAX`] addresses, each for [`NAME_TTL`]; a failed or slow lookup is
//! tried again after [`RETRY_AFTER`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver as Queue, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::Failure;

/// Addresses whose reverse name is cached at most.
pub(crate) const CACHE_MAX: usize = 65_536;
/// A name found is used this long, then looked up again.
pub(crate) const NAME_TTL: Duration = Duration::from_secs(3600);
/// A lookup that failed, or did not answer within [`LOOKUP_TIMEOUT`], is tried again after
/// this long; meanwhile the address is shown.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(600);
/// A lookup not answered within this is taken as failed (the resolver thread may still be
/// waiting on it: the C library cannot be interrupted).
pub(crate) const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Lookups waiting at most; past it new senders are shown by address until there is room.
const QUEUE_MAX: usize = 4096;
/// Threads doing reverse lookups.
const RESOLVERS: usize = 2;

#[derive(Debug, Clone)]
enum Entry {
    Asked(Instant),
    Named(Arc<str>, Instant),
    Failed(Instant),
}

struct Resolver {
    cache: Mutex<HashMap<IpAddr, Entry>>,
    queue: SyncSender<IpAddr>,
    generation: AtomicU64,
}

/// Where senders' names come from.
#[derive(Clone, Default)]
pub(crate) struct Names {
    hosts: Arc<HashMap<IpAddr, Arc<str>>>,
    resolver: Option<Arc<Resolver>>,
}

/// Reads a hosts file: `ADDRESS NAME [ALIAS...]` per line, `#` comments; the first name of
/// the first line of an address is its name. IPv4-mapped IPv6 addresses are taken as IPv4.
/// As glibc does, a line with an address and no name is skipped; a line that does not
/// start with an address, or is not UTF-8, is an error naming the line.
pub(crate) fn read_hosts(path: &Path) -> Result<HashMap<IpAddr, Arc<str>>, Failure> {
    let bytes = std::fs::read(path).map_err(|source| Failure::File {
        what: "cannot read the hosts file",
        path: path.to_path_buf(),
        source,
    })?;
    let mut hosts = HashMap::new();
    for (number, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let at = || format!("{}:{}", path.display(), number + 1);
        let Ok(line) = std::str::from_utf8(line) else {
            return Err(Failure::Usage(format!("{}: not UTF-8", at())));
        };
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        let Some(address) = fields.next() else {
            continue;
        };
        let Ok(ip) = address.parse::<IpAddr>() else {
            return Err(Failure::Usage(format!(
                "{}: expected 'ADDRESS NAME', found {line:?}",
                at()
            )));
        };
        let Some(name) = fields.next() else {
            continue;
        };
        hosts
            .entry(ip.to_canonical())
            .or_insert_with(|| Arc::from(name));
    }
    Ok(hosts)
}

impl Names {
    /// Names from `hosts`, and from reverse DNS when `resolve`.
    pub(crate) fn new(hosts: HashMap<IpAddr, Arc<str>>, resolve: bool) -> Self {
        let resolver = resolve.then(|| {
            let (queue, asked) = sync_channel(QUEUE_MAX);
            let resolver = Arc::new(Resolver {
                cache: Mutex::new(HashMap::new()),
                queue,
                generation: AtomicU64::new(0),
            });
            let asked = Arc::new(Mutex::new(asked));
            for _ in 0..RESOLVERS {
                let resolver = Arc::downgrade(&resolver);
                let asked = Arc::clone(&asked);
                thread::spawn(move || resolve_loop(&resolver, &asked));
            }
            resolver
        });
        Names {
            hosts: Arc::new(hosts),
            resolver,
        }
    }

    /// Changes each time a reverse lookup answered: a sender without a name may have one now.
    pub(crate) fn generation(&self) -> u64 {
        self.resolver
            .as_ref()
            .map_or(0, |r| r.generation.load(Ordering::Acquire))
    }

    /// `ip`'s name if known now; with `--resolve`, asks for it when it is not.
    pub(crate) fn lookup(&self, ip: IpAddr) -> Option<Arc<str>> {
        let ip = ip.to_canonical();
        if let Some(name) = self.hosts.get(&ip) {
            return Some(Arc::clone(name));
        }
        let resolver = self.resolver.as_ref()?;
        let now = Instant::now();
        let mut cache = resolver.cache.lock().ok()?;
        match cache.get(&ip) {
            Some(Entry::Named(name, at)) if now.duration_since(*at) < NAME_TTL => {
                return Some(Arc::clone(name));
            }
            Some(Entry::Asked(at)) if now.duration_since(*at) < LOOKUP_TIMEOUT => return None,
            Some(Entry::Failed(at) | Entry::Asked(at)) if now.duration_since(*at) < RETRY_AFTER => {
                return None;
            }
            _ => {}
        }
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, entry| match entry {
                Entry::Named(_, at) => now.duration_since(*at) < NAME_TTL,
                Entry::Asked(at) | Entry::Failed(at) => now.duration_since(*at) < RETRY_AFTER,
            });
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        match resolver.queue.try_send(ip) {
            Ok(()) => {
                cache.insert(ip, Entry::Asked(now));
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {}
        }
        None
    }
}

fn resolve_loop(resolver: &std::sync::Weak<Resolver>, asked: &Mutex<Queue<IpAddr>>) {
    loop {
        let ip = {
            let Ok(queue) = asked.lock() else { return };
            match queue.recv() {
                Ok(ip) => ip,
                Err(_) => return,
            }
        };
        let answer = dns_lookup::lookup_addr(&ip).ok().filter(|name| {
            // getnameinfo gives the address back as text when there is no name.
            name.parse::<IpAddr>().is_err() && !name.is_empty()
        });
        let Some(resolver) = resolver.upgrade() else {
            return;
        };
        let now = Instant::now();
        if let Ok(mut cache) = resolver.cache.lock() {
            let entry = match answer {
                Some(name) => Entry::Named(Arc::from(name.as_str()), now),
                None => Entry::Failed(now),
            };
            cache.insert(ip, entry);
        }
        resolver.generation.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_files_are_read_as_etc_hosts() {
        let dir = std::env::temp_dir().join(format!("ncrx-names-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hosts");
        std::fs::write(
            &path,
            "# fleet\n192.0.2.1 web1 web1.example\n\n2001:db8::2\tdb2 # primary\n192.0.2.1 other\n::ffff:192.0.2.3 mapped\n",
        )
        .unwrap();
        let hosts = read_hosts(&path).unwrap();
        let names = Names::new(hosts, false);
        let name = |ip: &str| names.lookup(ip.parse().unwrap()).map(|n| n.to_string());
        assert_eq!(name("192.0.2.1").as_deref(), Some("web1"));
        assert_eq!(name("::ffff:192.0.2.1").as_deref(), Some("web1"));
        assert_eq!(name("2001:db8::2").as_deref(), Some("db2"));
        assert_eq!(name("192.0.2.3").as_deref(), Some("mapped"));
        assert_eq!(name("192.0.2.9"), None);
        // An address without a name is skipped, as glibc skips it.
        std::fs::write(&path, "192.0.2.1\n192.0.2.2 two\n").unwrap();
        let hosts = read_hosts(&path).unwrap();
        assert_eq!(hosts.len(), 1);
        assert_eq!(
            hosts[&"192.0.2.2".parse::<IpAddr>().unwrap()].as_ref(),
            "two"
        );
        std::fs::write(&path, "192.0.2.1 one\nweb1 192.0.2.1\n").unwrap();
        let error = read_hosts(&path).err().unwrap().to_string();
        assert!(error.contains(":2: expected 'ADDRESS NAME'"), "{error}");
        std::fs::write(&path, b"192.0.2.1 one\n\n192.0.2.3 caf\xe9\n").unwrap();
        let error = read_hosts(&path).err().unwrap().to_string();
        assert!(error.ends_with(":3: not UTF-8"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reverse_lookups_answer_later_and_are_cached() {
        let names = Names::new(HashMap::new(), true);
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let before = names.generation();
        // The first lookup only asks.
        assert_eq!(names.lookup(loopback), None);
        let deadline = Instant::now() + Duration::from_secs(20);
        while names.generation() == before {
            assert!(Instant::now() < deadline, "no answer from the resolver");
            thread::sleep(Duration::from_millis(5));
        }
        // 127.0.0.1 has a name on every Linux machine (/etc/hosts: localhost).
        let name = names.lookup(loopback).expect("a name for 127.0.0.1");
        assert!(
            !name.is_empty() && name.parse::<IpAddr>().is_err(),
            "{name}"
        );
        assert_eq!(names.lookup(loopback), Some(name));
    }
}
