//! How many CPUs this process may really use: the affinity mask, capped by a cgroup CPU quota
//! (v2 `cpu.max`, v1 `cpu.cfs_quota_us`). PM2 counts all host CPUs, which overcommits containers.

/// The number of CPUs `instances: max` means here (at least 1).
pub fn usable() -> u32 {
    let affinity = affinity_count().unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1)
    });
    let quota = cgroup_quota().map(|q| q.ceil() as u32).filter(|q| *q > 0);
    quota.map_or(affinity, |q| q.min(affinity)).max(1)
}

fn affinity_count() -> Option<u32> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok()?;
    let n = (0..nix::sched::CpuSet::count())
        .filter(|i| set.is_set(*i).unwrap_or(false))
        .count() as u32;
    (n > 0).then_some(n)
}

/// CPUs' worth of quota from the tightest cgroup limit on the way up to the root, if any.
fn cgroup_quota() -> Option<f64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut best: Option<f64> = None;
    let mut take = |q: f64| best = Some(best.map_or(q, |b: f64| b.min(q)));
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.is_empty() {
            // cgroup v2
            let mut dir =
                std::path::PathBuf::from("/sys/fs/cgroup").join(path.trim_start_matches('/'));
            loop {
                if let Ok(text) = std::fs::read_to_string(dir.join("cpu.max")) {
                    let mut it = text.split_whitespace();
                    if let (Some(q), Some(p)) = (it.next(), it.next()) {
                        if let (Ok(q), Ok(p)) = (q.parse::<f64>(), p.parse::<f64>()) {
                            if p > 0.0 {
                                take(q / p);
                            }
                        }
                    }
                }
                if !dir.pop()
                    || !dir.starts_with("/sys/fs/cgroup")
                    || dir.as_os_str() == "/sys/fs/cgroup"
                {
                    break;
                }
            }
        } else if controllers.split(',').any(|c| c == "cpu") {
            let base = std::path::Path::new("/sys/fs/cgroup/cpu");
            let read = |f: &str| -> Option<f64> {
                std::fs::read_to_string(base.join(path.trim_start_matches('/')).join(f))
                    .or_else(|_| std::fs::read_to_string(base.join(f)))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            };
            if let (Some(q), Some(p)) = (read("cpu.cfs_quota_us"), read("cpu.cfs_period_us")) {
                if q > 0.0 && p > 0.0 {
                    take(q / p);
                }
            }
        }
    }
    best
}
