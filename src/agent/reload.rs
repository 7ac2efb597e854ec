//! The reload hook: after the renewer has replaced the files, it signals the app.
//!
//! Mechanism (`autocert.step.sm/reload-signal` and `autocert.step.sm/reload-process`, injected as
//! `AUTOCERT_RELOAD_SIGNAL` and `AUTOCERT_RELOAD_PROCESS`): the files are replaced atomically
//! (`rename(2)`, see [`super::files`]), then every process of the pod whose name is the given
//! one gets the signal (e.g. `SIGHUP`, nginx's "reload your configuration"). The renewer sees
//! the app's processes only when the pod shares one PID namespace (`shareProcessNamespace:
//! true`, which the webhook requires), and the kernel lets it signal only processes of its own
//! uid (the webhook runs it as `autocert.step.sm/owner`, which should be the app's user).
//!
//! A process matches when its `comm` (`/proc/<pid>/comm`, cut to 15 bytes by the kernel) or the
//! file name of its `argv[0]` is the given name. A failed signal is logged, never fatal: the
//! files are already in place and the app may still read them on its own.

use std::path::Path;

use rustix::process::{Pid, Signal, kill_process};

/// The kernel keeps this many bytes of a process name in `comm`.
const COMM_LEN: usize = 15;

/// The signal for one of [`crate::pod_protocol::RELOAD_SIGNALS`].
pub fn signal_of(name: &str) -> Option<Signal> {
    Some(match crate::pod_protocol::parse_reload_signal(name)? {
        "SIGHUP" => Signal::HUP,
        "SIGUSR1" => Signal::USR1,
        "SIGUSR2" => Signal::USR2,
        "SIGTERM" => Signal::TERM,
        "SIGINT" => Signal::INT,
        "SIGQUIT" => Signal::QUIT,
        _ => return None,
    })
}

/// Whether a process with this `comm` and `cmdline` is named `process`.
pub fn matches(process: &str, comm: &str, cmdline: &[u8]) -> bool {
    let short: String = process.chars().take(COMM_LEN).collect();
    if !process.is_empty() && comm.trim_end_matches('\n') == short {
        return true;
    }
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let base = argv0.rsplit(|b| *b == b'/').next().unwrap_or_default();
    !base.is_empty() && base == process.as_bytes()
}

/// The pids under `proc_root` (normally `/proc`) named `process`, except `own`.
pub fn find_pids(proc_root: &Path, process: &str, own: u32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| u32::try_from(*pid).is_ok_and(|p| p != own))
        .filter(|pid| {
            let dir = proc_root.join(pid.to_string());
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
            matches(process, &comm, &cmdline)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// Sends `signal` to each of `pids`; returns how many got it. Failures are logged.
pub fn signal_pids(pids: &[i32], signal: Signal, signal_name: &str) -> usize {
    let mut sent = 0;
    for &raw in pids {
        let Some(pid) = Pid::from_raw(raw) else {
            continue;
        };
        match kill_process(pid, signal) {
            Ok(()) => sent += 1,
            Err(e) => tracing::warn!(
                pid = raw,
                signal = signal_name,
                error = %e,
                "Cannot signal the app; run the renewer as the app's user (autocert.step.sm/owner)"
            ),
        }
    }
    sent
}

/// Signals the app after new files were written, when a reload hook is configured.
pub fn after_new_files(reload: Option<&(String, String)>) {
    let Some((signal_name, process)) = reload else {
        return;
    };
    let Some(signal) = signal_of(signal_name) else {
        tracing::warn!(signal = %signal_name, "Unknown reload signal; not signalling");
        return;
    };
    let pids = find_pids(Path::new("/proc"), process, std::process::id());
    if pids.is_empty() {
        tracing::warn!(
            process = %process,
            "No process of that name to reload; is shareProcessNamespace: true set on the pod?"
        );
        return;
    }
    let sent = signal_pids(&pids, signal, signal_name);
    tracing::info!(process = %process, signal = %signal_name, sent, "Signalled the app to reload");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn names_match_comm_or_argv0() {
        let cases: &[(&str, &str, &[u8], bool)] = &[
            ("nginx", "nginx\n", b"nginx: master process\0", true),
            ("nginx", "other\n", b"/usr/sbin/nginx\0-g\0", true),
            ("nginx", "nginx-helper\n", b"/bin/nginx-helper\0", false),
            // comm is cut to 15 bytes; argv0 is not.
            ("a-very-long-server-name", "a-very-long-ser\n", b"x\0", true),
            ("", "\n", b"", false),
            ("app", "sh\n", b"sh\0-c\0app", false),
        ];
        for (process, comm, cmdline, want) in cases {
            assert_eq!(matches(process, comm, cmdline), *want, "{process} {comm:?}");
        }
    }

    #[test]
    fn finds_pids_in_a_proc_tree() {
        let root = tempfile::tempdir().unwrap();
        for (pid, comm, cmdline) in [
            ("1", "pause", "/pause"),
            ("7", "nginx", "nginx: master"),
            ("9", "nginx", "nginx: worker"),
            ("12", "step-operator", "/step-operator\0renew"),
            ("self", "nginx", "nginx"),
        ] {
            let dir = root.path().join(pid);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
            std::fs::write(dir.join("cmdline"), cmdline).unwrap();
        }
        assert_eq!(find_pids(root.path(), "nginx", 12), [7, 9]);
        assert_eq!(find_pids(root.path(), "nginx", 9), [7]);
        assert!(find_pids(root.path(), "step-operator", 12).is_empty());
        assert!(find_pids(&root.path().join("missing"), "nginx", 1).is_empty());
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_of("SIGHUP"), Some(Signal::HUP));
        assert_eq!(signal_of("usr1"), Some(Signal::USR1));
        assert_eq!(signal_of("SIGKILL"), None);
    }

    /// A real process gets the signal: a child of this test, signalled by pid.
    #[test]
    fn signals_a_process() {
        use std::os::unix::process::ExitStatusExt as _;
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        assert_eq!(signal_pids(&[pid], Signal::TERM, "SIGTERM"), 1);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the child ignored SIGTERM"
            );
            std::thread::yield_now();
        };
        assert_eq!(status.signal(), Some(15));
    }
}
