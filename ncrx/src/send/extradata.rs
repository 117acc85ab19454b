//! What `ncrx send` appends to every message of its extended targets, as Linux 6.9+ does:
//! userdata (`--userdata`) and sysdata (`--sysdata`: this machine's CPU, task name and
//! release, a message id per target).

use std::fs;
use std::path::Path;

use netconsole_proto::{Sysdata, format_userdata, userdata_len};

use crate::cli::{SendArgs, SysdataField};
use crate::error::Failure;

/// What extended targets append to every message: userdata lines (formatted once), sysdata
/// (formatted per message: the msgid counts per target).
#[derive(Default)]
pub(super) struct Extradata {
    /// The userdata lines, formatted once.
    pub(super) userdata: Vec<u8>,
    cpu: bool,
    /// `--sysdata-cpu`, else the CPU ncrx runs on at each message.
    fixed_cpu: Option<u32>,
    taskname: Option<Vec<u8>>,
    release: Option<Vec<u8>>,
    /// The next msgid per target, when enabled.
    msgid: Option<Vec<u32>>,
    /// The sysdata lines of the last message ([`Extradata::next_sysdata`]).
    pub(super) sysdata: Vec<u8>,
}

impl Extradata {
    pub(super) fn new(args: &SendArgs, release: Option<&str>) -> Result<Self, Failure> {
        let extra = &args.extradata;
        let entries: Vec<(&[u8], &[u8])> = extra
            .userdata
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect();
        let mut userdata = vec![0; userdata_len(&entries)];
        let len = format_userdata(&entries, &mut userdata)
            .map_err(|e| Failure::Usage(format!("--userdata: {e}")))?;
        userdata.truncate(len);
        let has = |field| extra.sysdata.contains(&field);
        let taskname = if has(SysdataField::Taskname) {
            Some(match &extra.sysdata_taskname {
                Some(name) => name.clone().into_bytes(),
                None => own_task_name(),
            })
        } else {
            None
        };
        let release = if has(SysdataField::Release) {
            Some(
                release
                    .map_or_else(local_release, |r| Ok(r.to_owned()))?
                    .into_bytes(),
            )
        } else {
            None
        };
        Ok(Extradata {
            userdata,
            cpu: has(SysdataField::Cpu),
            fixed_cpu: extra.sysdata_cpu,
            taskname,
            release,
            msgid: has(SysdataField::Msgid).then(|| vec![extra.msgid; args.target.targets.len()]),
            sysdata: Vec::new(),
        })
    }

    /// Formats the sysdata lines of the next message to `target` into `self.sysdata`;
    /// returns their length.
    pub(super) fn next_sysdata(&mut self, target: usize) -> usize {
        let mut sysdata = Sysdata::default();
        if self.cpu {
            sysdata.cpu = Some(self.fixed_cpu.unwrap_or_else(current_cpu));
        }
        sysdata.taskname = self.taskname.as_deref();
        sysdata.release = self.release.as_deref();
        if let Some(ids) = &mut self.msgid {
            sysdata.msgid = Some(ids[target]);
            ids[target] = ids[target].wrapping_add(1);
        }
        self.sysdata.resize(sysdata.formatted_len(), 0);
        // Sized for these lines: formatting cannot fail.
        sysdata.format_into(&mut self.sysdata).unwrap_or(0)
    }
}

/// This process's task name (`/proc/self/comm`, as the kernel's `current->comm`).
fn own_task_name() -> Vec<u8> {
    fs::read("/proc/self/comm").map_or_else(
        |_| b"ncrx".to_vec(),
        |mut name| {
            if name.last() == Some(&b'\n') {
                name.pop();
            }
            name
        },
    )
}

/// The CPU this process last ran on (`/proc/self/stat`, field 39), 0 when unknown.
fn current_cpu() -> u32 {
    fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the command name in parentheses start at field 3.
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.split_ascii_whitespace().nth(39 - 3)?.parse().ok()
        })
        .unwrap_or(0)
}

/// This machine's kernel release, for `r` targets when `--release` is not given.
pub(super) fn local_release() -> Result<String, Failure> {
    let path = Path::new("/proc/sys/kernel/osrelease");
    fs::read_to_string(path)
        .map(|s| s.trim_end().to_owned())
        .map_err(|source| Failure::File {
            what: "cannot read the kernel release (give --release) from",
            path: path.to_owned(),
            source,
        })
}
