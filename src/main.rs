fn main() {
    limit_allocator_retention();
    raise_open_file_limit();
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

/// Every `.tgz` stays open from its first read (or its verification) to the end of the run,
/// so that what was verified is what is pushed: a directory of many packages needs more than
/// the usual soft limit of 1024 descriptors. The hard limit is the ceiling, as for any user.
fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            let want = lim.rlim_max.min(1 << 16);
            if lim.rlim_cur < want {
                lim.rlim_cur = want;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
        }
    }
}
