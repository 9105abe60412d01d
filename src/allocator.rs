//! Tunes the C allocator for the MPC workloads: a private inference allocates and frees share and MAC vectors
//! of megabytes many times per second. glibc serves those with `mmap` and hands freed memory straight back
//! to the kernel, so every new vector faults its pages in again (about a fifth of a `spdz2k` LeNet run was
//! spent in page faults). Raising the mmap threshold to glibc's maximum and keeping freed memory in the
//! heap turns those into reuses. The process's peak memory is unchanged; memory freed at the peak is kept
//! for reuse (up to `TRIM_THRESHOLD`) rather than returned.

/// Allocations below this come from the heap (glibc's ceiling for the threshold on 64-bit targets).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 32 << 20;
/// Free memory at the top of the heap kept for reuse before it is returned to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: i32 = 512 << 20;
/// Extra memory requested each time the heap grows.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TOP_PAD: i32 = 64 << 20;

/// Applies the settings above; call once at start-up, before any thread is spawned. A no-op where the C
/// library is not glibc.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is called before any other thread exists,
        // and with parameter values glibc documents as valid. A refused setting leaves the default in place.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
            libc::mallopt(libc::M_TOP_PAD, TOP_PAD);
        }
    }
}
