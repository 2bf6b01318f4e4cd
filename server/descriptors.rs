//! The process's limit of open files, which bounds connections in and out.
//! Many systems start a process with a soft limit of 1,024 (or 4,096) and a
//! much higher hard limit; Herald raises the soft one to the hard one at
//! start, so that its budgets are set from what it may really use.

/// Raises the soft limit of open files to the hard limit where it can, and
/// returns the soft limit in force (unlimited counts as a large number).
pub fn raise_open_files_limit() -> u64 {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        const UNLIMITED: u64 = 1 << 20;
        let limit = getrlimit(Resource::Nofile);
        let hard = limit.maximum.unwrap_or(UNLIMITED);
        let soft = limit.current.unwrap_or(UNLIMITED);
        if soft < hard {
            let raised = rustix::process::Rlimit {
                current: Some(hard),
                maximum: limit.maximum,
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => return hard,
                Err(err) => {
                    tracing::warn!(soft, hard, error = %err, "cannot raise the open-files limit");
                }
            }
        }
        soft
    }
    #[cfg(not(target_os = "linux"))]
    {
        // Elsewhere, assume the common default.
        1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_in_force_is_at_least_the_usual_default() {
        let raised = raise_open_files_limit();
        assert!(raised >= 256, "{raised}");
        // Raising again changes nothing.
        assert_eq!(raise_open_files_limit(), raised);
    }
}
