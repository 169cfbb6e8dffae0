//! What the operating system says about other processes, written once for every module that
//! asks (an export's leftover temporary files, a worker of a shared checkpoint).

/// Whether process `pid` is running: `Some(true)` also for one this user may not signal (it
/// exists), `None` where this system cannot tell.
pub(crate) fn process_alive(pid: u32) -> Option<bool> {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return None;
        };
        // SAFETY: signal 0 only checks that the process exists; nothing is sent.
        let r = unsafe { libc::kill(pid, 0) };
        Some(r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH))
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn this_process_runs_and_a_reaped_child_does_not() {
        assert_eq!(process_alive(std::process::id()), Some(true));
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("true runs");
        let pid = child.id();
        child.wait().expect("the child ends");
        assert_eq!(process_alive(pid), Some(false));
    }
}
