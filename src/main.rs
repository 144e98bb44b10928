fn main() {
    limit_allocator_retention();
    std::process::exit(ferry::cli::main());
}

/// glibc raises its mmap threshold after large buffers are freed, after which our 8 MiB
/// chunk buffers come from per-thread heap arenas and fragment them: peak RSS then grows with
/// the amount of data pushed. Pinning the threshold keeps chunk buffers in their own
/// mappings, returned to the system when freed, so memory stays flat (docs/benchmarks.md).
fn limit_allocator_retention() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}
