//! SIGTERM and SIGINT as a request to stop: the daemons (`veil node`, `veil coordinator`, `veil devnet`)
//! install [`install`] at start-up and poll [`requested`], then stop in order (stop serving, flush state,
//! stop children) and exit. Service managers stop daemons with SIGTERM; a terminal sends SIGINT.
//!
//! Invariant: the handler only stores to an atomic (async-signal-safe); everything else runs on ordinary
//! threads that poll it.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// Set by the handler.
static STOP: AtomicBool = AtomicBool::new(false);
/// The signal that set it (for the log).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    SIGNAL.store(signal, Ordering::SeqCst);
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the handler for SIGTERM and SIGINT (a second signal is handled the same way: the stop already
/// under way has its own deadline).
pub fn install() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: `sigaction` with a zeroed action, an empty mask and a handler that only stores to atomics
        // (async-signal-safe); SA_RESTART so interrupted system calls of other threads resume.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// Whether a stop was requested.
pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// The signal's name, once one arrived.
pub fn name() -> &'static str {
    match SIGNAL.load(Ordering::SeqCst) {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        _ => "none",
    }
}

/// Blocks until a stop is requested (polling every 50 ms).
pub fn wait() {
    while !requested() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Resolves once a stop is requested (for a tokio `select!`).
pub async fn stopped() {
    while !requested() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asks `pid` to stop (SIGTERM).
pub fn terminate(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) with a child's pid that this process has not reaped yet (so not reused).
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

/// Stops children: SIGTERM to each, then waits for all of them until `grace` has passed, then SIGKILL to
/// those still running; every child is reaped before this returns.
pub fn stop_children(children: &mut [&mut std::process::Child], grace: Duration) {
    for child in children.iter() {
        terminate(child.id());
    }
    let deadline = Instant::now() + grace;
    loop {
        let running = children
            .iter_mut()
            .map(|c| matches!(c.try_wait(), Ok(None)))
            .filter(|&running| running)
            .count();
        if running == 0 || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    for child in children.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Makes the child about to be spawned receive SIGTERM when this process dies (Linux), so that even a
/// SIGKILL of a parent does not leave its children running.
#[cfg(target_os = "linux")]
pub fn die_with_parent(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and calls only prctl(2), which is
    // async-signal-safe, with constant arguments.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
}

/// Elsewhere: nothing (the children are stopped when the parent stops normally).
#[cfg(not(target_os = "linux"))]
pub fn die_with_parent(_command: &mut std::process::Command) {}
